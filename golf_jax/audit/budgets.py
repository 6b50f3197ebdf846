"""The audit's budget and data-access checks (the challenge's README; docs/reference-notes.md#rules,
docs/reference-notes.md#checker C4(e–f), C6).

* artifact: code bytes (the submission script, golf_jax/submission/codebytes.py) + compressed
  weights ≤ 16,000,000 decimal bytes;
* time: training ≤ 600 s (GPTQ calibration on training data counts: it must fit in
  export.reserve_seconds) and evaluation ≤ 600 s, from a run's summary.json, only
  when it was measured on the target hardware (audit.target_hardware, 8×H100);
* data access after the training clock: no GPTQ calibration on val, none on training
  data outside reserved seconds;
* pre-quant TTT: weights trained on val before it is scored fail outright.
"""

from __future__ import annotations

import re
from pathlib import Path

from golf_jax.submission import codebytes
from golf_jax.audit.checks import FAIL, PASS, SKIP, Check
from golf_jax.quant.hessian import fits_reserve

ARTIFACT_BYTES = 16_000_000
TRAIN_SECONDS = 600.0
EVAL_SECONDS = 600.0


def artifact(path: str | Path | None, cfg=None) -> Check:
    """Weights + the submission script packed for `cfg` (None: with every gated module)."""
    if path is None:
        return Check("artifact bytes", SKIP, "no artifact given (--artifact RUN_DIR/model.golfjax)")
    weights = Path(path).stat().st_size
    code = codebytes.code_bytes(cfg)
    total = weights + code
    details = {"weight_bytes": weights, "code_bytes": code, "total_bytes": total, "limit": ARTIFACT_BYTES}
    line = f"{total:,} B = weights {weights:,} + code {code:,} (limit {ARTIFACT_BYTES:,})"
    return Check("artifact bytes", PASS if total <= ARTIFACT_BYTES else FAIL,
                 line if total <= ARTIFACT_BYTES else f"{line}: over by {total - ARTIFACT_BYTES:,}", details)


def on_target(hardware: str, target: str) -> bool:
    """'8xNVIDIA H100 80GB HBM3' is on target '8xH100': the same count, the model named in it."""
    h = re.match(r"\s*(\d+)\s*x\s*(.+)", str(hardware), re.I)
    t = re.match(r"\s*(\d+)\s*x\s*(.+)", str(target), re.I)
    if not h or not t:
        return str(hardware).strip().lower() == str(target).strip().lower()
    return h.group(1) == t.group(1) and t.group(2).strip().lower() in h.group(2).lower()


def timings(cfg, summary: dict | None) -> Check:
    target = cfg.audit.target_hardware
    if not summary:
        return Check("time budgets", SKIP, f"no run summary with timings on {target} (--summary RUN_DIR/summary.json)")
    hardware = summary.get("eval_budget", {}).get("hardware", "unknown")
    train_s = summary.get("train_time_s")
    eval_s = summary.get("eval_budget", {}).get("seconds")
    calib_s = summary.get("stage_seconds", {}).get("calibrate", 0.0) if _calibrates_on_train(cfg) else 0.0
    details = {"hardware": hardware, "target": target, "train_seconds": train_s, "calibration_seconds": calib_s,
               "eval_seconds": eval_s, "limits": [TRAIN_SECONDS, EVAL_SECONDS]}
    if not on_target(hardware, target):
        return Check("time budgets", SKIP, f"timings were measured on {hardware}, not {target}", details)
    if train_s is None and eval_s is None:
        return Check("time budgets", SKIP, "the summary has neither train_time_s nor eval_budget.seconds", details)
    over, parts = [], []
    if train_s is not None:
        train_total = float(train_s) + float(calib_s)
        parts.append(f"training {train_total:.1f} s" + (f" (incl. {calib_s:.1f} s of calibration)" if calib_s else ""))
        if train_total > TRAIN_SECONDS:
            over.append(f"{parts[-1]} > {TRAIN_SECONDS:.0f}")
    else:
        parts.append("training not timed in this summary")
    if eval_s is not None:
        parts.append(f"evaluation {float(eval_s):.1f} s")
        if float(eval_s) > EVAL_SECONDS:
            over.append(f"evaluation {float(eval_s):.1f} s > {EVAL_SECONDS:.0f}")
    else:
        parts.append("evaluation not timed in this summary")
    return Check("time budgets", FAIL if over else PASS, "; ".join(over) if over else ", ".join(parts) + f" on {hardware}",
                 details)


