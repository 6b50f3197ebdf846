"""golf_jax against the PyTorch reference (PR #1318's train_gpt.py) on the CPU, fp32.

Same shape, same weights (the reference's state dict through
`golf_jax.model.reference.params_from_reference`), paired timings in one process: torch
eager, `torch.compile`, and golf_jax's jit, round-robin so that load from other jobs
hits all three alike. Two cases (docs/perf.md, "Attention, the torch side-by-side and the
loaders"):

* train: the record model at 6 layers x 256, B 4 x T 256, loss (with MTP) forward+backward;
* eval: the full record model, logits forward at B 1 x T 2048.

The reference is not part of the repository: copy it into build/ref/ (ignored) first,

    git --git-dir=PARAMETER_GOLF_MIRROR show refs/pull/1318/head:records/track_10min_16mb/\\
    2026-04-03_FA3_TTT_LBFGS25_LogitDelta_GPTQ_DAMP005_DeltaClip5_History20_WarmStart_Focal128_Freeze10/\\
    train_gpt.py > build/ref/train_gpt.py
    pip install torch==2.13.0   # CPU build; not a golf_jax dependency
    python tools/torch_side_by_side.py [--case=train|eval|all] [--impl=xla|chunked] [--torch_sdpa=math]
        [--rounds=10] [--ref=build/ref/train_gpt.py] [--debug]

On a loaded machine torch's spinning OpenMP threads lose far more than XLA's pool:
compare with OMP_WAIT_POLICY=PASSIVE, or pinned (`taskset -c 1`, one thread each).

Without the file (or torch) it prints why and exits 0. Its FlashAttention import is
replaced by torch's SDPA on [B, H, T, D] (what flash_attn_3_func(q, k, v, causal=True)
computes), as for tests/fixtures/record_parity_tiny.npz.
"""

from __future__ import annotations

import statistics
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import flags  # noqa: E402 (after the repository is on the path)

from golf_jax.core import cli  # noqa: E402
from golf_jax.core.errors import UserError  # noqa: E402

DEFAULT_REF = REPO / "build" / "ref" / "train_gpt.py"
FA_BLOCK = ('_force_fa2 = bool(int(os.environ.get("FORCE_FA2", "0")))', "    _FA3 = False\n")
SDPA_SHIM = '''
def flash_attn_3_func(q, k, v, causal=False, **kwargs):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=causal, enable_gqa=True)
    return out.transpose(1, 2)
_FA3 = False
'''
CASES = {  # name: (layers, dim, batch, seq_len, ve_layers, backward)
    "train": (6, 256, 4, 256, "4,5", True),
    "eval": (11, 512, 1, 2048, "9,10", False),
}

FLAGS = cli.flag_values()
_REF = flags.DEFINE_string("ref", None, "PR #1318's train_gpt.py (default: the repository's build/ref/train_gpt.py).",
                           flag_values=FLAGS)
_CASE = flags.DEFINE_enum("case", "all", [*CASES, "all"], "Which case to time.", flag_values=FLAGS)
_IMPL = flags.DEFINE_string("impl", "auto", "golf_jax's model.attention_impl.", flag_values=FLAGS)
_TORCH_SDPA = flags.DEFINE_enum("torch_sdpa", "default", ["default", "math"],
                                "torch's SDPA backend (default: its choice, a flash kernel on CPU).", flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Paired rounds (the median is shown).", lower_bound=1,
                               flag_values=FLAGS)


def load_reference(path: Path) -> types.ModuleType:
    """The reference module with its FlashAttention import swapped for torch SDPA."""
    src = path.read_text()
    a, b = src.find(FA_BLOCK[0]), src.find(FA_BLOCK[1])
    if a < 0 or b < 0:
        raise UserError(f"{path}: no FlashAttention import block found; pass PR #1318's train_gpt.py (--ref)")
    src = src[:a] + SDPA_SHIM + src[b + len(FA_BLOCK[1]) :]
    mod = types.ModuleType("ref_train_gpt")
    mod.__file__ = str(path)
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


def model_config(layers: int, dim: int, ve_layers: str, impl: str):
    """configs/record.py's model at this size, fp32."""
    from configs import record

    m = record.get_config().model
    m.num_layers, m.model_dim, m.xsa_last_n, m.ve_layers = layers, dim, layers, ve_layers
    m.compute_dtype, m.attention_impl = "float32", impl
    return m


