"""`python -m golf_jax.records RUN_DIR [RUN_DIR ...] --sota 1.0611 [--out DIR]`: a records/ folder.

The runs are the seeds of one submission (same config and packed script). It is a record
only if every run finished, passed its compliance audit (score "val_bpb (official)"),
fits the 16,000,000-byte artifact, was timed inside the 600 s budgets on 8xH100 and scored
the whole val split of shards, and the seeds beat --sota (val_bpb) by 0.005 nats at p < 0.01
(golf_jax/records/stats.py).
Otherwise the folder is written as a non-record submission that says why.
Exit status: 0 a record, 1 a non-record folder, 2 nothing written (bad input).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from golf_jax.core.paths import cache_dir
from golf_jax.records import folder
from golf_jax.records.runs import blockers, check_same_submission, load_run
from golf_jax.records.stats import record_test, verdict


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf_jax.records", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories, one per seed")
    ap.add_argument("--sota", type=float, required=True, help="the leaderboard's SOTA val_bpb, e.g. 1.0611")
    ap.add_argument("--out", type=Path, help="the folder to write (default: build/records/<track>/<date>_<name>...)")
    ap.add_argument("--name", help="the submission's name (default: golf_jax <config name>)")
    ap.add_argument("--author", default="")
    ap.add_argument("--github-id", default="")
    ap.add_argument("--blurb", default="", help="one paragraph on what the submission does")
    args = ap.parse_args(argv)
    if not 0 < args.sota < float("inf"):
        ap.error(f"--sota {args.sota}: give the SOTA's val_bpb, a positive number such as 1.0611")
    try:
        runs = [load_run(p) for p in args.runs]
        check_same_submission(runs)
        test = record_test([r.val_loss for r in runs], [r.val_bpb for r in runs], args.sota)
        reasons = [f"seed {r.seed}: {b}" for r in runs for b in blockers(r)]
        reasons += [why] if (why := verdict(test)) else []
        meta = folder.Meta(name=args.name or f"golf_jax {runs[0].config.get('name')}", author=args.author,
                           github_id=args.github_id, blurb=args.blurb, date=dt.date.today().isoformat())
        record = not reasons
        out = args.out or (cache_dir() / "records" / folder.TRACKS[record][0]
                           / folder.folder_name(meta, record, test.mean_bpb))
        files = folder.write(out, runs, test, reasons, meta)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    p = "n/a" if test.n < 2 else f"{test.p:.3g}"
    print(f"{len(runs)} seeds: val_bpb {test.mean_bpb:.5f}, val_loss {test.mean_loss:.5f} nats; "
          f"{test.delta_nats:+.5f} nats against the SOTA {args.sota} bpb, p = {p}")
    print(f"wrote {out} ({len(files)} files)")
    if not (args.author and args.github_id):
        print("note: submission.json has no author or github_id (--author, --github-id)")
    if reasons:
        print("NOT A RECORD:\n" + "\n".join(f"  - {r}" for r in reasons))
        return 1
    print("RECORD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
