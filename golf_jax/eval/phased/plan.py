"""Phased TTT's schedule: documents, their evaluation order, the harness's units and blocks.

Phased score-first TTT (docs/reference-notes.md#phased-ttt: PR #1855's eval_val_ttt_phased,
the 1.0611 record) scores every document on its own, in chunks, with a per-document
LoRA that trains on each chunk after it is scored. Everything about *which* target is
scored *when* is fixed here, before anything runs, from the document lengths alone:

* Documents are split at BOS (#1855's _find_docs): a document runs from its BOS up to
  and including the next BOS, so it owns targets [start, next start) and every target
  of the stream belongs to exactly one document. A stream that does not begin with BOS
  gets a first document from 0.
* Order (deterministic; #1855's depends on which rank claims a batch first through a
  shared counter file): documents sorted by length, longest first, ties in stream
  order, then cut into *rounds* of eval.phased.batch_docs documents (the longest round
  first; a partial round holds the shortest documents). A round's documents are scored
  together, one per row of a [rows, width] forward, rows split over the devices in
  order (device d holds rows [d·rows/D, (d+1)·rows/D)). #1855's 64-document batches per
  rank on 8 GPUs are rounds of 512.
* Chunks (_compute_chunk_window): a document with P targets has ⌈P/chunk⌉ chunks;
  chunk c scores targets [c·chunk, min((c+1)·chunk, P)) of the document from a window
  of its own preceding tokens, at most the eval seq_len: inputs doc[max(0, e − L) : e]
  for the chunk end e. Windows never cross a document boundary. Block (round, c) scores
  chunk c of every document of the round that has one.
* Training (the LoRA's): after block (round, c), each document takes a step on chunk c,
  unless c is its last chunk (scored, never trained: no later score would use it).
* Global phases (eval.phased.prefix_docs over num_phases, cumulative boundaries
  ⌊prefix·(p+1)/phases⌋): after the first round by whose end at least boundary p
  documents are fully scored, the base weights take a pass of SGD over that many of the
  scored documents, the ones #1855 keeps: sorted by length, shortest first (its
  (batch index, position) order). One phase per round end, as #1855 pauses once per
  batch; a phase after the last round is skipped (nothing would be scored with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golf_jax.eval.windows import Units
from golf_jax.model.embeddings import BOS_ID


@dataclass(frozen=True)
class Documents:
    """Documents in stream order: document i owns targets [start[i], start[i] + targets[i])."""

    start: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.start.size)


def find_documents(tokens: np.ndarray, bos: int = BOS_ID) -> Documents:
    """The documents of a stream, split at BOS (a BOS that is the last token starts none)."""
    return documents_from_starts(np.flatnonzero(np.asarray(tokens[:-1]) == bos), len(tokens))


def documents_from_starts(starts, num_tokens: int) -> Documents:
    """Declared document starts, restricted to a stream of `num_tokens` tokens.

    The audit declares the documents (and so the order) of its slice once, and every
    rerun on a changed or truncated copy keeps them: the order is part of the protocol.
    """
    T = int(num_tokens) - 1
    s = np.unique(np.concatenate([[0], np.asarray(starts, np.int64)]))
    s = s[(s >= 0) & (s < T)]
    return Documents(s, np.append(s[1:], T) - s)


def rounds_of(docs: Documents, batch_docs: int) -> list[np.ndarray]:
    """Document indices per round, in evaluation order: longest first, ties in stream order."""
    order = np.argsort(-docs.targets, kind="stable")
    return [order[i : i + batch_docs] for i in range(0, len(order), batch_docs)]


@dataclass(frozen=True)
class Phase:
    index: int  # 0-based
    after_round: int
    docs: np.ndarray  # the documents trained on, in training order (shortest first)


def phases_of(docs: Documents, rounds: list[np.ndarray], prefix_docs: int, num_phases: int) -> list[Phase]:
    """When the global phases run and on which (already scored) documents."""
    prefix = min(int(prefix_docs), len(docs))
    if prefix <= 0:
        return []
    bounds = [prefix * (p + 1) // num_phases for p in range(num_phases)]
    ascending = np.empty(len(docs), np.int64)
    ascending[np.argsort(docs.targets, kind="stable")] = np.arange(len(docs))
    out, scored, p = [], 0, 0
    for k, r in enumerate(rounds):
        scored += len(r)
        if p < num_phases and scored >= bounds[p]:
            if k < len(rounds) - 1:
                done = np.concatenate(rounds[: k + 1])
                out.append(Phase(p, k, done[np.argsort(ascending[done], kind="stable")][: bounds[p]]))
            p += 1
    return out


@dataclass(frozen=True)
class Plan:
    """The whole schedule: the harness's units (block-major, `rows` per block) and what
    the evaluator does after each block."""

    docs: Documents
    rounds: list[np.ndarray]
    rows: int
    chunk: int
    units: Units
    blocks: list[np.ndarray]
    block_round: np.ndarray  # [blocks]
    first: np.ndarray  # [blocks, rows] first scored target of each row's chunk (count 0: idle row)
    count: np.ndarray  # [blocks, rows]
    train: np.ndarray  # [blocks, rows] bool: the row's document trains on this chunk after scoring it
    row_doc: np.ndarray  # [rounds, rows] document per row (-1: idle)
    phases: list[Phase]

    @property
    def round_end(self) -> np.ndarray:
        """Per block: is it its round's last?"""
        return np.append(self.block_round[1:] != self.block_round[:-1], True)

    def phase_after(self, k: int) -> Phase | None:
        return next((ph for ph in self.phases if ph.after_round == k), None)


