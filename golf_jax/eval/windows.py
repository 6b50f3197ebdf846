"""Sliding-window geometry: which targets each window scores (docs/reference-notes.md#sliding-window-eval).

Target j is val[j+1] predicted from val[:j+1]; a stream of N tokens has T = N-1
targets. A window starting at ws reads inputs val[ws : ws+wlen] (wlen ≤ seq_len) and
scores its positions [s, wlen), i.e. targets [ws+s, ws+wlen).

* "merged" (the default, every merged record): windows ws = 0, stride, ... while
  ws + ctx < T with ctx = seq_len - stride; s = 0 for ws = 0, else ctx. Every target is
  scored exactly once.
* "reference" (PR #1318's eval_val_sliding): ws = 0, stride, ... < T and
  s = max(wlen - stride, 0). The ~seq_len/stride - 1 partial tail windows re-score the
  last `stride` targets: with stride | T and T >= seq_len the count is T + seq_len - stride.

Windows are cut into *scoring units* of at most `stride` positions, so that every
forward gathers the same number of positions: window 0 (which scores all its
positions) becomes seq_len/stride units over the same inputs. A unit is
(window start, first scored position, count) and scores targets
[start + pos, start + pos + count).

Phased TTT's units (golf_jax/eval/phased/plan.py) also carry `wlen`, each window's
own input length (a document chunk and its document's context before it): the
inputs past it are zeros, and a batch's width is `bucket_width` of its longest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# eval.sliding.window_rule: "merged" scores each target once; "reference" is PR #1318's re-scored
# tail (docs/reference-notes.md#sliding-window-eval)
WINDOW_RULES = ("merged", "reference")


@dataclass(frozen=True)
class Units:
    """Scoring units in evaluation order (arrays of equal length)."""

    start: np.ndarray  # window start ws (int64)
    pos: np.ndarray  # first scored position inside the window
    count: np.ndarray  # scored positions (1..stride)
    window_pos: np.ndarray  # the window's first scored position s (window 0's units share s = 0)
    seq_len: int
    stride: int
    num_targets: int
    wlen: np.ndarray | None = None  # per-unit input length (phased TTT); None: min(seq_len, T - start)

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def first_target(self) -> np.ndarray:
        return self.start + self.pos

    @property
    def scored_tokens(self) -> int:
        return int(self.count.sum())

    def take(self, idx) -> Units:
        return Units(self.start[idx], self.pos[idx], self.count[idx], self.window_pos[idx], self.seq_len, self.stride,
                     self.num_targets, None if self.wlen is None else self.wlen[idx])


def check_geometry(seq_len: int, stride: int) -> None:
    if seq_len <= 0 or stride <= 0 or stride > seq_len:
        raise ValueError(
            f"eval.sliding.stride={stride} must be in 1..seq_len (the eval seq_len is {seq_len}); "
            "e.g. stride 64 with seq_len 2048"
        )


def window_starts(num_targets: int, seq_len: int, stride: int, rule: str) -> np.ndarray:
    if rule == "merged":
        ctx = seq_len - stride
        return np.arange(0, max(num_targets - ctx, 1), stride, dtype=np.int64)
    if rule == "reference":
        return np.arange(0, num_targets, stride, dtype=np.int64)
    raise ValueError(f"eval.sliding.window_rule={rule!r}: use one of {WINDOW_RULES}")


def sliding_units(num_targets: int, seq_len: int, stride: int, rule: str = "merged") -> Units:
    """The scoring units of a sliding evaluation over `num_targets` targets."""
    check_geometry(seq_len, stride)
    ws = window_starts(num_targets, seq_len, stride, rule)
    wlen = np.minimum(ws + seq_len, num_targets) - ws
    if rule == "merged":
        s = np.where(ws == 0, 0, seq_len - stride)
    else:
        s = np.where(ws == 0, 0, np.maximum(wlen - stride, 0))
    s = np.minimum(s, wlen)
    # Split each window's scored span [s, wlen) into pieces of at most `stride` positions.
    pieces = -(-(wlen - s) // stride)
    win = np.repeat(np.arange(ws.size), pieces)
    first = np.cumsum(pieces) - pieces
    k = np.arange(win.size) - np.repeat(first, pieces)
    pos = s[win] + k * stride
    count = np.minimum(stride, wlen[win] - pos)
    return Units(ws[win], pos.astype(np.int64), count.astype(np.int64), s[win].astype(np.int64), seq_len, stride,
                 num_targets)


def chunk_of(units: Units, chunk_tokens: int) -> np.ndarray:
    """Chunk index of each unit: ⌊first target / chunk_tokens⌋, capped at the last chunk (docs/reference-notes.md#ttt-pr1318)."""
    return np.minimum(units.first_target // chunk_tokens, num_chunks(units.num_targets, chunk_tokens) - 1)


def num_chunks(num_targets: int, chunk_tokens: int) -> int:
    return max(-(-num_targets // chunk_tokens), 1)


def bucket_width(n: int, seq_len: int) -> int:
    """The forward width for windows of up to n inputs: the next power of two, at least
    seq_len/8 (and 16), at most seq_len; so a pass compiles for at most four widths."""
    floor = max(16, seq_len // 8)
    return min(seq_len, max(floor, 1 << max(int(n) - 1, 0).bit_length()))


def gather_batch(val_tokens: np.ndarray, units: Units, rows: int) -> dict:
    """Arrays of one forward over `units`, padded to `rows` rows (padding is masked).

    Inputs (what an evaluator may see): x_BxW (window tokens, zero past wlen) and
    pos_BxS (the positions to score). Targets (the harness's): y_BxS, prev_BxS (the token
    before each target, for the byte LUT), mask_BxS and target_BxS (global indices).
    W (`width`) is the seq_len; with per-unit `wlen`, bucket_width of the batch's longest window.
    """
    n, width, S = len(units), units.seq_len, units.stride
    if n > rows:
        raise ValueError(f"gather_batch: {n} units do not fit in {rows} rows")
    num_targets = units.num_targets
    if units.wlen is not None:
        width = bucket_width(int(units.wlen.max(initial=1)), units.seq_len)
    x = np.zeros((rows, width), np.int32)
    pos = np.zeros((rows, S), np.int32)
    mask = np.zeros((rows, S), bool)
    target = np.zeros((rows, S), np.int64)
    offs = np.arange(width)
    idx = units.start[:, None] + offs[None, :]
    valid = idx < num_targets  # the window's inputs: val[ws : ws + wlen]
    if units.wlen is not None:
        valid &= offs[None, :] < units.wlen[:, None]
    x[:n] = np.where(valid, val_tokens[np.minimum(idx, num_targets - 1)], 0)
    k = np.arange(S)
    p = units.pos[:, None] + k[None, :]
    m = k[None, :] < units.count[:, None]
    pos[:n] = np.where(m, p, 0)
    mask[:n] = m
    target[:n] = np.where(m, units.start[:, None] + p, 0)
    y = val_tokens[target + 1].astype(np.int32)
    prev = val_tokens[target].astype(np.int32)
    return {"x": x, "pos": pos, "y": np.where(mask, y, 0), "prev": np.where(mask, prev, 0),
            "mask": mask, "target": target}


def unit_ranges(units: Units) -> list[tuple[int, int]]:
    """The units' scored target ranges, adjacent ones merged."""
    a, b = units.first_target, units.first_target + units.count
    return merge_ranges(list(zip(a.tolist(), b.tolist())))


def merge_ranges(ranges) -> list[tuple[int, int]]:
    """Merge ranges that touch, keeping order (no sorting: order is evaluation order)."""
    out: list[list[int]] = []
    for a, b in ranges:
        if b <= a:
            continue
        if out and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]
