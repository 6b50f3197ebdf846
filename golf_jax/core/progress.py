"""Progress with an ETA for the long host loops (data preparation, calibration, GPTQ, eval).

A tqdm bar (tqdm imported only when one is made). On a terminal it redraws in place;
elsewhere (a log file, a batch system) the carriage returns would garble the log, so it
writes one whole line of tqdm's figures (no bar) every `every` seconds instead, and
nothing for a loop that ends sooner. The ETA is tqdm's, from a smoothed rate: a first
batch that compiles does not stretch it for long.
"""

from __future__ import annotations

import sys


class Lines:
    """A file for tqdm that turns each redraw into one line on stderr (line-buffered: no flush)."""

    def write(self, text: str) -> None:
        if text.strip():
            print(text.strip(), file=sys.stderr)


def progress(desc: str, unit: str, total: float | None = None, items=None, every: float = 30.0):
    """A tqdm on stderr over `items` (each counted as the loop asks for the next; total: len(items)),
    or one updated by hand. It closes itself when dropped; `with` closes it sooner."""
    from tqdm import tqdm  # tqdm(iterable, desc, total, leave, file, ...)

    if sys.stderr.isatty():
        return tqdm(items, desc, total, False, unit=unit, mininterval=1.0)
    return tqdm(items, desc, total, False, Lines(), ncols=0, unit=unit, mininterval=every, miniters=1, delay=every)