def _calibrates_on_train(cfg) -> bool:
    return cfg.export.format == "gptq_int6" and cfg.export.calib_source == "train"


def data_access(cfg, summary: dict | None = None) -> Check:
    """No val or training-data reads after the training clock stops, except the evaluation."""
    ex = cfg.export
    details = {"export_format": ex.format, "calib_source": ex.calib_source, "reserve_seconds": ex.reserve_seconds}
    if ex.format != "gptq_int6":
        return Check("data access", PASS, f"export.format={ex.format} reads no data after training", details)
    if ex.calib_source == "val":
        return Check("data access", FAIL, "GPTQ calibration reads val (export.calib_source=val)", details)
    if ex.calib_source == "selfgen":
        return Check("data access", PASS, "GPTQ calibrates on sequences the model generates (no data read)", details)
    if ex.reserve_seconds <= 0:
        return Check("data access", FAIL, "GPTQ calibration reads training data after the training clock stops "
                     "(export.reserve_seconds=0: reserve the calibration's seconds inside the 600 s)", details)
    calib_s = (summary or {}).get("stage_seconds", {}).get("calibrate")
    if calib_s is not None and on_target((summary or {}).get("eval_budget", {}).get("hardware", ""),
                                         cfg.audit.target_hardware):
        details["calibration_seconds"] = calib_s
        if not fits_reserve(calib_s, ex.reserve_seconds):
            return Check("data access", FAIL, f"GPTQ calibration took {calib_s:.1f} s on training data, more than "
                         f"the {ex.reserve_seconds:.1f} s reserved (export.reserve_seconds)", details)
        return Check("data access", PASS, f"GPTQ calibration ({calib_s:.1f} s) fits its {ex.reserve_seconds:.1f} s "
                     "reserve", details)
    return Check("data access", PASS, f"GPTQ calibration on training data inside a {ex.reserve_seconds:.1f} s "
                 "reserve (not timed on the target hardware)", details)


def prequant_ttt(cfg) -> Check:
    p = cfg.eval.prequant_ttt
    if p.mode == "off":
        return Check("pre-quant TTT", PASS, "off: no weights are trained on val before it is scored")
    return Check("pre-quant TTT", FAIL, f"eval.prequant_ttt.mode={p.mode}: {p.epochs} epochs on val before scoring it",
                 {"mode": p.mode, "epochs": int(p.epochs)})


def disjoint(data_dir: str | Path | None) -> Check:
    """No document is both in the run's train and val shards (golf_jax/data/disjoint.py)."""
    from golf_jax.data import disjoint as disjoint_lib

    if data_dir is None:
        return Check("train/val disjoint", SKIP, "no data folder to check (no data.json beside the artifact, and "
                     "data.dir is unset)")
    if not Path(data_dir).is_dir():
        return Check("train/val disjoint", SKIP, f"the run's data folder {data_dir} is not on this machine")
    got = disjoint_lib.check(data_dir)
    status = {"disjoint": PASS, "overlap": FAIL, "unknown": SKIP}[got["status"]]
    how = {"manifest": " (prepare's recorded hashes)", "shards": " (hashed from the shards)"}.get(got["from"], "")
    return Check("train/val disjoint", status, f"{data_dir}: {got['why']}{how}", {**got, "data_dir": str(data_dir)})
