"""The report (golf_jax/report), TensorBoard events and the progress helper (golf_jax/core/progress.py).

The report runs on run dirs built here from small synthetic records (no training);
the README's smoke test (tests/test_readme.py) reports on a real one.
"""

from __future__ import annotations

import io
import json
import lzma
import math
import struct
import sys

import numpy as np
import pytest
from flax import serialization

from golf_jax.core import progress
from golf_jax.config import base_config
from golf_jax.data import prepare
from golf_jax.quant import container, rowquant
from golf_jax.quant.export import named_arrays, quantize_int8
from golf_jax.report import curves, quant_error, rundata
from golf_jax.report.tensorboard import Events, scalars
from golf_jax.report.write import write_report
from golf_jax.core.rundir import RunDir

# -- TensorBoard ------------------------------------------------------------------------


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit: the TFRecord framing's checksum, independent of tensorboardX."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path) -> list:
    """Every Event of a TFRecord event file, its length and data checksums verified."""
    from tensorboardX.proto import event_pb2

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        assert struct.unpack("<I", data[i + 8 : i + 12])[0] == _masked(_crc32c(data[i : i + 8]))
        body = data[i + 12 : i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] == _masked(_crc32c(body))
        out.append(event_pb2.Event.FromString(body))
        i += 16 + n
    return out


def test_scalars_tags():
    rec = {"time": 1.5, "step": 3, "loss": 2.5, "grad_norm": 1, "lr_scale": 0.5, "train_time_s": 4.0,
           "val_bpb": 1.2, "note": "x", "flag": True}
    assert scalars(rec) == {"train/loss": 2.5, "train/grad_norm": 1.0, "train/lr_scale": 0.5, "train/time_s": 4.0,
                            "val/bpb": 1.2}


def test_run_dir_metrics_reach_tensorboard_and_read_back(tmp_path):
    methods = dict(vars(RunDir))
    run = RunDir(tmp_path, "tb", base_config(), observers=(Events,))  # as python -m golf_jax.train does
    assert dict(vars(RunDir)) == methods  # an observer of this run dir: nothing patched on the class
    plain = RunDir(tmp_path, "plain", base_config())  # made beside it, without the observer
    plain.metrics({"step": 1, "loss": 6.5})
    plain.close()
    assert not (plain.path / "tensorboard").exists()
    run.metrics({"step": 1, "loss": 6.5, "grad_norm": 0.25, "lr_scale": 1.0, "train_time_s": 0.5})
    run.metrics({"step": 2, "loss": 5.0, "grad_norm": 0.5, "lr_scale": 0.75, "train_time_s": 1.0})
    run.metrics({"step": 2, "val_loss": 4.0, "val_bpb": 1.75})
    run.close()
    (events_file,) = (run.path / "tensorboard").iterdir()
    got = {(v.tag, e.step): v.simple_value for e in read_events(events_file) if e.HasField("summary")
           for v in e.summary.value}
    assert got == {("train/loss", 1): 6.5, ("train/grad_norm", 1): 0.25, ("train/lr_scale", 1): 1.0,
                   ("train/time_s", 1): 0.5, ("train/loss", 2): 5.0, ("train/grad_norm", 2): 0.5,
                   ("train/lr_scale", 2): 0.75, ("train/time_s", 2): 1.0, ("val/loss", 2): 4.0, ("val/bpb", 2): 1.75}
    assert len((run.path / "metrics.jsonl").read_text().splitlines()) == 3  # the jsonl keeps every record too
    run.close()  # a second close (pipeline.run's, then the caller's) is harmless


def test_a_run_dir_without_the_tensorboard_observer_writes_metrics_jsonl_only(tmp_path):
    run = RunDir(tmp_path, "packed", base_config())  # a submission passes no observer
    run.metrics({"step": 1, "loss": 6.5})
    run.close()
    assert sorted(p.name for p in run.path.iterdir()) == ["code_version.json", "config.json", "env.json", "log.txt",
                                                          "metrics.jsonl"]
    assert json.loads((run.path / "metrics.jsonl").read_text())["loss"] == 6.5


# -- progress ---------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    import tqdm.std

    c = _Clock()
    monkeypatch.setattr(tqdm.std, "time", c)  # tqdm's clock
    return c


