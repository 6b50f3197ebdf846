"""On a real GPU: the description XLA compiles for, against ours (golf_jax/bench/gpu_targets.py).

    python bench/gpu_description.py [--target=h100] [--debug]

The bench's `--target` compiles for a description we wrote from the datasheets. On the
card itself, XLA builds the exact one: with `--xla_dump_to` it writes it beside the dumped
modules as `*gpu_target_config.pbtxt`. This script compiles a small function with that
dump on, reads the file back and prints every field where the two differ (and jax's own
view of the device), so a wrong figure of ours shows up as one line. Without a GPU it says
so and exits 0.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import flags  # noqa: E402 (after the repository is on the path)

from golf_jax.core import cli  # noqa: E402

FLAGS = cli.flag_values()
_TARGET = flags.DEFINE_string("target", "h100", "Our description to compare: a GPU of golf_jax/bench/gpu_targets.py.",
                              flag_values=FLAGS)


def fields(text: str) -> dict[str, str]:
    """`key: value` leaves of a text proto, named by their path (`gpu_device_info.core_count`)."""
    out, path = {}, []
    for line in text.splitlines():
        line = line.strip()
        if line.endswith("{"):
            path.append(line[:-1].strip())
        elif line == "}":
            path.pop()
        elif ":" in line:
            key, value = line.split(":", 1)
            out[".".join([*path, key.strip()])] = value.strip().strip('"')
    return out


def differences(ours: str, real: str) -> list[str]:
    """One line per field that the two descriptions give differently (or only one gives)."""
    a, b = fields(ours), fields(real)
    return [f"{k}: ours {a.get(k, '(absent)')}, the card's {b.get(k, '(absent)')}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _main(args: list[str]) -> None:
    cli.positionals(args)
    from golf_jax.bench import gpu_targets

    spec = gpu_targets.spec_of(_TARGET.value)  # an unknown --target is one line, before anything is made
    dump = tempfile.mkdtemp(prefix="golf_jax_gpu_description_")
    # XLA reads XLA_FLAGS when jax starts its backend (jax.devices() below), not when jax is imported.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}"
    import jax
    import jax.numpy as jnp

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        print("no GPU here: run this on the card whose description you want to compare")
        return
    d = gpus[0]
    print(f"jax sees: {d.device_kind}; compute capability {getattr(d, 'compute_capability', '?')}; "
          f"{getattr(d, 'core_count', '?')} SMs; memory limit {d.memory_stats().get('bytes_limit', 0) / 2**30:.1f} GiB")
    jax.jit(lambda x: x @ x).lower(jnp.ones((256, 256), jnp.bfloat16)).compile()
    found = sorted(Path(dump).glob("*gpu_target_config.pbtxt"))
    if not found:
        print(f"XLA wrote no *gpu_target_config.pbtxt into {dump}; its files: "
              f"{sorted(p.name for p in Path(dump).iterdir())[:10]}")
        return
    real = found[0].read_text()
    ours = gpu_targets.target_config(spec)
    diff = differences(ours, real)
    print(f"the card's description: {found[0]}")
    print("\n".join(diff) if diff else "identical")
    print(re.sub(r"\n\s*\n", "\n", real))


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
