"""Which golf_jax modules a submission script packs (golf_jax/submission/build.py builds it).

The import closure of ENTRY, read statically from the source tree, less NOT_PACKED
(repository tools: a packed module may import them only inside functions) and less the
GATES branches that the config does not take. A gated module is left out only when
every packed module imports it inside a function; one module-level import packs it
anyway. A leaf like codebytes.py, and packed itself: a packed run checks its config
against the modules it holds (`check_packed`).
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


# module (or package) -> (does the config take the branch that imports it?, the setting that does).
GATES = {
    "golf_jax.data.synthetic": (lambda c: c.data.source == "default", "data.source=default"),
    "golf_jax.data.sequential": (lambda c: c.data.loader == "sequential", "data.loader=sequential"),
    "golf_jax.data.coprime": (lambda c: c.data.loader == "coprime", "data.loader=coprime"),
    "golf_jax.data.shuffled": (lambda c: c.data.loader == "shuffled", "data.loader=shuffled"),
    "golf_jax.train.checkpoint": (lambda c: c.train.checkpoint_every > 0 or bool(c.train.resume_from),
                                  "train.checkpoint_every > 0 or train.resume_from"),
    "golf_jax.eval.ttt.prequant": (lambda c: c.eval.prequant_ttt.mode != "off", "eval.prequant_ttt.mode != off"),
    "golf_jax.eval.slot.stage": (lambda c: "slot" in _stages(c), "eval.stages with slot"),
    "golf_jax.eval.slot.solver": (lambda c: "slot" in _stages(c), "eval.stages with slot"),
    "golf_jax.eval.ttt.score_first": (lambda c: "ttt" in _stages(c) and c.eval.ttt.mode != "phased",
                          "eval.stages with ttt and eval.ttt.mode=score_first or pr1318"),
    "golf_jax.eval.phased.ttt": (lambda c: c.eval.ttt.mode == "phased", "eval.ttt.mode=phased"),
    "golf_jax.eval.phased.plan": (lambda c: c.eval.ttt.mode == "phased", "eval.ttt.mode=phased"),
    "golf_jax.eval.phased.lora": (lambda c: c.eval.ttt.mode == "phased", "eval.ttt.mode=phased"),
    "golf_jax.eval.profile": (lambda c: bool(c.eval.profile), "eval.profile"),
    "golf_jax.quant.lqer": (lambda c: c.export.lqer_rank > 0, "export.lqer_rank > 0"),
    "golf_jax.quant.lowrank": (lambda c: c.export.lqer_rank > 0, "export.lqer_rank > 0"),
    "golf_jax.quant.pergroup": (lambda c: c.export.compressor.startswith("pergroup_"), "export.compressor=pergroup_*"),
    "golf_jax.quant.compress": (lambda c: not c.export.compressor.startswith("pergroup_"),
                                "export.compressor other than pergroup_*"),
    "golf_jax.train.qat": (lambda c: c.train.late_qat_threshold > 0, "train.late_qat_threshold > 0"),
    "golf_jax.quant.selfgen": (lambda c: c.export.calib_source == "selfgen", "export.calib_source=selfgen"),
}


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
