"""The PyTorch reference's weights as golf_jax params: the parity tests and tools/ load them.

The references (PR #1318's train_gpt.py; #1855's adds the two-lane lambdas, skip gates,
sparse attention gates and the window SmearGate) store the block matrices as stacked banks in
torch's `(out, in)` layout; our GPT keeps per-layer `(in, out)` kernels (docs/differences.md,
row 13). A submission never loads torch weights, so this module is not packed.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from flax import traverse_util


def params_from_reference(state_dict: Mapping[str, np.ndarray]) -> dict:
    """The reference's (banked, torch `(out, in)`) state dict as our params pytree (fp32).

    Also accepts the unbanked export names (`blocks.i.attn.c_q.weight`, …, docs/reference-notes.md#parameter-banking).
    """
    sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    if "qo_bank" in sd:
        n = sd["mlp_up_bank"].shape[0]
        for i in range(n):
            sd[f"blocks.{i}.attn.c_q.weight"] = sd["qo_bank"][i]
            sd[f"blocks.{i}.attn.proj.weight"] = sd["qo_bank"][n + i]
            sd[f"blocks.{i}.attn.c_k.weight"] = sd["kv_bank"][i]
            sd[f"blocks.{i}.attn.c_v.weight"] = sd["kv_bank"][n + i]
            sd[f"blocks.{i}.mlp.fc.weight"] = sd["mlp_up_bank"][i]
            sd[f"blocks.{i}.mlp.proj.weight"] = sd["mlp_down_bank"][i]
        for bank in ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank"):
            del sd[bank]
    ve_scales = sorted(k for k in sd if k.startswith("ve_layer_scales."))
    if ve_scales:
        flat[("ve_layer_scales",)] = np.concatenate(
            [sd.pop(k).reshape(-1) for k in sorted(ve_scales, key=lambda k: int(k.split(".")[1]))]
        )
    direct = {
        "tok_emb.weight": ("tok_emb", "embedding"),
        "bigram.embed.weight": ("bigram", "embed"),
        "bigram.scale": ("bigram", "scale"),
        "smear.gate": ("smear", "gate"),
        "skip_weights": ("skip_weights",),
        "skip_gates": ("skip_gates",),
        "ve_shared.embed.weight": ("ve_shared", "embed"),
        "ve_shared.scale": ("ve_shared", "scale"),
        "parallel_post_lambdas": ("parallel_post_lambdas",),  # #1855's two-lane decoder
        "parallel_resid_lambdas": ("parallel_resid_lambdas",),
    }
    if "smear_gate.weight" in sd:  # #1855's window SmearGate: W [1, window] and λ [1]
        flat[("smear", "gate")] = sd.pop("smear_gate.weight").reshape(-1)
        flat[("smear", "lam")] = sd.pop("smear_lambda").reshape(())
    for name, arr in sd.items():
        parts = name.split(".")
        if name in direct:
            flat[direct[name]] = arr
        elif name in ("bigram.proj.weight", "ve_shared.proj.weight"):
            flat[(parts[0], "proj", "kernel")] = arr.T
        elif parts[0] == "mtp_heads":
            flat[(f"mtp_heads_{parts[1]}", "kernel")] = arr.T
        elif parts[0] == "blocks":
            block = f"blocks_{parts[1]}"
            if parts[-1] == "weight":  # blocks.i.{attn,mlp}.{c_q,…}.weight
                flat[(block, parts[2], parts[3], "kernel")] = arr.T
            elif parts[2] == "attn":  # blocks.i.attn.q_gain
                flat[(block, "attn", parts[3])] = arr
            else:  # resid_mix, attn_scale, mlp_scale
                flat[(block, parts[2])] = arr
        else:
            raise ValueError(f"params_from_reference: unknown reference tensor {name!r}")
    return traverse_util.unflatten_dict(flat)