def build(docs: Documents, rows: int, batch_docs: int, chunk: int, seq_len: int, prefix_docs: int,
          num_phases: int) -> Plan:
    """The schedule for `docs` with `rows` rows per forward (batch_docs ≤ rows documents per round)."""
    if batch_docs > rows:
        raise ValueError(f"phased plan: {batch_docs} documents per round do not fit in {rows} rows")
    rounds = rounds_of(docs, batch_docs)
    T = int(docs.start[-1] + docs.targets[-1]) if len(docs) else 0
    cols = {k: [] for k in ("start", "pos", "count", "wlen", "train")}
    block_round, row_doc = [], np.full((len(rounds), rows), -1, np.int64)
    for k, idx in enumerate(rounds):
        row_doc[k, : len(idx)] = idx
        P = docs.targets[idx]
        nc = -(-P // chunk)
        c = np.arange(int(nc.max()))[:, None]  # [C, 1] against documents [1, n]
        active = c < nc[None, :]
        c_start = c * chunk
        c_end = np.where(c == nc[None, :] - 1, P[None, :], (c + 1) * chunk)
        w_start = np.maximum(0, c_end - seq_len)
        vals = {"start": docs.start[idx][None, :] + w_start, "pos": c_start - w_start, "count": c_end - c_start,
                "wlen": c_end - w_start, "train": c < nc[None, :] - 1}
        for key, v in vals.items():
            full = np.zeros((c.shape[0], rows), bool if key == "train" else np.int64)
            full[:, : len(idx)] = np.where(active, v, 0)
            cols[key].append(full)
        block_round += [k] * c.shape[0]
    cat = {k: np.concatenate(v) if v else np.zeros((0, rows), np.int64) for k, v in cols.items()}
    flat = {k: v.reshape(-1) for k, v in cat.items()}
    units = Units(flat["start"], flat["pos"], flat["count"], flat["pos"], seq_len, chunk, T, flat["wlen"])
    nb = cat["start"].shape[0]
    blocks = [np.arange(b * rows, (b + 1) * rows) for b in range(nb)]
    return Plan(docs, rounds, rows, chunk, units, blocks, np.asarray(block_round, np.int64),
                cat["start"] + cat["pos"], cat["count"], cat["train"], row_doc,
                phases_of(docs, rounds, prefix_docs, num_phases))
