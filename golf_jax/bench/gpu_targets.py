"""The GPUs the bench compiles for without having one: their descriptions and abstract devices.

XLA compiles for a CUDA device it cannot see from a `GpuTargetConfigProto` (a text proto:
the device's description, the platform, the cuDNN version). We write ours from the
vendor's published figures (docs/perf.md, "Will it fit, and how fast at best?", says
where each comes from and how to dump the exact description on a real GPU to compare).
The CUDA plugin (`pip install "jax[cuda12]==<jax version>"`) must be importable and jax
must run with `JAX_PLATFORMS=cpu`: the abstract devices then come from the plugin's
topology, and `jit(...).lower(ShapeDtypeStructs).compile()` builds the real executable.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import jax

from golf_jax.core import mesh as mesh_lib
from golf_jax.core.errors import UserError


@dataclass(frozen=True)
class GpuSpec:
    """One GPU as the compiler and the roofline see it (per device; SXM boards)."""

    name: str
    device_kind: str  # what jax reports as device_kind on the real card
    sm_count: int
    clock_ghz: float  # max boost clock
    memory_bytes: int  # HBM as the driver reports it (nvidia-smi's total)
    memory_bw: float  # HBM bytes/s
    l2_bytes: int
    bf16_tflops: float  # dense bf16 tensor-core peak
    link_bw: float  # NVLink bytes/s per direction per GPU (NVSwitch: each GPU's share of an all-reduce ring)
    dnn_major: int = 9  # cuDNN the executable is built against (the CUDA wheels' cuDNN 9)
    dnn_minor: int = 8


# NVIDIA H100 and H200 datasheets (SXM5): 132 SMs at up to 1.98 GHz, 50 MB L2, 228 KB shared
# memory per SM (227 KB to one block), 64 K registers and 2,048 threads per SM, bf16 989 TFLOP/s
# dense, NVLink 4 at 900 GB/s both ways (450 GB/s each way). H100: 80 GB HBM3 at 3.35 TB/s
# (nvidia-smi: 81,559 MiB); H200: 141 GB HBM3e at 4.8 TB/s (nvidia-smi: 143,771 MiB).
GPUS = {
    "h100": GpuSpec("H100 SXM5 80GB", "NVIDIA H100 80GB HBM3", 132, 1.98, 81_559 * 2**20, 3.35e12, 50 * 2**20,
                    989.0, 450e9),
    "h200": GpuSpec("H200 SXM 141GB", "NVIDIA H200", 132, 1.98, 143_771 * 2**20, 4.8e12, 50 * 2**20, 989.0, 450e9),
}


def target_config(spec: GpuSpec) -> str:
    """The GpuTargetConfigProto text XLA's deviceless compile reads (compute capability 9.0)."""
    info = {
        "threads_per_block_limit": 1024, "threads_per_warp": 32, "shared_memory_per_block": 48 * 1024,
        "shared_memory_per_core": 228 * 1024, "threads_per_core_limit": 2048, "core_count": spec.sm_count,
        "fpus_per_core": 128, "block_dim_limit_x": 2**31 - 1, "block_dim_limit_y": 65535,
        "block_dim_limit_z": 65535, "memory_bandwidth": int(spec.memory_bw), "l2_cache_size": spec.l2_bytes,
        "clock_rate_ghz": spec.clock_ghz, "device_memory_size": spec.memory_bytes,
        "shared_memory_per_block_optin": 227 * 1024, "registers_per_core_limit": 65536,
        "registers_per_block_limit": 65536,
    }
    body = "\n".join(f"  {k}: {v}" for k, v in info.items())
    return (f"gpu_device_info {{\n{body}\n  cuda_compute_capability {{\n    major: 9\n    minor: 0\n  }}\n}}\n"
            f'platform_name: "CUDA"\ndnn_version_info {{\n  major: {spec.dnn_major}\n  minor: {spec.dnn_minor}\n}}\n'
            f'device_description_str: "{spec.device_kind}"\n')


def check_plugin() -> None:
    """A one-line error unless the CUDA plugin and a CPU-only jax are in place."""
    if not any(importlib.util.find_spec(f"jax_plugins.xla_cuda{v}") for v in (12, 13)):
        raise UserError(f'--target needs the CUDA plugin: pip install "jax[cuda12]=={jax.__version__}" '
                        "(no GPU needed; it compiles for one)")


def spec_of(target: str) -> GpuSpec:
    if target not in GPUS:
        raise UserError(f"--target={target}: use one of {', '.join(GPUS)}")
    return GPUS[target]


def target_mesh(spec: GpuSpec, num_devices: int):
    """The data mesh over `num_devices` abstract GPUs of one host (compile only)."""
    from jax.experimental import topologies

    check_plugin()
    if num_devices < 1:
        raise UserError(f"--devices={num_devices}: give at least 1")
    try:
        topo = topologies.get_topology_desc(platform="cuda", target_config=target_config(spec),
                                            topology=f"1x1x{num_devices}")
    except Exception as e:  # the plugin's own words: a description it cannot parse, or no CPU-only jax
        raise UserError(f"--target={spec.name}: the CUDA plugin refused the topology ({str(e).splitlines()[0]}); "
                        "run with JAX_PLATFORMS=cpu and a plugin of jax's version") from None
    return mesh_lib.make_mesh(topo.devices)