def _stderr(monkeypatch, terminal: bool = False) -> io.StringIO:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    out = Stream()
    monkeypatch.setattr(sys, "stderr", out)
    return out


def test_progress_writes_whole_lines_when_not_a_terminal(monkeypatch, clock):
    out = _stderr(monkeypatch)  # a log file
    with progress.progress("eval sliding", "win", 1200, every=25.0) as bar:
        clock.now += 20.0  # a first batch that compiles
        bar.update(100)
        for _ in range(11):
            clock.now += 5.0
            bar.update(100)
    # a whole line every 25 s, none before the first 25 s nor at the exit; tqdm's smoothed ETA
    assert out.getvalue() == ("eval sliding:  17% 200/1200 [00:25<02:05,  8.00win/s]\n"
                              "eval sliding:  58% 700/1200 [00:50<00:33, 15.06win/s]\n"
                              "eval sliding: 100% 1200/1200 [01:15<00:00, 17.32win/s]\n")
    out.seek(0)
    out.truncate()
    for _ in progress.progress("gptq", "tensor", items=range(3)):
        clock.now += 1.0
    assert out.getvalue() == ""  # done within 30 s: not a line


def test_progress_is_a_tqdm_bar_on_a_terminal(monkeypatch):
    out = _stderr(monkeypatch, terminal=True)
    with progress.progress("calibration", "seq", 3) as bar:
        for _ in range(3):
            bar.update(1)
    assert out.getvalue().startswith("\rcalibration:   0%|") and " 0/3 " in out.getvalue()  # a bar, redrawn in place


def test_progress_over_items_counts_each_once_its_body_is_done(monkeypatch, clock):
    out = _stderr(monkeypatch)
    for _ in progress.progress("quantize", "tensor", items=["a", "b"], every=0.0):
        clock.now += 1.0
    assert out.getvalue().splitlines() == ["quantize:   0% 0/2 [00:00<?, ?tensor/s]",
                                           "quantize:  50% 1/2 [00:01<00:01,  1.00tensor/s]",
                                           "quantize: 100% 2/2 [00:02<00:00,  1.00tensor/s]"]


def test_prepare_progress_positions_reach_the_input_sizes(tmp_path):
    docs = [{"text": f"document {i} " * (i + 1)} for i in range(50)]
    plain = tmp_path / "a.jsonl"
    plain.write_text("".join(json.dumps(d) + "\n" for d in docs))
    packed = tmp_path / "b.jsonl.xz"
    packed.write_bytes(lzma.compress(plain.read_bytes()))
    got = list(prepare._chain_docs([plain, packed]))
    assert [t for t, _ in got] == [d["text"] for d in docs] * 2
    pos = [p for _, p in got]
    assert pos == sorted(pos) and pos[-1] == plain.stat().st_size + packed.stat().st_size


# -- series -----------------------------------------------------------------------------


def _config(mode: str = "iterations") -> dict:
    c = base_config()
    c.train.iterations, c.schedule.mode, c.schedule.warmdown_iters = 20, mode, 8
    c.opt.muon_momentum_warmup_start, c.opt.muon_momentum, c.opt.muon_momentum_warmup_steps = 0.85, 0.95, 10
    c.eval.stages = "roundtrip,sliding,ttt,slot"
    return json.loads(c.to_json_best_effort())


def _run(config: dict, train: list[dict], val: list[dict] | None = None, summary: dict | None = None):
    return rundata.Run(rundata.Path("/x/run-1"), config, summary or {},
                       rundata.columns(train, ("step", "loss", "grad_norm", "lr_scale", "train_time_s", "time")),
                       rundata.columns(val or [], ("step", "val_loss", "val_bpb", "time")))


def test_schedules_recomputed_from_the_config_match_the_formulas():
    train = [{"step": s, "loss": 3.0, "train_time_s": 0.1 * s} for s in range(1, 21)]  # no lr_scale recorded
    series = curves.schedules(_run(_config(), train))
    taken = np.arange(20)  # record s is the step taken at index s - 1
    want_lr = np.where(taken >= 12, (20 - taken) / 8, 1.0)  # linear to 0 over the last 8 of 20
    np.testing.assert_allclose(series["lr_scale"], want_lr)
    np.testing.assert_allclose(series["momentum"], 0.85 + 0.1 * np.minimum(taken / 10, 1.0))
    assert series["lr_source"] == "recomputed from config.json"
    recorded = [{**r, "lr_scale": 0.5} for r in train]
    assert curves.schedules(_run(_config("wallclock"), recorded))["lr_source"] == "recorded"


