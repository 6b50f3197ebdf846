"""Finished runs as a record folder needs them: what each scored, and why it cannot count.

A run directory (golf_jax/core/rundir.py, golf_jax/pipeline.py) holds config.json,
summary.json (scores, artifact bytes, the audit's verdict and checks), env.json,
code_version.json, data.json, log.txt and submission.py (the counted code).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ml_collections

from golf_jax.audit.budgets import ARTIFACT_BYTES
from golf_jax.config import check_run_keys
from golf_jax.data import disjoint
from golf_jax.pipeline import OFFICIAL

# Keys that may differ between the seeds of one submission: where a run wrote, how it logged.
RUN_KEYS = ("seed", "train.run_dir", "train.run_name", "train.profile_steps", "train.checkpoint_every",
            "train.resume_from", "train.log_every")


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict
    summary: dict
    env: dict
    code_version: dict
    data: dict

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def val_loss(self) -> float:
        return float(self.summary["val_loss"])

    @property
    def val_bpb(self) -> float:
        return float(self.summary["val_bpb"])


def _json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise ValueError(f"{path}: missing; give run directories written by `python -m golf_jax.train` "
                             "(runs/<name>-<timestamp>/)")
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({e}); the run directory is damaged") from e


def load_run(path: str | Path) -> Run:
    """A run directory that has a score, a log and its packed script."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory; give run directories (runs/<name>-<timestamp>/)")
    config, summary = _json(path / "config.json", True), _json(path / "summary.json", True)
    check_run_keys(ml_collections.ConfigDict(config), path / "config.json")  # the folder's script reads it as is
    for key in ("val_loss", "val_bpb"):
        if not isinstance(summary.get(key), (int, float)):
            raise ValueError(f"{path / 'summary.json'}: no {key} (status {summary.get('status')!r}"
                             f"{': ' + summary['error'] if summary.get('error') else ''}); a run without a score "
                             "cannot be submitted: leave it out")
    for name in ("log.txt", "submission.py"):
        if not (path / name).is_file():
            raise ValueError(f"{path / name}: missing; the run did not reach its export, leave it out")
    return Run(path, config, summary, _json(path / "env.json", False), _json(path / "code_version.json", False),
               _json(path / "data.json", False))


def blockers(run: Run) -> list[str]:
    """Why this run's score cannot count toward a record (empty: it can)."""
    s, why = run.summary, []
    if s.get("status") != "ok":
        why.append(f"the run did not finish (status {s.get('status')!r}: {s.get('error', '')})")
    if s.get("compliance") != OFFICIAL:
        reasons = list(s.get("noncompliance") or [])
        if "audit" not in s:
            reasons.append("not audited (audit.enabled=False)")
        elif s["audit"].get("verdict") != "PASS" and not any(r.startswith("audit") for r in reasons):
            reasons.append(f"audit verdict {s['audit'].get('verdict')}")
        why.append(f"its score is {s.get('compliance')!r}: " + "; ".join(reasons))
    c = flatten(run.config)
    if c.get("data.source") != "dir":
        why.append(f"data.source={c.get('data.source')}: trained and scored on golf_jax's generated corpus, not the "
                   "challenge's FineWeb shards")
    if c.get("eval.max_tokens"):
        why.append(f"scored on the first {c['eval.max_tokens']:,} val tokens (eval.max_tokens), not the whole split")
    overlap = _overlap(run)
    if overlap:
        why.append(overlap)
    size = s.get("artifact_bytes")
    if not isinstance(size, int):
        why.append("summary.json has no artifact_bytes")
    elif size > ARTIFACT_BYTES:
        why.append(f"artifact {size:,} B is over the {ARTIFACT_BYTES:,} B limit by {size - ARTIFACT_BYTES:,}: "
                   "not eligible for a 16 MB track")
    timing = ((s.get("audit") or {}).get("checks") or {}).get("time budgets", "")
    if not timing.startswith("PASS"):
        why.append(f"the 600 s training and evaluation budgets are not shown on 8xH100 "
                   f"({timing or 'no audit time check'})")
    return why


def _overlap(run: Run) -> str | None:
    """Train and val share documents (from the run's recorded data folder, data.json)."""
    where = run.data.get("data_dir")
    if not where or not Path(where).is_dir():
        return None
    got = disjoint.check(where)
    if got["status"] != "overlap":
        return None
    return (f"train and val share documents: {got['why']} ({where}); a model trained on val text is scored on "
            "its own training data")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def check_same_submission(runs: Sequence[Run]) -> None:
    """The runs are seeds of one submission: distinct seeds, one config, one packed script."""
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        dup = next(s for s in seeds if seeds.count(s) > 1)
        raise ValueError(f"seed {dup} appears twice ({', '.join(str(r.path) for r in runs if r.seed == dup)}); "
                         "a multi-seed statistic needs distinct seeds")
    first, script = flatten(runs[0].config), (runs[0].path / "submission.py").read_bytes()
    for r in runs[1:]:
        cfg = flatten(r.config)
        diff = sorted(k for k in first.keys() | cfg.keys() if first.get(k) != cfg.get(k) and k not in RUN_KEYS)
        if diff:
            raise ValueError(f"{r.path}/config.json differs from {runs[0].path}/config.json in "
                             + ", ".join(f"{k} ({first.get(k)!r} vs {cfg.get(k)!r})" for k in diff[:5])
                             + ": the runs of one submission differ only in seed")
        if (r.path / "submission.py").read_bytes() != script:
            raise ValueError(f"{r.path}/submission.py differs from {runs[0].path}/submission.py: the runs packed "
                             "different code; rerun the seeds from one commit")
