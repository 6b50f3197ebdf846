"""The evaluation ledger: which targets were scored, in what order, and what each update read.

The harness writes one per stage (`ledger_<stage>.json` in the run dir). It stores
ranges of target indices, never rows: a full val pass has 62 M targets and its
ledger is a few lines. `verify` checks two of the challenge's conditions from it:

* single pass (condition 4): every target in [0, T) is scored exactly once;
* score before update (condition 3): every range an update reads was scored earlier
  in this stage, and nothing scored here was read by an adaptation that ran before
  the stage (`prior_reads`: pre-quant TTT on val, or TTT weights carried over);
* score before fit (condition 3, for SLOT): a "fit" event lists, per scoring unit of
  the batch that follows it, the targets its δ was fitted on. Each unit's objective
  must lie before its own first scored target, in targets scored earlier (by earlier
  batches or by earlier units of the same batch). Per-unit columns are stored as runs
  of arithmetic progressions, so a batch of windows is a few numbers.

Range sets are sorted numpy arrays: phased TTT scores ~10^6 short document chunks in
~10^3 blocks, and every check (scored?, covered?, counts) is a vectorised search.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golf_jax.eval.windows import merge_ranges
from golf_jax.core.rundir import write_atomic


@dataclass
class Ledger:
    stage: str
    num_targets: int
    compliant: bool = True  # False: the evaluator runs outside the harness's guarantees (a flag says why)
    notes: list[str] = field(default_factory=list)
    prior_reads: list[tuple[int, int]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    _scored: _Ranges = field(default_factory=lambda: _Ranges(), repr=False)  # union of scored ranges so far

    def score(self, ranges) -> None:
        ranges = merge_ranges(ranges)
        self._scored.add(ranges)
        if self.events and "score" in self.events[-1]:
            self.events[-1]["score"] = merge_ranges(self.events[-1]["score"] + ranges)
        elif ranges:
            self.events.append({"score": ranges})

    def scored(self, a, b):
        """Are targets [a, b) all scored so far? (ints, or arrays of ranges: a bool array)"""
        if np.ndim(a) == 0:
            return self._scored.covers(int(a), int(b))
        return self._scored.covers_many(np.asarray(a, np.int64), np.asarray(b, np.int64))

    def update(self, reads, **info) -> None:
        self.events.append({"update": _union(reads), **info})

    def fit(self, reads_a, reads_b, first, batch_scores, **info) -> int:
        """Before a batch's score: unit k's δ was fitted on targets [reads_a[k], reads_b[k]);
        first[k] is the unit's first scored target (units in evaluation order) and
        `batch_scores` the ranges the batch will score. Returns how many units break
        score-before-fit (the harness refuses them for a compliant evaluator)."""
        cols = {k: np.asarray(v, np.int64) for k, v in (("a", reads_a), ("b", reads_b), ("first", first))}
        check = _FitCheck()
        check.add(cols["a"], cols["b"], cols["first"], self._scored, batch_scores)
        self.events.append({"fit": {k: _runs(v) for k, v in cols.items()}, **info})
        return check.own + check.unscored

    def to_json(self) -> dict:
        return {"stage": self.stage, "num_targets": self.num_targets, "compliant": self.compliant,
                "notes": self.notes, "prior_reads": self.prior_reads,
                "events": [{k: ([list(r) for r in v] if k in ("score", "update") else v) for k, v in e.items()}
                           for e in self.events]}

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_json()) + "\n")

    @classmethod
    def read(cls, path: Path) -> Ledger:
        d = json.loads(Path(path).read_text())
        events = [{k: ([tuple(r) for r in v] if k in ("score", "update") else v) for k, v in e.items()}
                  for e in d["events"]]
        ledger = cls(d["stage"], d["num_targets"], d["compliant"], d["notes"], [tuple(r) for r in d["prior_reads"]])
        for e in events:
            if "score" in e:
                ledger.score(e["score"])
            else:
                ledger.events.append(e)
        return ledger

    def verify(self) -> list[str]:
        """Violations, one line each; [] when the ledger shows a legal single pass."""
        problems: list[str] = []
        T = self.num_targets
        count = _Coverage(T)
        fits = _FitCheck()
        for i, e in enumerate(self.events):
            if "score" in e:
                count.add(e["score"])
            elif "fit" in e:
                following = self.events[i + 1].get("score", []) if i + 1 < len(self.events) else []
                fits.add(*(_expand(e["fit"][k]) for k in ("a", "b", "first")), count.merged, following)
            else:
                bad = _pairs(e["update"])[~count.merged.covers_many(*_columns(e["update"]))]
                if len(bad):
                    a, b = bad[0]
                    problems.append(
                        f"score before update: an update ({_describe(e)}) read targets [{a}, {b}) before all "
                        f"of them were scored")
        problems.extend(fits.problems())
        dup, missing = count.duplicates(), count.missing()
        if dup:
            problems.append(f"single pass: {dup} target scores are repeats (a target scored more than once)")
        if missing:
            problems.append(f"single pass: {missing} of {T} targets were never scored")
        for a, b in self.prior_reads:
            overlap = count.merged.overlap(a, b)
            if overlap:
                problems.append(
                    f"score before update: {overlap} targets scored here were read by an adaptation before "
                    f"this stage (targets [{a}, {b}); a second pass)")
        return problems

    def reads(self) -> list[tuple[int, int]]:
        """Every range this stage's updates read (what carried weights have seen)."""
        return _union(r for e in self.events if "update" in e for r in e["update"])

    def score_rank(self) -> np.ndarray:
        """Per target, the index of the score event that scored it (−1: never), i.e. its place
        in evaluation order; an update between two score events separates them."""
        rank = np.full(self.num_targets, -1, np.int64)
        k = 0
        for e in self.events:
            if "score" in e:
                for a, b in e["score"]:
                    rank[max(a, 0) : min(b, self.num_targets)] = k
                k += 1
        return rank


