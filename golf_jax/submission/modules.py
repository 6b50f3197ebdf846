"""Which golf_jax modules a submission script packs, and what it leaves out (golf_jax/submission/build.py
builds the script; it states the packer's transforms).

A module is packed when it is in the import closure of ENTRY, read statically from the source tree
(imports inside functions count too), unless a rule below leaves it out:

* never packed: NOT_PACKED (repository tools and everything under a listed package). A packed module
  may import one only inside a function; one module-level import makes the packer raise.
* gated: GATES maps a module, or a package and all it holds, to a predicate of the config and the
  setting that takes its branch. A config that does not take the branch packs none of it (nor the
  packages above it, where only that branch's import statements name them). A packed
  module imports a gated module inside the function that runs on its branch; only a module of the same
  gate (the same setting) may import it at module level. Any other module-level import makes the packer
  raise rather than pack the module for every config (tests/test_pack.py checks every gate both ways).
* empty bodies: a function marked `@repo_only` is packed with an empty body (the marker and its import
  go too). It checks a config's own keys (enums, ranges, unused keys), and the repository ran it before
  it wrote a run's config.json and submission script (pipeline.run, `python -m golf_jax.submission`).
  What depends on the machine or the data is checked elsewhere and stays. The marker, not a function's
  name, decides: a renamed function keeps it, an unmarked one is packed whole.

A leaf like codebytes.py, and packed itself: a packed run checks its config against the modules it
holds (`check_packed`; a gated package whose __init__.py was empty, and so dropped, is found by its
folder).
"""

from __future__ import annotations

from pathlib import Path

from golf_jax.core.paths import REPO_ROOT

ENTRY = ("golf_jax.submission.script",)  # main: what a submission runs
# Repository tools: the audit checks the repository's runs and the report shows them (the packed train skips both);
# data.download fetches the challenge's shards and data.identity checks them against their record (inside
# data/, so named here).
NOT_PACKED = ("golf_jax.audit", "golf_jax.submission.build", "golf_jax.report", "golf_jax.data.download",
              "golf_jax.data.identity", "golf_jax.core.multihost")


def _stages(cfg) -> list[str]:
    return [s.strip() for s in cfg.eval.stages.split(",")]


# module or package -> (does the config take the branch that imports it?, the setting that does). Modules with
# the same setting are one gate: they may import each other at module level.
GATES = {
    "golf_jax.data.synthetic": (lambda c: c.data.source == "default", "data.source=default"),
    "golf_jax.data.sequential": (lambda c: c.data.loader == "sequential", "data.loader=sequential"),
    "golf_jax.data.coprime": (lambda c: c.data.loader == "coprime", "data.loader=coprime"),
    "golf_jax.data.shuffled": (lambda c: c.data.loader == "shuffled", "data.loader=shuffled"),
    "golf_jax.train.checkpoint": (lambda c: c.train.checkpoint_every > 0 or bool(c.train.resume_from),
                                  "train.checkpoint_every > 0 or train.resume_from"),
    "golf_jax.eval.ttt.prequant": (lambda c: c.eval.prequant_ttt.mode != "off", "eval.prequant_ttt.mode != off"),
    "golf_jax.eval.slot": (lambda c: "slot" in _stages(c), "eval.stages with slot"),
    "golf_jax.eval.ttt.score_first": (lambda c: "ttt" in _stages(c) and c.eval.ttt.mode != "phased",
                          "eval.stages with ttt and eval.ttt.mode=score_first or pr1318"),
    "golf_jax.eval.phased": (lambda c: c.eval.ttt.mode == "phased", "eval.ttt.mode=phased"),
    "golf_jax.eval.profile": (lambda c: bool(c.eval.profile), "eval.profile"),
    "golf_jax.quant.lqer": (lambda c: c.export.lqer_rank > 0, "export.lqer_rank > 0"),
    "golf_jax.quant.lowrank": (lambda c: c.export.lqer_rank > 0, "export.lqer_rank > 0"),
    "golf_jax.quant.pergroup": (lambda c: c.export.compressor.startswith("pergroup_"), "export.compressor=pergroup_*"),
    "golf_jax.quant.compress": (lambda c: not c.export.compressor.startswith("pergroup_"),
                                "export.compressor other than pergroup_*"),
    "golf_jax.train.qat": (lambda c: c.train.late_qat_threshold > 0, "train.late_qat_threshold > 0"),
    "golf_jax.quant.selfgen": (lambda c: c.export.calib_source == "selfgen", "export.calib_source=selfgen"),
}


def repo_only(check):
    """Marks a function the repository runs before it packs a script, and the script holds empty:
    a config's own checks (module docstring). Returns `check` itself: nothing changes where it runs."""
    return check


def gates_on(cfg) -> tuple[bool, ...]:
    """Which gated branches `cfg` takes, in GATES order (all of them for None)."""
    return tuple(cfg is None or bool(pred(cfg)) for pred, _ in GATES.values())


def script_codecs(cfg) -> tuple[str, ...]:
    """Codecs the script's code may be compressed with: the standard library's, and ZPAQ
    (10 % smaller on our code than lzma) only where the export needs the `zpaq` package anyway."""
    stdlib = ("lzma", "bz2")
    return stdlib + ("zpaq",) if cfg is not None and cfg.export.compressor == "pergroup_zpaq" else stdlib


def module_file(root: Path, name: str) -> Path | None:
    """golf_jax.a.b -> root/golf_jax/a/b.py or root/golf_jax/a/b/__init__.py, if it exists."""
    base = root.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def check_packed(cfg, root: Path = REPO_ROOT) -> None:
    """Raise when `cfg` takes a gated branch whose module this (packed) tree lacks."""
    for name, (pred, setting) in GATES.items():
        if pred(cfg) and module_file(root, name) is None and not root.joinpath(*name.split(".")).is_dir():
            raise ValueError(f"this submission was packed without {name}, which {setting} needs: pack it for "
                             "this config (python -m golf_jax.submission --config_json RUN_DIR/config.json ...)")
