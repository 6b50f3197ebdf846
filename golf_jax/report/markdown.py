"""RUN_DIR/report/summary.md: a run's stages, times, scores, artifact bytes and audit verdict, and its plots."""

from __future__ import annotations

import numpy as np

from golf_jax.report.rundata import Run


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows] + [""])


def _num(v, fmt: str = ",") -> str:
    return "" if v is None else format(v, fmt)


def overview(run: Run) -> list[tuple[str, str]]:
    s, rows = run.summary, []
    status = s.get("status", "unknown (no summary.json)")
    rows.append(("status", status + (f": {s['error']}" if s.get("error") else "")))
    if "val_bpb" in s:
        rows.append(("score", f"**{s['val_bpb']:.4f}** bpb ({s.get('final_stage', '?')}), {s.get('compliance', '?')}"))
    if "artifact_bytes" in s:
        budget = run.section("export").get("budget_bytes")
        spare = "" if budget is None else f" (budget {budget:,}: {budget - s['artifact_bytes']:,} to spare)"
        rows.append(("artifact", f"{s['artifact_bytes']:,} B = weights {s['weight_bytes']:,} + code "
                                 f"{s['code_bytes']:,}{spare}; {s.get('export_format', '?')} + "
                                 f"{s.get('compressor', '?')}"))
    if "audit" in s:
        rows.append(("audit", f"{s['audit']['verdict']} ({s['audit']['seconds']:.0f} s)"))
    elif "val_bpb" in s:
        rows.append(("audit", "not run (audit.enabled=False, or a packed submission)"))
    if "steps" in s:
        pre = _num(s.get("pre_quant_val_bpb"), ".4f")
        rows.append(("training", f"{s['steps']:,} steps in {s['train_time_s']:.1f} s; weights: "
                                 f"{s.get('averaging', '?')}, pre-quant val_bpb {pre}"))
    if "eval_budget" in s:
        b = s["eval_budget"]
        rows.append(("evaluation time", f"{b['seconds']:.1f} s after the training clock (budget "
                                        f"{b['budget_seconds']:.0f} s on {b['hardware']}): "
                                        f"{'fits' if b['fits'] else 'OVER'}"))
    return rows


def warnings(run: Run) -> list[str]:
    """What makes a run's figures mean less than they seem."""
    out = []
    sched, steps = run.section("schedule"), run.summary.get("steps") or run.section("train").get("iterations")
    lr_max = float(np.nanmax(run.train["lr_scale"])) if run.train is not None and "lr_scale" in run.train else None
    warmdown = sched.get("warmdown_iters", 0)
    if steps and not sched.get("warmdown_frac") and warmdown >= steps:
        peak = "" if lr_max is None else f" (its peak lr_scale was {lr_max:.3f})"
        out.append(f"schedule.warmdown_iters={warmdown:,} is at least the run's {steps:,} steps: the learning rate "
                   f"never reached its full value{peak}; lower schedule.warmdown_iters for a short run")
    for stage, blocks in run.blocks.items():
        if stage in ("ttt", "phased") and len(blocks["nll"]) == 1:
            out.append(f"the {stage} stage scored a single chunk: nothing was scored after an update, so it measured "
                       "no test-time training; lower eval.ttt.chunk_tokens or raise eval.max_tokens")
    return out


def summary(run: Run, plots: dict[str, str], notes: list[str]) -> str:
    """The markdown text; `plots` is {title: file name in the report dir}, `notes` what was skipped and why."""
    s = run.summary
    lines = [f"# {run.name}", "", f"Run directory: `{run.path}`", ""]
    lines += _table(("", ""), overview(run))
    if warn := warnings(run):
        lines += ["## Warnings", ""] + [f"- {w}" for w in warn] + [""]
    if run.stage_seconds:
        lines += ["## Stages", ""]
        total = sum(run.stage_seconds.values())
        lines += _table(("stage", "seconds", "share"), [(k, f"{v:.1f}", f"{100 * v / max(total, 1e-9):.0f}%")
                                                       for k, v in run.stage_seconds.items()])
    if run.evals:
        lines += ["## Evaluation", ""]
        lines += _table(("stage", "val_bpb", "val_loss", "seconds", "tokens", "compliant"),
                        [(k, f"{r['val_bpb']:.4f}", f"{r['val_loss']:.4f}", f"{r['seconds']:.1f}",
                          _num(r.get("tokens")), "yes" if r.get("compliant") else "NO") for k, r in run.evals.items()])
    if s.get("noncompliance"):
        lines += ["Non-compliant because:", ""] + [f"- {why}" for why in s["noncompliance"]] + [""]
    if "audit" in s:
        lines += [f"## Audit: {s['audit']['verdict']}", ""]
        lines += _table(("check", "result"), list(s["audit"]["checks"].items()))
    if plots:
        lines += ["## Plots", ""] + [f"![{title}]({name})\n" for title, name in plots.items()]
    if notes:
        lines += ["## Not in this report", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)
