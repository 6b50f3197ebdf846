"""The model stage: `build_model(model_cfg)`, its optimizer labels and its config check.

There is one model, golf_jax.model.gpt.GPT; the baseline, the record and the SP8192
stack are configs of it (configs/*.py). A key that configures a feature the config
leaves off is an error rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Any

from flax import linen as nn

from golf_jax.model import gpt
from golf_jax.model.blocks import MLP_ACTIVATIONS
from golf_jax.model.layers import ATTENTION_IMPLS, MATRIX_INITS
from golf_jax.submission.modules import repo_only

ENUMS = {
    "matrix_init": tuple(MATRIX_INITS),
    "mlp_activation": MLP_ACTIVATIONS,
    "residual_dtype": ("float32", "compute"),  # float32: as torch autocast; compute: PR #1318 parity
    "compute_dtype": ("float32", "bfloat16", "float16"),
    # record: on the normed embedding (PR #1318); window: on the raw embedding, BOS-masked (#1855)
    "smear_gate": ("off", "record", "window"),
    "attn_gate": ("off", "sparse"),  # sparse: per-head output gate from the first gate_window dims (#1787)
    "parallel_mode": ("gptj", "two_lane"),  # gptj: both read x_in (#1735); two_lane: attention and MLP lanes (#1787)
    "attention_impl": ATTENTION_IMPLS,
}

# key -> (is its feature on?, the setting that switches it on)
DEPENDENT_KEYS = {
    "bigram_dim": (lambda m: m.bigram_vocab_size > 0, "model.bigram_vocab_size > 0"),
    "ve_dim": (lambda m: bool(gpt.ve_layer_indices(m)), "model.ve_layers"),
    "mtp_loss_weight": (lambda m: m.mtp_num_heads > 0, "model.mtp_num_heads > 0"),
    "loop_start": (lambda m: m.num_loops > 0, "model.num_loops > 0"),
    "loop_end": (lambda m: m.num_loops > 0, "model.num_loops > 0"),
    "loop_enable_frac": (lambda m: m.num_loops > 0, "model.num_loops > 0"),
    "gate_window": (lambda m: m.smear_gate == "window" or m.attn_gate == "sparse",
                    "model.smear_gate='window' or model.attn_gate='sparse'"),
    "attn_gate_scale": (lambda m: m.attn_gate == "sparse", "model.attn_gate='sparse'"),
    "parallel_mode": (lambda m: m.parallel_residual_start >= 0, "model.parallel_residual_start >= 0"),
}


@repo_only
def check_config(m: Any) -> None:
    """Ranges, enums and unused keys of a model config, before anything is built."""
    for key, allowed in ENUMS.items():
        if m[key] not in allowed:
            raise ValueError(f"model.{key}={m[key]!r}: use one of {', '.join(map(repr, allowed))}")
    L = int(m.num_layers)
    if L < 1 or m.model_dim % m.num_heads or m.num_heads % m.num_kv_heads:
        raise ValueError("model.num_layers must be >= 1, model.model_dim must divide by model.num_heads, "
                         "and num_heads by num_kv_heads")
    head_dim = m.model_dim // m.num_heads
    if m.rope_dims < 0 or m.rope_dims % 2 or m.rope_dims > head_dim:
        raise ValueError(f"model.rope_dims={m.rope_dims}: use an even number of dims in 0..{head_dim} "
                         "(0 rotates the whole head)")
    if not 0 <= m.xsa_last_n <= L:
        raise ValueError(f"model.xsa_last_n={m.xsa_last_n}: use 0..{L} (model.num_layers)")
    if not -1 <= m.parallel_residual_start < L:
        raise ValueError(f"model.parallel_residual_start={m.parallel_residual_start}: use -1 (off) or 0..{L - 1}")
    bad_ve = [i for i in gpt.ve_layer_indices(m) if not 0 <= i < L]
    if bad_ve:
        raise ValueError(f"model.ve_layers={m.ve_layers!r}: layers {bad_ve} are outside 0..{L - 1}")
    if m.num_loops < 0 or (m.num_loops > 0 and not 0 <= m.loop_start <= m.loop_end < L):
        raise ValueError(f"model.num_loops={m.num_loops}, loop_start={m.loop_start}, loop_end={m.loop_end}: "
                         f"need num_loops >= 0 and 0 <= loop_start <= loop_end < {L} (model.num_layers)")
    if not 1 <= m.gate_window <= m.model_dim:
        raise ValueError(f"model.gate_window={m.gate_window}: use 1..{m.model_dim} (model.model_dim)")
    if m.parallel_mode == "two_lane" and m.parallel_residual_start == 0:
        raise ValueError("model.parallel_residual_start=0 with parallel_mode='two_lane': the lanes start after "
                         "at least one block (the reference requires a start layer > 0)")
    if not 0.0 <= m.loop_enable_frac <= 1.0:
        raise ValueError(f"model.loop_enable_frac={m.loop_enable_frac}: use a fraction of training in [0, 1]")
    from golf_jax.config import base_config  # the schema: a submission does not pack it (golf_jax/submission/build.py)

    defaults = base_config().model
    for key, (is_on, switch) in DEPENDENT_KEYS.items():
        if m[key] != defaults[key] and not is_on(m):
            raise ValueError(f"model.{key}={m[key]!r} has no effect because its feature is off; "
                             f"set {switch} or leave model.{key} at its default ({defaults[key]!r})")


def build_model(model_cfg: Any, looping: bool = True) -> nn.Module:
    """The GPT of `model_cfg`; `looping=False` is the graph before depth recurrence switches on."""
    check_config(model_cfg)
    return gpt.GPT(model_cfg, looping=looping)


def param_labels(model_cfg: Any, params: dict, compat: Any = None) -> dict:
    """`compat` (the config's compat section) selects quirk-reproducing labels
    (`compat.mtp_untrained` freezes the MTP heads, as PR #1318 leaves them untrained)."""
    del model_cfg  # one model, one labelling rule
    mtp_untrained = compat is not None and compat.get("mtp_untrained", False)
    return gpt.make_param_labels(mtp_untrained=mtp_untrained)(params)
