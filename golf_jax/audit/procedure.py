"""The audited procedure: a config's evaluation as a function of a token stream.

The audit reruns the evaluation many times on a small slice of real validation text,
scaled down but structurally identical (docs/reference-notes.md#checker: short windows,
small TTT chunks, several windows per batch, several devices). `Procedure(tokens)`
runs exactly what the config selects, pre-quant TTT on the slice included, and returns
every stage's per-target NLL, ledger and (on request) full distributions.

Without an artifact the model is a random one of the config's architecture at a small
width: its init plus Gaussian noise on every weight, so that every attention and
side path depends on its input (zero-initialised projections would hide a leak).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from golf_jax.core import mesh as mesh_lib
from golf_jax import model as model_lib
from golf_jax.data import source
from golf_jax.data.prepare import encode_documents, iter_documents
from golf_jax.data.tokenizer import build_byte_luts, load_tokenizer
from golf_jax.eval.ttt import prequant as prequant_ttt
from golf_jax.eval import harness, stages
from golf_jax.eval.compiled import cached, settings_key
from golf_jax.core.paths import shared_data_dir
from golf_jax.quant import export

# audit.source: "auto" is the val shards if data.source=dir, else ../shared/data FineWeb-200, else the config's val
SOURCES = ("auto", "val", "fineweb")
WEIGHTS = ("random", "artifact")  # random: a small random model; artifact: the artifact's (or the run's)
FINEWEB = "text/fineweb_val_200.jsonl"
TOKENIZERS = {1024: "tokenizers/fineweb_1024_bpe.model", 8192: "tokenizers/fineweb_8192_bpe.model"}
# The official validation set (docs/reference-notes.md#checker C5): 50,000 documents; targets per tokenizer.
OFFICIAL_DOCUMENTS = 50_000
OFFICIAL_TARGETS = {1024: 62_021_632, 8192: 40_540_160}


def check_config(a) -> None:
    """The audit keys' ranges, before anything runs."""
    if a.source not in SOURCES:
        raise ValueError(f"audit.source={a.source!r}: use one of {SOURCES}")
    if a.weights not in WEIGHTS:
        raise ValueError(f"audit.weights={a.weights!r}: use one of {WEIGHTS}")
    for key in ("tokens", "batch_windows", "model_dim", "phased_docs"):
        if a[key] < 1:
            raise ValueError(f"audit.{key}={a[key]} must be >= 1")
    for key in ("seq_len", "stride", "chunk_tokens", "flips", "probes", "probe_vocab", "vocab_probes", "vocab_samples",
                "normalization_positions",
                "num_layers"):
        if a[key] < 0:
            raise ValueError(f"audit.{key}={a[key]} must be >= 0 (0: {'none' if key in ('flips', 'probes') else 'the config’s'})")
    if a.noise_std < 0:
        raise ValueError(f"audit.noise_std={a.noise_std} must be >= 0")
    if a.probe_vocab == 1:
        raise ValueError("audit.probe_vocab=1: a counterfactual needs at least 2 tokens (0 = the config's vocabulary)")


