"""One folder of the challenge's `records/`, in the layout of the merged record folders.

upstream records/track_10min_16mb/<date>_<name>_<bpb>/ holds README.md (results,
techniques, how to reproduce), submission.json (the fields of e.g. #1855's: author,
github_id, name, blurb, date, track, val_loss, val_bpb, their stds, seeds,
seed_results, the comparison to the leaderboard, artifact bytes, hardware, ...), a
train log per seed, train_gpt.py (it must run inside the folder) and requirements.txt.
Here train_gpt.py is the run's self-extracting submission script (its length is the
counted code bytes) and config_seed<S>.json the config it trains from. A folder that
is not a record goes to track_non_record_16mb/ and says why on its first lines.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from golf_jax.config import base_config
from golf_jax.records.runs import RUN_KEYS, Run, flatten
from golf_jax.records.stats import ALPHA, MARGIN_NATS, RecordTest

TRACKS = {True: ("track_10min_16mb", "10min_16mb"), False: ("track_non_record_16mb", "non_record_16mb")}
# Settings that say where a run read and wrote, not what it trained: left out of the technique table.
NOT_TECHNIQUES = RUN_KEYS + ("name", "data.dir", "data.tokenizer", "data.prefetch", "train.val_every",
                             "eval.hardware", "model.attention_impl")


@dataclass(frozen=True)
class Meta:
    name: str
    author: str
    github_id: str
    blurb: str
    date: str  # YYYY-MM-DD


def folder_name(meta: Meta, record: bool, mean_bpb: float) -> str:
    """<date>_<name>[_<bpb>], as upstream names its folders."""
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", meta.name).strip("_")
    return f"{meta.date}_{slug}_{mean_bpb:.4f}" if record else f"{meta.date}_{slug}"


def settings(config: dict) -> list[tuple[str, object, object]]:
    """(key, value, golf_jax's baseline value) for every setting the config changes: its techniques."""
    base = flatten(base_config().to_dict())
    skip = lambda k: k in NOT_TECHNIQUES or k.startswith("audit.")  # noqa: E731
    return [(k, v, base.get(k)) for k, v in sorted(flatten(config).items()) if not skip(k) and base.get(k) != v]


def headline(config: dict) -> str:
    """The architecture, export and evaluation in one line (submission.json technique_summary)."""
    c = {**flatten(base_config().to_dict()), **flatten(config)}  # a run of an older schema: baseline values
    parts = [f"{c['model.num_layers']}L {c['model.model_dim']}d {c['model.num_heads']}H/{c['model.num_kv_heads']}KV",
             f"vocab {c['model.vocab_size']}", f"MLP {c['model.mlp_mult']}x {c['model.mlp_activation']}"]
    if c["model.num_loops"]:
        parts.append(f"layers {c['model.loop_start']}-{c['model.loop_end']} looped x{c['model.num_loops'] + 1}")
    parts.append(f"{c['opt.muon_variant']} ({c['opt.muon_ns_coeffs']} NS)")
    parts.append(f"export {c['export.format']}" + (f" + {c['export.compressor']}" if c["export.compressor"] else ""))
    stages = [s.strip() for s in str(c["eval.stages"]).split(",")]
    parts.append("eval " + ", ".join(f"ttt ({c['eval.ttt.mode']})" if s == "ttt" else s for s in stages))
    return "; ".join(parts)


def _num(x, digits: int = 8):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def seed_result(run: Run) -> dict:
    s = run.summary
    steps, train_s = s.get("steps"), s.get("train_time_s")
    return {"val_loss": _num(s["val_loss"]), "val_bpb": _num(s["val_bpb"]), "artifact_bytes": s.get("artifact_bytes"),
            "bytes_code": s.get("code_bytes"), "steps": steps,
            "step_avg_ms": _num(1000 * train_s / steps, 1) if steps and train_s else None,
            "train_time_s": _num(train_s, 1), "eval_time_s": _num((s.get("eval_budget") or {}).get("seconds"), 1),
            "pre_quant_val_bpb": _num(s.get("pre_quant_val_bpb")),
            "roundtrip_val_bpb": _num(s.get("roundtrip_val_bpb")),
            "final_stage": s.get("final_stage"), "compliance": s.get("compliance"),
            "audit": (s.get("audit") or {}).get("verdict"), "run_dir": run.path.name}


def _mean(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return sum(xs) / len(xs) if xs else None


def submission_json(runs: Sequence[Run], test: RecordTest, reasons: Sequence[str], meta: Meta) -> dict:
    record = not reasons
    results = {str(r.seed): seed_result(r) for r in runs}
    sizes = [r.summary.get("artifact_bytes") for r in runs]
    codes = [r.summary.get("code_bytes") for r in runs]
    stat = test.to_json()
    return {
        "author": meta.author, "github_id": meta.github_id, "name": meta.name, "blurb": meta.blurb,
        "date": meta.date, "track": TRACKS[record][1], "record": record, "non_record_reasons": list(reasons),
        "val_loss": _num(test.mean_loss), "val_bpb": _num(test.mean_bpb),
        "val_loss_std": _num(test.std_loss), "val_bpb_std": _num(test.std_bpb),
        "seeds": [r.seed for r in runs], "seed_results": results,
        "comparison_baseline_bpb": test.sota_bpb,
        "delta_vs_leaderboard_bpb": _num(test.delta_bpb), "delta_vs_leaderboard_nats": _num(test.delta_nats),
        "t_statistic": stat["t"], "p_value": stat["p"],
        "statistics": {"test": f"one-sided one-sample t-test (scipy.stats.ttest_1samp, alternative='less') of the "
                               f"seeds' val_loss against SOTA - {MARGIN_NATS} nats",
                       "unit": "nats per token (val_loss)",
                       "std": "sample std, ddof=1", "margin_nats": MARGIN_NATS, "alpha": ALPHA, **stat},
        "artifact_bytes_mean": None if _mean(sizes) is None else round(_mean(sizes)),
        "artifact_bytes_max": max(sizes, key=lambda x: x or 0),
        "bytes_total": max(sizes, key=lambda x: x or 0), "bytes_code": max(codes, key=lambda x: x or 0),
        "train_steps_mean": _num(_mean([x["steps"] for x in results.values()]), 2),
        "step_avg_ms_mean": _num(_mean([x["step_avg_ms"] for x in results.values()]), 1),
        "hardware": ", ".join(sorted({str((r.summary.get("eval_budget") or {}).get("hardware")) for r in runs})),
        "python_version": runs[0].env.get("python"), "jax_version": runs[0].env.get("jax"),
        "technique_summary": headline(runs[0].config),
        "code_version": {k: runs[0].code_version.get(k) for k in ("git_commit", "git_dirty", "package_sha256")},
    }


def _fmt(x, spec: str = ".5f") -> str:
    return "–" if x is None else f"{x:{spec}}" if isinstance(x, (int, float)) else str(x)


def readme(runs: Sequence[Run], test: RecordTest, reasons: Sequence[str], meta: Meta, files: Sequence[str]) -> str:
    sub = submission_json(runs, test, reasons, meta)
    record, n = not reasons, len(runs)
    seeds = f"{n}-seed mean, std {test.std_bpb:.5f}" if n > 1 else "one seed"
    lines = [f"# {'Record' if record else 'Non-record submission'}: {meta.name}", "",
             f"**val_bpb: {test.mean_bpb:.5f}** ({seeds}) | val_loss {test.mean_loss:.5f} nats | "
             f"artifact ≤ {_fmt(sub['artifact_bytes_max'], ',')} B | {sub['hardware']}", ""]
    if meta.blurb:
        lines += [meta.blurb, ""]
    if record:
        lines += [f"**A record:** {-test.delta_bpb:.5f} bpb / {-test.delta_nats:.5f} nats better than the SOTA "
                  f"{test.sota_bpb} bpb, at least {MARGIN_NATS} nats at p = {test.p:.3g} < {ALPHA}; every run passed "
                  "the compliance audit, fits the 16,000,000-byte artifact limit and the 600 s budgets on 8xH100.", ""]
    else:
        lines += ["**Not a record**, because:", ""] + [f"- {r}" for r in reasons] + [""]
    lines += ["## Results", "",
              "| Seed | Steps | ms/step | Pre-quant val_bpb | Round-trip val_bpb | **Final val_bpb** | val_loss (nats) "
              "| Artifact (B) | Train (s) | Eval (s) | Audit |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for seed, x in sub["seed_results"].items():
        lines.append(f"| {seed} | {_fmt(x['steps'], ',')} | {_fmt(x['step_avg_ms'], '.1f')} | "
                     f"{_fmt(x['pre_quant_val_bpb'])} | {_fmt(x['roundtrip_val_bpb'])} | **{_fmt(x['val_bpb'])}** "
                     f"({x['final_stage']}) | {_fmt(x['val_loss'])} | {_fmt(x['artifact_bytes'], ',')} | "
                     f"{_fmt(x['train_time_s'], '.1f')} | {_fmt(x['eval_time_s'], '.1f')} | {x['audit'] or 'none'} |")
    lines += [f"| **Mean** | {_fmt(sub['train_steps_mean'], ',.0f')} | {_fmt(sub['step_avg_ms_mean'], '.1f')} | | | "
              f"**{test.mean_bpb:.5f}** | {test.mean_loss:.5f} | {_fmt(sub['artifact_bytes_mean'], ',.0f')} | | | |",
              ""]
    p = "–" if sub["p_value"] is None else f"{test.p:.3g}"
    t = "–" if sub["t_statistic"] is None else f"{test.t:.3f}"
    lines += ["## Statistics", "",
              f"The rule: beat the SOTA by at least {MARGIN_NATS} nats at p < {ALPHA}. Nats are val_loss "
              f"(cross-entropy per token), so the test runs on val_loss. The SOTA {test.sota_bpb} bpb is "
              f"{test.sota_loss:.5f} nats on this val set: val_loss / val_bpb = ln 2 · bytes / tokens = "
              f"{test.nats_per_bpb:.6f}, the same for every seed.", "",
              f"- H0: mean val_loss ≥ {test.threshold_loss:.5f} (SOTA − {MARGIN_NATS} nats); H1: below it.",
              f"- One-sided one-sample t-test (scipy.stats.ttest_1samp): n = {n}, mean {test.mean_loss:.5f}, "
              f"sample std {_fmt(sub['val_loss_std'])} (ddof = 1), t = {t}, df = {test.df}, **p = {p}**.",
              f"- Against the SOTA: {test.delta_bpb:+.5f} bpb, {test.delta_nats:+.5f} nats.", "",
              "## Compliance", ""]
    for r in runs:
        s = r.summary
        lines.append(f"- seed {r.seed}: {s.get('compliance')}; audit {(s.get('audit') or {}).get('verdict', 'not run')}"
                     + "".join(f"; {x}" for x in s.get("noncompliance") or []))
        for name, line in ((s.get("audit") or {}).get("checks") or {}).items():
            lines.append(f"  - {name}: {line}")
    lines += ["", "## Techniques", "", sub["technique_summary"], "",
              "Every setting that differs from golf_jax's baseline (`golf_jax/config.py`):", "",
              "| setting | value | baseline |", "|---|---|---|"]
    lines += [f"| `{k}` | `{v!r}` | `{b!r}` |" for k, v, b in settings(runs[0].config)]
    lines += ["", "## Reproduction", "", "```bash", "pip install -r requirements.txt"]
    lines += [f"python train_gpt.py train --config_json=config_seed{r.seed}.json" for r in runs]
    lines += ["# the eval stages on the artifact a train run wrote (RUN_DIR is that run's directory):",
              f"python train_gpt.py eval --artifact=RUN_DIR/model.golfjax --config_json=config_seed{runs[0].seed}.json",
              "```", ""]
    lines += _in_tree(runs) + _data(runs[0]) + ["## Files", ""] + [f"- `{f}`" for f in files] + [""]
    return "\n".join(lines)


def _in_tree(runs: Sequence[Run]) -> list[str]:
    cv = runs[0].code_version
    dirty = " (with uncommitted changes)" if cv.get("git_dirty") else ""
    where = f"golf_jax at commit `{cv.get('git_commit')}`{dirty}"
    cmds = []
    for r in runs:
        argv = r.env.get("argv") or []
        if argv and str(argv[0]).replace("\\", "/").endswith("golf_jax/train/__main__.py"):
            cmds.append("python -m golf_jax.train " + shlex.join(str(a) for a in argv[1:]))
    if not cmds:
        return []
    return [f"In a checkout of {where}, the runs were:", "", "```bash"] + cmds + ["```", ""]


def _data(run: Run) -> list[str]:
    c = {**flatten(base_config().to_dict()), **flatten(run.config)}
    if c["data.source"] != "dir":
        return ["The configs train on golf_jax's generated corpus (data.source=default), which the script rebuilds.",
                ""]
    lines = [f"The configs read the data from `data.dir` = `{c['data.dir']}` and `data.tokenizer` = "
             f"`{c['data.tokenizer']}`: edit them in config_seed*.json to where your copy is."]
    n_train = len(run.data.get("train_shards") or [])
    if c["model.vocab_size"] in (1024, 8192) and run.data.get("val_bytes") == "lut":
        lines.append(f"The challenge's shards: `python -m golf_jax.data.download --variant=sp{c['model.vocab_size']} "
                     f"--train_shards={n_train}`.")
    return lines + [""]


def requirements(config: dict) -> str:
    """golf_jax's dependencies, pinned to the installed versions (the script carries golf_jax itself)."""
    from importlib import metadata

    names = [re.split(r"[<>=!~ ;\[(]", r, maxsplit=1)[0] for r in metadata.requires("golf_jax") or []
             if "extra ==" not in r]
    if flatten(config).get("export.compressor") == "pergroup_zpaq":
        names.append("zpaq")
    lines = ["# the versions that wrote this folder; on GPUs add jax[cuda12] or jax[cuda13] of the same version"]
    for name in names:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def write(out: Path, runs: Sequence[Run], test: RecordTest, reasons: Sequence[str], meta: Meta) -> list[str]:
    """Write the folder; returns its files. An existing non-empty `out` is never overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not empty (or not a folder); remove it or pass another --out")
    # Built beside `out`, then renamed: a failure (a full disk) leaves no half folder.
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        files = ["README.md", "submission.json", "train_gpt.py", "requirements.txt"]
        shutil.copyfile(runs[0].path / "submission.py", tmp / "train_gpt.py")
        for r in runs:
            shutil.copyfile(r.path / "log.txt", tmp / f"train_seed{r.seed}.log")
            shutil.copyfile(r.path / "config.json", tmp / f"config_seed{r.seed}.json")
            files += [f"train_seed{r.seed}.log", f"config_seed{r.seed}.json"]
        (tmp / "requirements.txt").write_text(requirements(runs[0].config))
        (tmp / "submission.json").write_text(json.dumps(submission_json(runs, test, reasons, meta), indent=2) + "\n")
        (tmp / "README.md").write_text(readme(runs, test, reasons, meta, files))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"{out}: cannot write the folder ({e.strerror or e}); free disk space or pass another --out "
                      "(nothing was written)") from e
    return files