def reference_model(ref, m):
    """The reference GPT of model config `m`, every parameter perturbed (σ as the parity
    fixture) so that the zero-initialised paths are live."""
    import torch

    torch.manual_seed(0)
    net = ref.GPT(vocab_size=m.vocab_size, num_layers=m.num_layers, model_dim=m.model_dim, num_heads=m.num_heads,
                  num_kv_heads=m.num_kv_heads, mlp_mult=m.mlp_mult, tie_embeddings=True,
                  tied_embed_init_std=m.tied_embed_init_std, logit_softcap=m.logit_softcap, rope_base=m.rope_base,
                  qk_gain_init=m.qk_gain_init, mtp_num_heads=m.mtp_num_heads, mtp_loss_weight=m.mtp_loss_weight,
                  bigram_vocab_size=m.bigram_vocab_size, bigram_dim=m.bigram_dim, xsa_last_n=m.xsa_last_n,
                  rope_dims=m.rope_dims, ln_scale=m.ln_scale, ve_enabled=True, ve_dim=m.ve_dim,
                  ve_layers=m.ve_layers).float()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in net.parameters():
            sigma = 0.5 / p.shape[-1] ** 0.5 if p.ndim >= 2 else 0.2
            p.add_(sigma * torch.randn(p.shape, generator=gen))
    return net


def paired(fns: dict, rounds: int) -> dict:
    """Median seconds per call of each fn, timed round-robin after one warm call each."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run_case(ref, name: str, impl: str, rounds: int, sdpa: str) -> dict:
    import contextlib

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from golf_jax import model as model_lib
    from golf_jax.model import reference

    layers, dim, B, T, ve_layers, backward = CASES[name]
    m = model_config(layers, dim, ve_layers, impl)
    net = reference_model(ref, m)
    params = jax.tree.map(jnp.asarray, reference.params_from_reference(
        {k: v.detach().numpy() for k, v in net.state_dict().items()}))
    model = model_lib.build_model(m)
    rng = np.random.default_rng(0)
    x_np, y_np = (rng.integers(0, m.vocab_size, (B, T)).astype(np.int64) for _ in range(2))
    x_t, y_t = torch.from_numpy(x_np), torch.from_numpy(y_np)
    x_j, y_j = jnp.asarray(x_np, jnp.int32), jnp.asarray(y_np, jnp.int32)
    ctx = lambda: sdpa_kernel(SDPBackend.MATH) if sdpa == "math" else contextlib.nullcontext()  # noqa: E731

    if backward:
        net.train()
        compiled = torch.compile(net)

        def torch_step(f):
            net.zero_grad(set_to_none=True)
            f(x_t, y_t).backward()

        loss = lambda p: model.apply({"params": p}, x_j, y_j, method=model.loss)[0]  # noqa: E731
        jax_fn = jax.jit(jax.value_and_grad(loss))
        fns = {"torch eager": lambda: torch_step(net), "torch.compile": lambda: torch_step(compiled),
               "golf_jax jit": lambda: jax.block_until_ready(jax_fn(params))}
        with ctx(), torch.no_grad():
            want = float(net(x_t, y_t))
        got = float(jax_fn(params)[0])
        check = f"loss torch {want:.6f} golf_jax {got:.6f}"
    else:
        net.eval()
        compiled = torch.compile(net.forward_logits)
        jax_fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
        fns = {"torch eager": lambda: net.forward_logits(x_t), "torch.compile": lambda: compiled(x_t),
               "golf_jax jit": lambda: jax.block_until_ready(jax_fn(params, x_j))}
        with ctx(), torch.no_grad():
            want = net.forward_logits(x_t).numpy()
        got = np.asarray(jax_fn(params, x_j))
        check = f"logits max |diff| / max |ref| = {np.abs(got - want).max() / np.abs(want).max():.2e}"
    with ctx(), torch.set_grad_enabled(backward):
        times = paired(fns, rounds)
    return {"case": name, "shape": f"{layers}x{dim}, B {B} x T {T}", "check": check, "times": times}


def _main(args: list[str]) -> int:
    cli.positionals(args)
    ref_path = Path(_REF.value) if _REF.value else DEFAULT_REF
    if not ref_path.exists():
        print(f"skip: the reference {ref_path} is absent; copy PR #1318's train_gpt.py there "
              "(see this script's docstring)")
        return 0
    try:
        import torch
    except ImportError:
        print("skip: torch is not installed (pip install torch==2.13.0 for the CPU build; not a golf_jax dependency)")
        return 0
    ref = load_reference(ref_path)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SDPA backend {_TORCH_SDPA.value}; "
          f"golf_jax attention_impl={_IMPL.value}; median of {_ROUNDS.value} paired rounds")
    for name in CASES if _CASE.value == "all" else (_CASE.value,):
        r = run_case(ref, name, _IMPL.value, _ROUNDS.value, _TORCH_SDPA.value)
        t = r["times"]
        what = "fwd+bwd" if CASES[name][5] else "forward"
        print(f"{name} ({r['shape']}, {what}): {r['check']}")
        for k, v in t.items():
            print(f"  {k:14s} {1e3 * v:9.1f} ms")
        print(f"  golf_jax / torch eager = {t['golf_jax jit'] / t['torch eager']:.2f}x, "
              f"golf_jax / torch.compile = {t['golf_jax jit'] / t['torch.compile']:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
