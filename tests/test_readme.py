"""The README's quickstart: its train command runs (shortened) and lowers the loss."""

import json
import os
import re
import shlex
import subprocess
import sys

from golf_jax.core.paths import REPO_ROOT


def quickstart_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_install_and_test_commands():
    install_and_train, install_and_test = quickstart_commands()[:2]
    assert install_and_train.startswith("pip install -e . && python -m golf_jax.train --config=")
    assert install_and_test.endswith("python -m pytest -q")
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[dev]"' in ci and "python -m pytest -q" in ci


def test_readme_train_command_runs_and_lowers_the_loss(tmp_path):
    train_cmd = quickstart_commands()[0].split("&&", 1)[1]
    argv = shlex.split(train_cmd)
    assert argv[:3] == ["python", "-m", "golf_jax.train"]
    argv = [sys.executable, *argv[1:], "--config.train.iterations=40", f"--config.train.run_dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # as a user runs it: 1 CPU device
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"final val_bpb \(official\): \d+\.\d+ \(roundtrip\) artifact_bytes [\d,]+", proc.stdout)
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["audit"]["verdict"] == "PASS"
    assert 0 < summary["roundtrip_val_bpb"] < 5 and summary["artifact_bytes"] > summary["weight_bytes"] > 0
    assert summary["code_bytes"] == (run_dir / "submission.py").stat().st_size  # the counted code, kept
    losses = [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    assert losses[0] > 6.5  # ≈ ln(1024) at init
    assert losses[-1] < losses[0] - 1.5
    for name in ("config.json", "code_version.json", "env.json", "log.txt", "model.golfjax", "params.msgpack",
                 "submission.py"):
        assert (run_dir / name).exists(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("lr_scale" in r for r in records if "loss" in r)
    assert [p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir()] == [True]
    from golf_jax.report.write import write_report  # python -m golf_jax.report on the real run dir

    files, _ = write_report(run_dir)
    assert {"curves.png", "schedules.png", "quant_error.png", "summary.md"} <= {f.name for f in files}
