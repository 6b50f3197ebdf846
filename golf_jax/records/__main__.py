"""`python -m golf_jax.records RUN_DIR [RUN_DIR ...] --sota=1.0611 [--out=DIR]`: a records/ folder.

The runs are the seeds of one submission (same config and packed script). It is a record
only if every run finished, passed its compliance audit (score "val_bpb (official)"),
fits the 16,000,000-byte artifact, was timed inside the 600 s budgets on 8xH100 and scored
the whole val split of shards, and the seeds beat --sota (val_bpb) by 0.005 nats at p < 0.01
(golf_jax/records/stats.py).
Otherwise the folder is written as a non-record submission that says why.
Exit status: 0 a record, 1 a non-record folder, 2 nothing written (bad input).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from absl import flags

from golf_jax.core import cli
from golf_jax.core.errors import UserError
from golf_jax.core.paths import cache_dir
from golf_jax.records import folder
from golf_jax.records.runs import blockers, check_same_submission, load_run
from golf_jax.records.stats import record_test, verdict


FLAGS = cli.flag_values()
_SOTA = cli.required(flags.DEFINE_float("sota", None, "The leaderboard's SOTA val_bpb, e.g. 1.0611.",
                                        flag_values=FLAGS), "the leaderboard's SOTA val_bpb, e.g. --sota=1.0611")
_OUT = flags.DEFINE_string("out", None, "The folder to write (default: build/records/<track>/<date>_<name>...).",
                           flag_values=FLAGS)
_NAME = flags.DEFINE_string("name", None, "The submission's name (default: golf_jax <config name>).",
                            flag_values=FLAGS)
_AUTHOR = flags.DEFINE_string("author", "", "The author, for submission.json.", flag_values=FLAGS)
_GITHUB_ID = flags.DEFINE_string("github_id", "", "The author's GitHub id, for submission.json.", flag_values=FLAGS)
_BLURB = flags.DEFINE_string("blurb", "", "One paragraph on what the submission does.", flag_values=FLAGS)


def _main(args: list[str]) -> int:
    paths = [Path(p) for p in cli.positionals(args, "RUN_DIR (run directories, one per seed)", 1, None)]
    sota = _SOTA.value
    if not 0 < sota < float("inf"):
        raise UserError(f"--sota={sota}: give the SOTA's val_bpb, a positive number such as 1.0611")
    try:
        runs = [load_run(p) for p in paths]
        check_same_submission(runs)
        test = record_test([r.val_loss for r in runs], [r.val_bpb for r in runs], sota)
        reasons = [f"seed {r.seed}: {b}" for r in runs for b in blockers(r)]
        reasons += [why] if (why := verdict(test)) else []
        meta = folder.Meta(name=_NAME.value or f"golf_jax {runs[0].config.get('name')}", author=_AUTHOR.value,
                           github_id=_GITHUB_ID.value, blurb=_BLURB.value, date=dt.date.today().isoformat())
        record = not reasons
        out = Path(_OUT.value) if _OUT.value else (cache_dir() / "records" / folder.TRACKS[record][0]
                                                   / folder.folder_name(meta, record, test.mean_bpb))
        files = folder.write(out, runs, test, reasons, meta)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from e
    p = "n/a" if test.n < 2 else f"{test.p:.3g}"
    print(f"{len(runs)} seeds: val_bpb {test.mean_bpb:.5f}, val_loss {test.mean_loss:.5f} nats; "
          f"{test.delta_nats:+.5f} nats against the SOTA {sota} bpb, p = {p}")
    print(f"wrote {out} ({len(files)} files)")
    if not (_AUTHOR.value and _GITHUB_ID.value):
        print("note: submission.json has no author or github_id (--author, --github_id)")
    if reasons:
        print("NOT A RECORD:\n" + "\n".join(f"  - {r}" for r in reasons))
        return 1
    print("RECORD")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command (golf_jax/core/cli.py's convention): argv after the program name, default sys.argv[1:]."""
    return cli.run(_main, FLAGS, argv)


if __name__ == "__main__":
    sys.exit(main())
