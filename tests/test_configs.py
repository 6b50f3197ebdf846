"""Every config file loads, locks, and rejects unknown keys."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import importlib.util

import pytest

from golf_jax.core.paths import REPO_ROOT

CONFIGS = sorted(p for p in (REPO_ROOT / "configs").glob("*.py") if p.name != "__init__.py")


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path: Path):
    cfg = _load(path)
    cfg.lock()
    for section in ("data", "model", "opt", "schedule", "train", "export"):
        assert section in cfg
    with pytest.raises(AttributeError):
        cfg.train.no_such_key = 1


def test_unknown_cli_key_is_an_error():
    proc = subprocess.run(
        [sys.executable, "-m", "golf_jax.train", "--config=configs/smoke.py", "--config.train.no_such_key=1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr


NONCOMPLIANT_SEEDS = {"causal_slot", "discriminative_ttt", "lbfgs_slot", "sp8192_prequant_ttt"}  # pre-quant TTT on val; #675's SLOT
SLOT_MODES = {"record": "context", "causal_slot": "pr1350", "lbfgs_slot": "pr675"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_eval_section_is_valid_and_labelled(path: Path):
    """Each config's eval stages pass validation; the seeds that train on val say so."""
    from golf_jax.eval import stages

    cfg = _load(path)
    stages.check_config(cfg)
    assert stages.stage_list(cfg.eval)[0] == "roundtrip"
    reasons = stages.noncompliance(cfg)
    assert bool(reasons) == (path.stem in NONCOMPLIANT_SEEDS), reasons


@pytest.mark.parametrize("stem", sorted(SLOT_MODES))
def test_seed_configs_select_their_slot(stem):
    from golf_jax.eval import stages

    cfg = _load(REPO_ROOT / "configs" / f"{stem}.py")
    assert "slot" in stages.stage_list(cfg.eval) and cfg.eval.slot.mode == SLOT_MODES[stem]


def test_variants_reproduce_their_seed_behind_a_flag():
    """`configs/record.py:pr1318` and `configs/causal_slot.py:1306` are explicit, and labelled."""
    import configs.causal_slot as causal_slot
    import configs.record as record
    from golf_jax.eval import stages

    ref = record.get_config("pr1318")
    stages.check_config(ref)
    why = " | ".join(stages.noncompliance(ref))
    for flag in ("eval.slot.mode=pr1318", "eval.ttt.carry", "window_rule=reference", "calib_source=val"):
        assert flag in why, why
    assert "lookahead" not in why  # #1318's TTT pass is score-first
    assert ref.eval.slot.bf16_add and ref.eval.slot.max_iter == 25 and ref.eval.slot.clamp == 5.0
    assert ref.eval.slot.ranks == 8 and not ref.eval.slot.torch_ls_budget  # 8 GPUs, torch 2.9.1
    c1306 = causal_slot.get_config("1306")
    stages.check_config(c1306)
    assert c1306.eval.slot.mode == "pr1306" and c1306.eval.slot.steps == 8
    assert any("eval.slot.mode=pr1306" in w for w in stages.noncompliance(c1306))
    with pytest.raises(ValueError, match="variant must be 'legal' or 'pr1318'"):
        record.get_config("pr9")


# Each enumerated key's allowed values live once, as a constant beside the check that reads them;
# golf_jax/config.py points at it ("# one of golf_jax.<module>.<NAME>" or "...<NAME>["key"]").
_POINTER = re.compile(r'^\s+([cea])\.([\w.]+) = .*#.*\bone of (golf_jax(?:\.\w+)+?)\.([A-Z_0-9]+)(?:\["(\w+)"\])?')
_SECTION = {"c": "", "e": "eval.", "a": "audit."}
# The settings under which a key is read at all (a stage listed, its feature on, its format).
_CONTEXT = {
    "model.parallel_mode": {"model.parallel_residual_start": 1},
    "export.compressor": {"export.format": "gptq_int6"},
    "export.embed_quant": {"export.format": "gptq_int6"},
    "eval.slot.mode": {"eval.stages": "roundtrip,slot"},
    "eval.slot.solver": {"eval.stages": "roundtrip,slot"},
    "eval.prequant_ttt.freeze_scope": {"eval.prequant_ttt.mode": "flat"},
    "eval.prequant_ttt.depth_scope": {"eval.prequant_ttt.mode": "flat"},
}


def _pointers() -> dict[str, tuple[str, str, str | None]]:
    text = (REPO_ROOT / "golf_jax" / "config.py").read_text(encoding="utf-8")
    found = {}
    for line in text.splitlines():
        m = _POINTER.match(line)
        if m:
            found[_SECTION[m[1]] + m[2]] = (m[3], m[4], m[5])
    return found


POINTERS = _pointers()


def _allowed(key: str) -> tuple:
    module, name, entry = POINTERS[key]
    value = getattr(importlib.import_module(module), name)  # the pointer names a real constant
    return tuple(value[entry] if entry else value)


def _with(key: str, value):
    from configs import smoke

    cfg = smoke.get_config()
    for k, v in {**_CONTEXT.get(key, {}), key: value}.items():
        *path, leaf = k.split(".")
        node = cfg
        for p in path:
            node = node[p]
        node[leaf] = v
    return cfg


def test_config_points_at_allowed_values_instead_of_listing_them():
    text = (REPO_ROOT / "golf_jax" / "config.py").read_text(encoding="utf-8")
    assert len(POINTERS) >= 30, sorted(POINTERS)
    listed = [line.strip() for line in text.splitlines() if re.search(r'#.*"\w+"[^#]* \| ', line)]
    assert not listed, f"config.py lists allowed values; point at the constant instead: {listed}"
    for key in POINTERS:
        assert _allowed(key), key


@pytest.mark.parametrize("key", sorted(POINTERS))
def test_each_allowed_value_passes_and_no_other(key):
    """Every value of the constant config.py points at passes the config check; a value outside
    fails, with one line naming the key and every allowed value."""
    from golf_jax import pipeline
    from golf_jax.core.errors import UserError

    for value in _allowed(key):
        pipeline.check_config(_with(key, value), 8)
    with pytest.raises(UserError) as caught:
        pipeline.check_config(_with(key, "no_such_value"), 8)
    message = str(caught.value)
    assert f"{key}='no_such_value'" in message and "\n" not in message, message
    for value in _allowed(key):
        assert repr(value) in message, (value, message)


MODE_TABLES = ("golf_jax.eval.ttt.score_first", "golf_jax.eval.slot.stage", "golf_jax.eval.ttt.prequant")


@pytest.mark.parametrize("module", MODE_TABLES)
def test_modes_carry_one_line_descriptions_in_errors_and_docs(module):
    """Modes named after PRs (pr1318, pr675, ...) say what they reproduce: one line each, shown
    by the error for a bad mode and by docs/reference-notes.md's table."""
    from golf_jax.config import described

    modes = importlib.import_module(module).MODES
    docs = (REPO_ROOT / "docs" / "reference-notes.md").read_text(encoding="utf-8")
    for mode, what in modes.items():
        assert what and "\n" not in what and len(what) <= 160, (mode, what)
        if re.fullmatch(r"pr\d+", mode):
            assert f"PR #{mode[2:]}" in what, (mode, what)
        assert f"| `{mode}` | {what} |" in docs, f"docs/reference-notes.md#modes lacks {module} {mode!r}"
    assert all(f"{m!r} ({w})" in described(modes) for m, w in modes.items())