def test_val_placed_on_the_training_clock_and_train_bpb_estimate():
    train = [{"step": s, "loss": 3.0, "train_time_s": 2.0 * s} for s in range(1, 11)]
    val = [{"step": 0, "val_loss": 7.0, "val_bpb": 3.5}, {"step": 5, "val_loss": 4.0, "val_bpb": 2.0},
           {"step": 10, "val_loss": 3.0, "val_bpb": 1.5}]
    run = _run(_config(), train, val)
    np.testing.assert_allclose(curves.clock_at(run.val["step"], run), [0.0, 10.0, 20.0])
    assert curves.bpb_per_nat(run) == pytest.approx(0.5)


def test_block_bpb_and_slot_gain():
    blocks = {"nll": np.array([2 * math.log(2), 3 * math.log(2), 0.0]), "bytes": np.array([4.0, 2.0, 0.0])}
    np.testing.assert_allclose(curves.block_bpb(blocks), [0.5, 1.5, np.nan])
    slot = {"nll_with": np.array([10.0, 4.0]), "nll_without": np.array([12.0, 4.0]), "count": np.array([4, 2])}
    np.testing.assert_allclose(curves.slot_gain_bits(slot), [-0.5 / math.log(2), 0.0])
    y = np.arange(10.0) ** 2
    np.testing.assert_allclose(curves.rolling_mean(y, 3)[1:-1], np.convolve(y, np.ones(3) / 3, "valid"))


# -- quantization error and the whole report ---------------------------------------------


def _artifact(path) -> dict:
    """params.msgpack and an int8_zlib model.golfjax; returns the float params."""
    rng = np.random.default_rng(0)
    params = {"blocks_0": {"attn": {"c_q": {"kernel": rng.normal(size=(64, 80)).astype(np.float32)}}},
              "skip_weights": rng.normal(size=(4,)).astype(np.float32),
              "tok_emb": {"embedding": rng.normal(size=(300, 256)).astype(np.float32)}}
    (path / "params.msgpack").write_bytes(serialization.to_bytes(params))
    tensors = quantize_int8(named_arrays(params))
    (path / "model.golfjax").write_bytes(container.serialize(tensors, compressor="zlib"))
    return params


def test_quant_error_per_tensor(tmp_path):
    params = _artifact(tmp_path)
    rows = {r["name"]: r for r in quant_error.tensor_errors(tmp_path / "params.msgpack", tmp_path / "model.golfjax")}
    emb = params["tok_emb"]["embedding"]
    q, scale = rowquant.quantize_rows_int8(emb)
    want = np.linalg.norm(emb - q.astype(np.float64) * scale.astype(np.float64)[:, None]) / np.linalg.norm(emb)
    assert rows["tok_emb/embedding"]["kind"] == "int8"
    assert rows["tok_emb/embedding"]["rel_error"] == pytest.approx(want, rel=1e-6)
    k = params["blocks_0"]["attn"]["c_q"]["kernel"]
    want16 = np.linalg.norm(k - k.astype(np.float16)) / np.linalg.norm(k)
    assert rows["blocks_0/attn/c_q/kernel"]["kind"] == "fp16"
    assert rows["blocks_0/attn/c_q/kernel"]["rel_error"] == pytest.approx(want16, rel=1e-6)
    assert rows["skip_weights"]["rel_error"] == 0.0  # a control tensor stays fp32