def scaled_config(cfg, num_devices: int):
    """The config with the audit's evaluation geometry (audit.*): what every rerun evaluates.

    SLOT's objective width scales with the stride, so that e.g. #1350's [L−F, s) still
    covers the previous window's scored span; pre-quant TTT's per-device batch shrinks to
    the slice's sequences (padding rows would only cost time).
    """
    a = cfg.audit
    c = cfg.copy_and_resolve_references()
    e = c.eval
    seq_len0, s0 = stages.eval_seq_len(cfg), int(e.sliding.stride)
    seq_len = int(a.seq_len or seq_len0)
    stride = int(a.stride or s0)
    e.seq_len, e.sliding.stride, e.sliding.batch_windows, e.max_tokens = seq_len, stride, int(a.batch_windows), 0
    if a.chunk_tokens:
        e.ttt.chunk_tokens = e.prequant_ttt.chunk_tokens = int(a.chunk_tokens)
    e.slot.focal = max(1, round(int(e.slot.focal) * stride / s0))
    p = e.phased  # phased TTT: small rounds, so that its global phases come between rounds of the slice
    p.batch_docs = min(int(p.batch_docs), int(a.phased_docs))
    p.prefix_docs = min(int(p.prefix_docs), int(p.num_phases) * int(p.batch_docs))
    p.chunk_size = min(int(p.chunk_size), seq_len)
    if a.chunk_tokens:
        p.global_chunk_tokens = int(a.chunk_tokens)
    seqs = max(1, int(a.tokens) // seq_len)
    e.prequant_ttt.batch_seqs = min(int(e.prequant_ttt.batch_seqs), max(1, -(-seqs // num_devices)))
    stages.check_config(c)
    return c


def small_model_config(m, a, vocab_size: int | None = None):
    """The random model's config: the architecture of `m` at width audit.model_dim."""
    s = m.copy_and_resolve_references()
    D = int(a.model_dim)
    heads = next(h for h in range(min(int(m.num_heads), D), 0, -1) if D % h == 0 and int(m.num_heads) % h == 0)
    kv = next(k for k in range(min(int(m.num_kv_heads), heads), 0, -1) if heads % k == 0)
    s.model_dim, s.num_heads, s.num_kv_heads = D, heads, kv
    head_dim = D // heads
    if s.get("rope_dims", 0):
        s.rope_dims = max(2, min(int(s.rope_dims), head_dim) // 2 * 2)
    if a.num_layers and a.num_layers < m.num_layers:
        n, L = int(a.num_layers), int(m.num_layers)
        s.num_layers = n
        if str(s.ve_layers).strip():  # keep them the last layers
            kept = sorted({n - (L - int(i)) for i in str(s.ve_layers).split(",") if i.strip()})
            s.ve_layers = ",".join(str(i) for i in kept if i >= 0)
        s.xsa_last_n = min(int(s.xsa_last_n), n)
        if s.parallel_residual_start >= 0:  # the same number of parallel layers at the end, at least one
            first = 1 if s.parallel_mode == "two_lane" and n > 1 else 0  # two lanes start after a block
            s.parallel_residual_start = min(max(first, n - (L - int(s.parallel_residual_start))), n - 1)
        if s.num_loops > 0:  # the looped segment clipped to the kept layers
            s.loop_start, s.loop_end = min(int(s.loop_start), n - 1), min(int(s.loop_end), n - 1)
    if s.bigram_vocab_size > 0:
        s.bigram_dim = max(4, min(int(s.bigram_dim), D // 2))
    if str(s.ve_layers).strip():
        s.ve_dim = max(4, min(int(s.ve_dim), D // 2))
    s.compute_dtype = "float32"  # legality does not depend on it; bf16 matmuls are slow on CPUs
    if vocab_size:
        s.vocab_size = int(vocab_size)
    return s


def random_params(model, seq_len: int, seed: int, noise_std: float):
    """Init plus N(0, noise_std²) on every float leaf."""
    key_init, key_noise = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(key_init, np.zeros((1, seq_len), np.int32))["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key_noise, len(leaves))
    noisy = [x + noise_std * jax.random.normal(k, x.shape, x.dtype) if np.issubdtype(x.dtype, np.floating) else x
             for x, k in zip(leaves, keys)]
    return jax.device_get(jax.tree.unflatten(tree, noisy))


@dataclass
class Slice:
    tokens: np.ndarray  # int32, whole audit windows + 1
    lut: object
    sp: object  # the tokenizer (to name tokens in the evidence)
    source: str  # where the text came from
    documents: int  # BOS-delimited documents in the slice
    # The real evaluation's sizes, which a user's evaluator is told (not the slice's): the
    # config's val when the slice is cut from it, else the official val set's.
    real_targets: int = 0
    real_documents: int = 0


def data_slice(cfg, seq_len: int) -> Slice:
    """audit.tokens targets of real validation text (whole windows), per audit.source."""
    a, V = cfg.audit, int(cfg.model.vocab_size)
    fineweb = shared_data_dir() / FINEWEB
    choice = a.source
    if choice == "auto":
        has_fineweb = fineweb.exists() and V in TOKENIZERS and (shared_data_dir() / TOKENIZERS[V]).exists()
        choice = "val" if cfg.data.source == "dir" or not has_fineweb else "fineweb"
    n = max(int(a.tokens) // seq_len, 1) * seq_len + 1
    if choice == "fineweb":
        if V not in TOKENIZERS or not fineweb.exists():
            raise FileNotFoundError(f"audit.source=fineweb needs {fineweb} and an official tokenizer for "
                                    f"model.vocab_size={V} (known: {sorted(TOKENIZERS)}); use audit.source=val")
        tok_path = shared_data_dir() / TOKENIZERS[V]
        sp = load_tokenizer(tok_path, V)
        parts, total = [], 0  # documents in file order, skipping long ones: the slice holds several
        for doc in iter_documents(fineweb):
            ids = encode_documents(sp, [doc])[0]
            if len(ids) > n // 4:
                continue
            parts.append(ids)
            total += len(ids)
            if total >= n:
                break
        tokens = np.concatenate(parts)[:n]
        where = f"FineWeb-200 ({fineweb.name}, {tok_path.name})"
        real = (OFFICIAL_TARGETS[V], OFFICIAL_DOCUMENTS)
    else:
        data_dir, tok_path = source.resolve_data(cfg)
        sp = load_tokenizer(tok_path, V)
        val = source.load_val(cfg, data_dir, seq_len)
        real = (len(val) - 1, int(np.sum(val[:-1] == max(int(sp.bos_id()), 0))))
        tokens = val[:n]
        where = f"val of {data_dir} ({Path(tok_path).name})"
    if len(tokens) < 2 * seq_len + 1:
        raise ValueError(f"audit: the slice from {where} has {len(tokens)} tokens, fewer than two audit windows "
                         f"of {seq_len}; lower audit.seq_len or use more text")
    tokens = np.asarray(tokens[: (len(tokens) - 1) // seq_len * seq_len + 1], np.int32)
    bos = max(int(sp.bos_id()), 0)
    # val: the byte sidecar, if the shards have one, cut as the slice (a prefix of val)
    lut = build_byte_luts(sp, V) if choice == "fineweb" else source.val_byte_lut(sp, V, data_dir, tokens)
    return Slice(tokens, lut, sp, where, int(np.sum(tokens == bos)), *real)


@dataclass
class Procedure:
    """`proc(tokens, probe_targets=None) -> {stage: StageResult}` (per-target NLL recorded).

    Nothing is refused: evaluators may read ahead (the ledger records it), so that the
    checks, not an exception, say what is wrong.
    """

    cfg: object
    model: object
    params: object  # replicated on the mesh
    lut: object
    mesh: object
    custom: object = None  # a factory of stages.EvalContext (a user's evaluator) in place of eval.stages
    # Declared document starts (the slice's BOS positions) that every rerun keeps: phased TTT's
    # order follows document lengths and is part of its protocol (docs/reference-notes.md#technique-matrix), so a flip or
    # counterfactual is judged under the order it declared, not a re-split of the changed stream.
    documents: np.ndarray | None = None
    # A user's evaluator is told these (EvalContext.num_targets, num_documents, seed), not the
    # slice's sizes: a cheat keyed on the scale of the real evaluation is on during the audit.
    told: dict | None = None
    runs: int = field(default=0, init=False)

    def __call__(self, tokens: np.ndarray, probe_targets=None) -> dict:
        self.runs += 1
        cfg, seq_len = self.cfg, stages.eval_seq_len(self.cfg)
        params, val = self.params, stages.Val(tokens, self.lut)
        pq = cfg.eval.prequant_ttt
        if pq.mode != "off":
            params, _ = prequant_ttt.run(self.model, params, tokens, seq_len, pq, self.mesh, log=_quiet)
            val = prequant_ttt.read_before_scoring(val, pq.mode)
        inspection = harness.Inspection(record_nll=True, probe_targets=probe_targets, enforce=False,
                                        custom=self._custom(), documents=self.documents)
        return stages.run_stages(cfg, self.model, params, val, self.mesh, log=_quiet, inspection=inspection)

    def _custom(self):
        if self.custom is None or not self.told:
            return self.custom
        return lambda ctx: self.custom(dataclasses.replace(ctx, **self.told))


def _quiet(*_args, **_kwargs) -> None:
    pass


def _random_model(m, seq_len: int, seed: int, noise_std: float):
    """One random model per settings while the bounded compile cache (golf_jax/eval/compiled.py)
    keeps it, so that audits in a row share its compiles."""
    def build():
        model = model_lib.build_model(m)
        return model, random_params(model, seq_len, seed, noise_std)

    return cached(None, ("audit random model", settings_key(m), seq_len, seed, noise_std), build)


def build(cfg, mesh, lut, artifact: str | Path | None = None, params=None, model=None, custom=None,
          vocab_size: int | None = None) -> Procedure:
    """The procedure on `params` of `model`, else the artifact's params, else a random model
    (of vocabulary `vocab_size`, default the config's)."""
    cfg = scaled_config(cfg, mesh.devices.size)
    if params is None and artifact is None:
        cfg.model = small_model_config(cfg.model, cfg.audit, vocab_size)
        model, params = _random_model(cfg.model, stages.eval_seq_len(cfg), int(cfg.audit.seed),
                                      float(cfg.audit.noise_std))
    elif params is None:
        model = model_lib.build_model(cfg.model)
        like = jax.eval_shape(lambda r: model.init(r, np.zeros((1, cfg.train.seq_len), np.int32))["params"],
                              jax.random.PRNGKey(0))
        params = export.load_artifact(Path(artifact), like)
    return Procedure(cfg, model, jax.device_put(params, mesh_lib.replicated(mesh)), lut, mesh, custom)
