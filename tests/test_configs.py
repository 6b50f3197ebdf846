"""Every config file loads, locks, and rejects unknown keys."""

import subprocess
import sys
from pathlib import Path

import importlib.util

import pytest

from golf_jax.paths import REPO_ROOT

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


NONCOMPLIANT_SEEDS = {"causal_slot", "discriminative_ttt"}  # pre-quant TTT on val


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_eval_section_is_valid_and_labelled(path: Path):
    """Each config's eval stages pass validation; the seeds that train on val say so."""
    from golf_jax.eval import stages

    cfg = _load(path)
    stages.check_config(cfg)
    assert stages.stage_list(cfg.eval)[0] == "roundtrip"
    reasons = stages.noncompliance(cfg)
    assert bool(reasons) == (path.stem in NONCOMPLIANT_SEEDS), reasons