def _synthetic_run(path) -> None:
    path.mkdir()
    (path / "config.json").write_text(json.dumps(_config()))
    train = [{"time": 1.0 + s, "step": s, "loss": 7.0 - 0.2 * s, "grad_norm": 1.0, "lr_scale": min(1.0, (20 - s) / 8),
              "train_time_s": 0.5 * s} for s in range(1, 21)]
    val = [{"time": 0.5 + s, "step": s, "val_loss": 7.0 - 0.2 * s, "val_bpb": 3.0 - 0.1 * s} for s in (0, 10, 20)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train + val))
    stage = lambda bpb, s, **x: {"val_bpb": bpb, "val_loss": 2 * bpb, "seconds": s, "tokens": 8192,  # noqa: E731
                                 "compliant": True, **x}
    summary = {
        "status": "ok", "steps": 20, "train_time_s": 10.0, "averaging": "live", "pre_quant_val_bpb": 1.0,
        "late_qat_step": 15, "weight_bytes": 900_000, "code_bytes": 60_000, "artifact_bytes": 960_000,
        "export_format": "int8_zlib", "compressor": "zlib", "final_stage": "slot", "val_bpb": 0.97,
        "val_loss": 1.94, "compliance": "val_bpb (official)", "noncompliance": [],
        "eval": {"roundtrip": stage(1.01, 1.0), "sliding": stage(0.99, 2.0), "slot": stage(0.97, 4.0, mode="context",
                 slot_gain_bpb=-0.02), "ttt": stage(0.98, 3.0, mode="score_first")},
        "stage_seconds": {"audit": 5.0, "data": 0.5, "eval": 10.0, "export": 1.0, "fit": 12.0},
        "eval_budget": {"seconds": 16.0, "budget_seconds": 600.0, "fits": True, "hardware": "1xcpu"},
        "audit": {"verdict": "PASS", "seconds": 5.0, "checks": {"flip test": "PASS: all bit-identical"}},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    np.save(path / "blocks_ttt.npy", np.tile([2048 * 1.4, 2048.0, 4096.0], (4, 1)))
    np.save(path / "blocks_sliding.npy", np.array([[8192 * 1.4, 8192.0, 16384.0]]))  # one block: no plot
    n = 60
    np.savez(path / "slot_windows.npz", first_target=np.arange(n) * 64, count=np.full(n, 64),
             nll_with=np.full(n, 100.0), nll_without=np.full(n, 101.0), delta_norm=np.linspace(0, 2, n),
             iterations=np.ones(n), evaluations=np.ones(n))
    _artifact(path)


def test_report_writes_every_plot_and_the_summary(tmp_path):
    _synthetic_run(tmp_path / "run")
    files, notes = write_report(tmp_path / "run")
    out = tmp_path / "run" / "report"
    assert notes == []
    assert sorted(f.name for f in files) == ["chunks_ttt.png", "curves.png", "quant_error.png", "schedules.png",
                                             "slot_windows.png", "summary.md"]
    for f in files:
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000, f
    md = (out / "summary.md").read_text()
    assert "| score | **0.9700** bpb (slot), val_bpb (official) |" in md
    assert f"960,000 B = weights 900,000 + code 60,000 (budget {base_config().export.budget_bytes:,}" in md
    assert "## Audit: PASS" in md and "| flip test | PASS: all bit-identical |" in md
    # stages in the order they ran, not summary.json's sorted keys
    stages = md[md.index("## Stages") :]
    assert stages.index("| data |") < stages.index("| fit |") < stages.index("| export |") < stages.index(
        "| eval |") < stages.index("| audit |")
    assert md.index("| roundtrip | 1.0100") < md.index("| sliding |") < md.index("| ttt |") < md.index("| slot |")
    for f in files[:-1]:
        assert f"]({f.name})" in md


def test_report_skips_what_a_run_does_not_have(tmp_path):
    run = tmp_path / "run"
    _synthetic_run(run)
    for name in ("blocks_ttt.npy", "slot_windows.npz", "params.msgpack"):
        (run / name).unlink()
    files, notes = write_report(run, tmp_path / "out")
    assert sorted(f.name for f in files) == ["curves.png", "schedules.png", "summary.md"]
    assert len(notes) == 3 and any("TTT" in n for n in notes) and any("SLOT" in n for n in notes)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## Not in this report" in md and "| audit | PASS (5 s) |" in md
    summary = json.loads((run / "summary.json").read_text())
    del summary["audit"]
    (run / "summary.json").write_text(json.dumps(summary))
    write_report(run, tmp_path / "out")
    assert "| audit | not run" in (tmp_path / "out" / "summary.md").read_text()


def test_report_cli_names_a_bad_run_dir(tmp_path, capsys):
    from golf_jax.report.__main__ import main

    assert main([str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run directory" in capsys.readouterr().err
    (tmp_path / "summary.json").write_text("{")
    assert main([str(tmp_path)]) == 2
    assert "summary.json: not valid JSON" in capsys.readouterr().err
