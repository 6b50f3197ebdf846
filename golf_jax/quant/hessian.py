"""GPTQ Hessians H = XᵀX of every layers.Linear input, collected on the devices
(docs/reference-notes.md#hessian-calibration).

Why interception: every matmul weight of our models is a `layers.Linear` (param
"kernel"), so `nn.intercept_methods` sees each layer's input x inside one jitted
forward without a second, hand-written model (the reference builds `_HessianGPT`).
Per layer we form x_cast ᵀ x_cast in fp32, where x_cast is x cast to the layer's
compute dtype (exactly what multiplies the kernel), reshaped to [tokens, in]. The
batch is sharded over the data mesh, so XLA reduces the [in, in] products across
devices; the running sums stay on device and only the final matrices reach the
host. Nothing per token is gathered.

Keys are the kernel's params path, e.g. "blocks_0/attn/c_q/kernel". A Linear called
twice in one forward accumulates both calls. With `tied_embed=True` the input of the
tied LM head (the first argument of the top-level module's `logits_from_hidden`: the
final-norm output) is accumulated too, under "tok_emb/embedding": logits = h Eᵀ, so
for E as [V, D] rows that is its Hessian, as the SP8192 reference (#1735) takes it. Normalisation: H / number of
calibration sequences (the reference divides by sequences, not tokens; GPTQ is
invariant to a positive scale of H up to the relative damping, which is relative
to mean(diag H) anyway).

A model that stores matrices as stacked banks (not through layers.Linear) yields no
Hessian for them; export.py then raises naming the matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from golf_jax.model import layers
from golf_jax.core import mesh as mesh_lib
from golf_jax.core.progress import progress

CALIB_SOURCES = ("train", "val", "selfgen")  # val: PR #1318 (non-compliant); selfgen: golf_jax/quant/selfgen.py
TIED_EMBED_KEY = "tok_emb/embedding"  # the tied table's params path, [V, D]
HEAD_METHOD = "logits_from_hidden"  # the top-level module's LM head: logits from final-normed h


def fits_reserve(seconds: float, reserve_seconds: float) -> bool:
    """Did calibration fit the seconds reserved for it inside the training clock?

    Calibration on training data must end inside the 600 s of training
    (export.reserve_seconds; #1735 reserves 12 s and took 50-57 s). No reserve
    (<= 0) means it ran after the clock, which never fits.
    """
    return reserve_seconds > 0 and seconds <= reserve_seconds


@dataclass
class Calibration:
    """What export needs from calibration, and what the summary reports about it."""

    hessians: dict[str, np.ndarray]
    source: str
    num_seqs: int
    seq_len: int
    seconds: float
    notes: dict = field(default_factory=dict)

    @property
    def on_val(self) -> bool:
        return self.source == "val"


def _xtx_interceptor(store: dict, row_weight: jax.Array | None = None, tied_embed: bool = False):
    """Adds Σ xᵀx of each Linear call (and, with tied_embed, of the LM head's input)
    to store; row_weight [B] ∈ {0,1} masks padded rows."""

    def add(key: str, x: jax.Array) -> None:
        x = x.astype(jnp.float32)
        if row_weight is not None:
            x = x * row_weight.reshape((-1,) + (1,) * (x.ndim - 1))
        x2 = x.reshape(-1, x.shape[-1])
        h = jnp.einsum("ti,tj->ij", x2, x2, preferred_element_type=jnp.float32,
                       precision=jax.lax.Precision.HIGHEST)
        store[key] = store[key] + h if key in store else h

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if isinstance(mod, layers.Linear) and context.method_name == "__call__" and args:
            add("/".join(mod.path) + "/kernel", jnp.asarray(args[0]).astype(mod.dtype))
        elif tied_embed and context.method_name == HEAD_METHOD and not mod.path and args:
            # What multiplies the table: h in the model's compute dtype (when it names one).
            h = jnp.asarray(args[0])
            dtype = getattr(getattr(mod, "cfg", None), "compute_dtype", None)
            add(TIED_EMBED_KEY, h.astype(dtype) if dtype else h)
        return next_fun(*args, **kwargs)

    return interceptor


def xtx_forward(model: nn.Module, params, tokens_BxT: jax.Array,
                row_weight: jax.Array | None = None, tied_embed: bool = False) -> dict[str, jax.Array]:
    """{kernel path: Σ_tokens xᵀx} of one forward (traceable; use inside jit); with
    tied_embed also {"tok_emb/embedding": Σ hᵀh} of the LM head's input."""
    store: dict[str, jax.Array] = {}
    with nn.intercept_methods(_xtx_interceptor(store, row_weight, tied_embed)):
        model.apply({"params": params}, tokens_BxT)
    if tied_embed and TIED_EMBED_KEY not in store:
        raise ValueError(f"export.embed_quant='gptq': the model's forward never called its top-level "
                         f"`{HEAD_METHOD}`, so there is no Hessian for {TIED_EMBED_KEY}; give the model that "
                         "method or set export.embed_quant='rowquant'")
    return store


BATCH_SEQS = 8  # calibration sequences per batch (rounded up to a multiple of the device count)


def jit_accumulate(model: nn.Module, mesh: Mesh, tied_embed: bool = False):
    """`accumulate(acc, params, x, w)`: acc + one batch's Σ xᵀx (acc donated, batch split over the data mesh)."""
    rep, dat = mesh_lib.replicated(mesh), mesh_lib.data_sharded(mesh)

    def step(acc, p, x, w):
        store = xtx_forward(model, p, x, w, tied_embed)
        return {k: acc[k] + store[k] for k in store}

    return jax.jit(step, in_shardings=(rep, rep, dat, dat), out_shardings=rep, donate_argnums=(0,))


def collect_hessians(model: nn.Module, params, seqs_NxT: np.ndarray, mesh: Mesh,
                     batch_seqs: int = BATCH_SEQS, tied_embed: bool = False) -> dict[str, np.ndarray]:
    """H = Σ XᵀX / N over N calibration sequences, as fp32 numpy [in, in] per kernel
    (and per tied table with tied_embed, see xtx_forward).

    Batches of `batch_seqs` rows (rounded up to a multiple of the device count) are
    sharded over the data axis; the last batch is zero-padded and its padded rows get
    weight 0. The sums stay on device between batches (donated accumulator); each batch
    waits for them before its dispatch, so the progress runs at most one batch ahead.
    """
    seqs = np.asarray(seqs_NxT, np.int32)
    n, T = seqs.shape
    ndev = mesh.devices.size
    bs = max(ndev, -(-batch_seqs // ndev) * ndev)
    if n == 0:
        raise ValueError("collect_hessians: no calibration sequences (export.calib_seqs must be > 0)")
    shapes = jax.eval_shape(lambda p, x: xtx_forward(model, p, x, tied_embed=tied_embed), params,
                            jax.ShapeDtypeStruct((bs, T), jnp.int32))
    acc = jax.device_put({k: np.zeros(v.shape, v.dtype) for k, v in shapes.items()}, mesh_lib.replicated(mesh))
    accumulate = jit_accumulate(model, mesh, tied_embed)
    for start in progress("calibration", "batch", items=range(0, n, bs)):
        chunk = seqs[start : start + bs]
        w = np.zeros(bs, np.float32)
        w[: len(chunk)] = 1.0
        x = np.zeros((bs, T), np.int32)
        x[: len(chunk)] = chunk
        x, w = mesh_lib.put_global_batch(mesh, x), mesh_lib.put_global_batch(mesh, w)
        jax.block_until_ready(acc)  # the devices idle only for a dispatch: this batch is on them already
        acc = accumulate(acc, params, x, w)
    host = jax.device_get(acc)
    return {k: np.asarray(v, np.float32) / np.float32(n) for k, v in host.items()}


def calibration_sequences(cfg, source: str, num_seqs: int, seq_len: int, *, data_dir: Path | None = None,
                          val_tokens: np.ndarray | None = None) -> np.ndarray:
    """[N, T] int32 calibration inputs read from export.calib_source's data (`calibrate` generates
    the self-generated ones)."""
    need = num_seqs * seq_len
    if source == "train":
        from golf_jax.data.loader import TokenStream

        stream = TokenStream(str(Path(data_dir) / "fineweb_train_*.bin"), cfg.model.vocab_size)
        toks = stream.take(need)  # the first N sequences of the training stream
    elif source == "val":
        toks = np.asarray(val_tokens)[:need]
        if toks.size < need:
            raise ValueError(f"export.calib_source='val': {toks.size} val tokens < {num_seqs}×{seq_len}; "
                             "lower export.calib_seqs or export.calib_seq_len")
    else:
        raise ValueError(f"export.calib_source={source!r}: use one of {CALIB_SOURCES}")
    return np.asarray(toks, np.int32).reshape(num_seqs, seq_len)


def calibrate(cfg, model, params, mesh: Mesh, *, data_dir=None, val_tokens=None, bos_id: int = 1,
              log=print) -> Calibration:
    """Collect the Hessians the export format needs, per the export.calib_* config."""
    e = cfg.export
    T = int(e.calib_seq_len) or int(cfg.train.seq_len)
    t0 = time.perf_counter()
    if e.calib_source == "val":
        log("WARNING: export.calib_source='val' calibrates GPTQ on validation tokens (as PR #1318 "
            "does); this is NOT compliant with the rules, and the summary flags calibration_on_val")
    if e.calib_source == "selfgen":  # imported here only: a submission that does not self-generate need not pack it
        from golf_jax.quant.selfgen import generate

        seqs = generate(model, params, int(e.calib_seqs), T, mesh, cfg.seed, bos_id=bos_id)
    else:
        seqs = calibration_sequences(cfg, e.calib_source, int(e.calib_seqs), T, data_dir=data_dir,
                                     val_tokens=val_tokens)
    hs = collect_hessians(model, params, seqs, mesh, tied_embed=e.embed_quant == "gptq")
    dt = time.perf_counter() - t0
    log(f"calibration: {len(hs)} Hessians from {len(seqs)} {e.calib_source} sequences × {T} in {dt:.1f}s")
    log(reserve_line(dt, float(e.reserve_seconds), e.calib_source))
    return Calibration(hs, e.calib_source, len(seqs), T, dt)


def reserve_line(seconds: float, reserve_seconds: float, source: str = "train") -> str:
    """One log line: did calibration fit export.reserve_seconds? (an overrun is loud)."""
    after = "read training data after the training clock" if source == "train" else "ran after the training clock"
    if reserve_seconds <= 0:
        return f"calibration: {seconds:.1f}s with no reserve (export.reserve_seconds=0): it {after}"
    if fits_reserve(seconds, reserve_seconds):
        return f"calibration: {seconds:.1f}s fits the {reserve_seconds:.1f}s reserve (export.reserve_seconds)"
    return (f"WARNING: calibration took {seconds:.1f}s, OVER the {reserve_seconds:.1f}s reserve "
            f"(export.reserve_seconds) by {seconds - reserve_seconds:.1f}s: it {after}; raise "
            "export.reserve_seconds or lower export.calib_seqs")