class _Ranges:
    """A union of half-open ranges: sorted, disjoint, touching ones merged (numpy arrays)."""

    def __init__(self, starts=(), ends=()) -> None:
        self.starts, self.ends = _union_arrays(np.asarray(starts, np.int64), np.asarray(ends, np.int64))

    def add(self, ranges) -> None:
        a, b = _columns(ranges)
        self.starts, self.ends = _union_arrays(np.concatenate([self.starts, a]), np.concatenate([self.ends, b]))

    def covers_many(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per range [a, b): does one range of the union contain it?"""
        k = np.searchsorted(self.starts, a, side="right") - 1
        inside = b <= self.ends[np.maximum(k, 0)] if len(self.ends) else np.zeros(len(a), bool)
        return (k >= 0) & inside

    def covers(self, a: int, b: int) -> bool:
        return bool(self.covers_many(np.asarray([a], np.int64), np.asarray([b], np.int64))[0])

    def overlap(self, a: int, b: int) -> int:
        """How many targets of [a, b) the union holds."""
        return int(np.sum(np.maximum(0, np.minimum(b, self.ends) - np.maximum(a, self.starts))))

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.starts.tolist(), self.ends.tolist()))


class _FitCheck:
    """Score before fit, summed over every fit event (one line per kind of violation)."""

    def __init__(self) -> None:
        self.units = self.own = self.unscored = 0
        self.example_own = self.example_unscored = ""

    def add(self, a: np.ndarray, b: np.ndarray, first: np.ndarray, scored: _Ranges, following) -> None:
        """Units' reads [a, b) and first targets; `scored`: the targets scored before the fit;
        `following`: the batch's scores."""
        read = b > a
        later_first = np.minimum.accumulate(first[::-1])[::-1]  # the first target of this unit or any later one
        own = read & (b > later_first)
        union = _Ranges(scored.starts, scored.ends)
        union.add([tuple(r) for r in following])
        covered = union.covers_many(a, b)
        unscored = read & ~covered & ~own
        self.units += int(read.sum())
        if own.any() and not self.example_own:
            j = int(np.flatnonzero(own)[0])
            self.example_own = f"a unit scoring from target {first[j]} was fitted on [{a[j]}, {b[j]})"
        if unscored.any() and not self.example_unscored:
            j = int(np.flatnonzero(unscored)[0])
            self.example_unscored = f"[{a[j]}, {b[j]}) for the unit scoring from target {first[j]}"
        self.own += int(own.sum())
        self.unscored += int(unscored.sum())

    def problems(self) -> list[str]:
        out = []
        if self.own:
            out.append(f"score before fit: {self.own} of {self.units} fitted units were scored with a δ fitted on "
                       f"their own or later targets ({self.example_own})")
        if self.unscored:
            out.append(f"score before fit: {self.unscored} of {self.units} fitted units read targets that were not "
                       f"scored before them ({self.example_unscored})")
        return out


def _runs(x: np.ndarray) -> list[list[int]]:
    """An int array as runs [start, step, count] of arithmetic progressions."""
    out: list[list[int]] = []
    i, n = 0, len(x)
    while i < n:
        if i + 1 == n:
            out.append([int(x[i]), 0, 1])
            break
        step, j = int(x[i + 1] - x[i]), i + 1
        while j + 1 < n and x[j + 1] - x[j] == step:
            j += 1
        out.append([int(x[i]), step, j - i + 1])
        i = j + 1
    return out


def _expand(runs) -> np.ndarray:
    parts = [start + step * np.arange(count, dtype=np.int64) for start, step, count in runs]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _describe(event: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in event.items() if k != "update") or "update"


class _Coverage:
    """How often each target was scored, from every scored range (a difference array at the end)."""

    def __init__(self, num_targets: int) -> None:
        self.T = num_targets
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self.merged = _Ranges()  # the union scored so far, for `covers_many`

    def add(self, ranges) -> None:
        a, b = _columns(ranges)
        self._a.append(a)
        self._b.append(b)
        self.merged.add(ranges)

    def _counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Breakpoints and the scored count on each elementary interval."""
        a = np.concatenate(self._a) if self._a else np.zeros(0, np.int64)
        b = np.concatenate(self._b) if self._b else np.zeros(0, np.int64)
        pts = np.unique(np.concatenate([[0, self.T], a, b]).astype(np.int64))
        diff = np.zeros(len(pts), np.int64)
        np.add.at(diff, np.searchsorted(pts, a), 1)
        np.add.at(diff, np.searchsorted(pts, b), -1)
        return pts, np.cumsum(diff)[:-1]

    def duplicates(self) -> int:
        pts, counts = self._counts()
        return int(np.sum(np.maximum(counts - 1, 0) * np.diff(pts)))

    def missing(self) -> int:
        pts, counts = self._counts()
        inside = (pts[:-1] >= 0) & (pts[1:] <= self.T)
        return int(np.sum(((counts == 0) & inside) * np.diff(pts)))


def _columns(ranges) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) int64 arrays of a list of (a, b) pairs."""
    arr = np.asarray(list(ranges), np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _pairs(ranges) -> np.ndarray:
    return np.asarray(list(ranges), np.int64).reshape(-1, 2)


def _union_arrays(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted disjoint union of ranges [a_i, b_i) (empty ones dropped, touching ones merged)."""
    keep = b > a
    a, b = a[keep], b[keep]
    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    reach = np.maximum.accumulate(b)
    new = np.concatenate([[True], a[1:] > reach[:-1]])  # a range that starts past every earlier end
    last = np.concatenate([new[1:], [True]])
    return a[new], reach[last]


def _union(ranges) -> list[tuple[int, int]]:
    a, b = _columns(ranges)
    return _Ranges(a, b).pairs()
