"""The black-box and ledger checks of the audit (docs/reference-notes.md#checker).

Each check reruns (or reads) the procedure of golf_jax/audit/procedure.py and returns a
`Check`: PASS / FAIL / SKIP, one line of evidence (the worst difference, where and on
which token), and details for the JSON report.

* noise floor (T0): the same stream twice must give bit-identical scores; a difference
  is a finding (nondeterminism FAILs), and each target's flip tolerance is 10× its own
  run-to-run difference, so noise on one target loosens no other.
* flip test (C1, causality): replace every token after a cut in *stream* order, whatever
  order the evaluator scores in: every target before the cut must keep its score, in
  every stage. Where documents are declared, they come in the order the evaluator first
  scores them (phased TTT legally adapts on a later document it scored first); within a
  document, tokens keep their order. Cuts fall inside every stage's first-scored block
  and near the end of each reordered stream, so that every block is compared.
* normalization (C2): at sampled targets the full distribution is finite, sums to 1
  within fp32 rounding, and the recorded NLL is −log p(target) of it.
* counterfactual sum (C3): put every vocabulary entry v in turn at token i (on a
  stream cut shortly after i) and sum the probabilities p_v(v) the evaluator gives it:
  Z must be 1. log₂ Z is the number of bits an evaluator takes from the answer. This
  catches target-dependent distributions (a cache that fires only on a hit) that
  leave the flip test and C2 clean.
* ledger (C4): every target scored exactly once in one pass, no update or fit reads
  a target before it is scored, no weights adapted on val before the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import NamedTuple

import numpy as np

from golf_jax.eval.harness import NORMALIZATION_TOL

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
NLL_TOL = 1e-6  # recorded NLL vs −log p(target): a few fp32 ulps at NLL ≈ 1–10 nats
# Σ_v exp(−nll_v): each fp32 NLL near 10 nats is off by up to ~1e-6 relative, and so is
# the log-softmax normaliser; their sum stays within 1e-5 of 1.
COUNTERFACTUAL_TOL = 1e-5


@dataclass
class Check:
    name: str
    status: str
    evidence: str
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "evidence": self.evidence, "details": self.details}


def token_name(sp, token: int) -> str:
    """`id 262 '▁the'` (the piece as the tokenizer spells it)."""
    if sp is None or not 0 <= int(token) < sp.get_piece_size():
        return f"id {int(token)}"  # e.g. the counterfactual sum's reduced vocabulary (ids mod audit.probe_vocab)
    return f"id {int(token)} {sp.id_to_piece(int(token))!r}"


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a − b|, 0 where both are unscored (NaN), inf where only one is."""
    both = np.isnan(a) & np.isnan(b)
    one = np.isnan(a) ^ np.isnan(b)
    d = np.abs(np.nan_to_num(a) - np.nan_to_num(b))
    return np.where(both, 0.0, np.where(one, np.inf, d))


def noise_floor(runs: list[dict]) -> tuple[Check, dict]:
    """Runs of the same stream (two, or three when the first two differ) → the check and,
    per stage, each target's tolerance: 10× its own largest run-to-run difference.

    Nondeterminism is a finding in its own right (FAIL): the audit cannot tell noise from
    a dependence it hides, and a repeatable evaluator draws its randomness from
    EvalContext.seed, which every rerun passes alike. The per-target tolerance keeps the
    flip test honest elsewhere: noise on one target loosens that target only.
    """
    base = runs[0]
    tol, worst, where, noisy = {}, 0.0, "", 0
    for stage, r in base.items():
        d = np.max([_diff(r.nll, other[stage].nll) for other in runs[1:]], axis=0)
        d = np.where(np.isfinite(d), d, np.inf)
        tol[stage] = 10 * d
        noisy += int(np.sum(d > 0))
        if d.size and d.max() > worst:
            worst, where = float(d.max()), f"{stage}, target {int(d.argmax())}"
    details = {"runs": len(runs), "max_abs_diff": worst, "nondeterministic_targets": noisy}
    if worst == 0.0:
        return Check("noise floor", PASS, f"{len(runs)} runs on the same stream are bit-identical in every stage",
                     details), tol
    return Check("noise floor", FAIL,
                 f"nondeterministic: {noisy:,} target score(s) differ between {len(runs)} runs of the same stream, "
                 f"by up to {worst:.3g} ({where}); the flip test allows each target 10× its own difference. "
                 "Make it repeatable: draw randomness from EvalContext.seed (the same in every rerun)",
                 details), tol


def stream_order(rank: np.ndarray, starts: np.ndarray, num_tokens: int) -> np.ndarray:
    """Per token position, its place in the stream the rules are about (docs/reference-notes.md#checker C1).

    Tokens in stream order, except that where documents are declared (`starts`) they come in
    the order the evaluator first scores them: the rule is "target t may depend on the
    artifact and on the tokens before t in its document, and on documents scored before
    its own", whatever order the evaluator scores blocks in. `rank` is the base run's score
    rank per target (ledger.score_rank); ties, and evaluators that score in one pass, keep
    stream order. A document's tokens are its targets' inputs [s_d, s_{d+1}).
    """
    T = len(rank)
    pos = np.arange(num_tokens)
    starts = np.unique(np.concatenate([[0], np.asarray(starts, np.int64)]))
    starts = starts[starts < max(T, 1)]
    doc_of_target = np.searchsorted(starts, np.arange(T), side="right") - 1
    scored = rank >= 0
    doc_rank = np.full(len(starts), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(doc_rank, doc_of_target[scored], rank[scored])
    doc = np.searchsorted(starts, np.minimum(pos, max(T - 1, 0)), side="right") - 1
    order = np.lexsort((pos, doc_rank[doc]))
    place = np.empty(num_tokens, np.int64)
    place[order] = np.arange(num_tokens)
    return place


@dataclass
class Flip:
    """Replace every token after `cut` in one stage's stream order (None: plain stream order)."""

    cut: int
    order: str | None = None
    why: str = ""


def flip_plan(tokens: np.ndarray, ranks: dict, places: dict, geometry: dict, bos: int, count: int,
              rng: np.random.Generator) -> list[Flip]:
    """Flip points, most telling first (docs/reference-notes.md#checker C1), so that every stage's blocks are reached:

    inside the first-scored block of every stage that scores in blocks (whatever its place
    in the stream), near the end of each such stage's stream (every earlier block compared),
    inside each other block of a reordered stream, then the stratified stream positions
    (inside a TTT chunk and a batch of windows, after a chunk boundary and a document
    start, a window's first scored target, near the end),
    then a point inside each other block, first-scored first, then random ones.
    `geometry`: seq_len, stride, rows, chunk.
    """
    T = len(tokens) - 1
    seq_len, stride, rows, chunk = (int(geometry[k]) for k in ("seq_len", "stride", "rows", "chunk"))
    firsts, ends, reordered_rest, rest = [], [], [], []
    for stage, rank in ranks.items():
        blocks = np.unique(rank[rank >= 0])
        place = places[stage]
        reordered = not np.array_equal(place, np.arange(len(place)))
        for i, r in enumerate(blocks):
            member = np.flatnonzero(rank == r)
            inner = member[np.argsort(place[member], kind="stable")][1:]  # not its stream-first target
            if not inner.size:
                continue
            c = int(inner[rng.integers(len(inner) // 4, max(3 * len(inner) // 4, len(inner) // 4 + 1))])
            flip = Flip(c, stage if reordered else None, f"inside block {i} of {stage}")
            (firsts if i == 0 and len(blocks) > 1 else reordered_rest if reordered else rest).append(flip)
        if reordered:
            last = np.argsort(place[:T])[-1 - stride // 2 :]
            ends.append(Flip(int(last[0]), stage, f"near the end of {stage}'s order"))
        elif len(blocks) > 1:
            ends.append(Flip(T - stride // 2, None, "near the end of the stream"))
    docs = np.flatnonzero(tokens[1:-1] == bos) + 1
    docs = docs[docs > seq_len]
    batch_span = rows * stride
    strat = [chunk + chunk // 2 + 3, chunk + 1, seq_len + batch_span // 2 + 5] + ([int(docs[0])] if docs.size else [])
    strat += [chunk, seq_len + batch_span + 1, seq_len - stride + 3 * stride, T - stride // 2]
    plan = firsts + ends + reordered_rest + [Flip(t, None, "stratified") for t in strat] + rest
    out: list[Flip] = []
    for f in plan:
        if 1 <= f.cut < T and all((f.cut, f.order) != (g.cut, g.order) for g in out):
            out.append(f)
    while len(out) < count and len(out) < T - 1:
        t = int(rng.integers(seq_len // 2, T))
        if all(t != g.cut for g in out):
            out.append(Flip(t, None, "random"))
    return out[:count]


class Stream(NamedTuple):
    """The audited token stream: its tokens, the vocabulary they are drawn from, the BOS id that
    delimits its documents (-1: none) and the tokenizer that names tokens in the evidence."""

    tokens: np.ndarray
    vocab: int
    bos: int = -1
    sp: object = None


def flip_test(proc, stream: Stream, base: dict, flips: list[Flip], tol: dict, rng: np.random.Generator,
              places: dict) -> Check:
    """Each flip replaces the tokens after its cut (in a stage's document order, BOS tokens
    stay: the documents are as declared); in every stage, every target before the earliest
    replaced token in that stage's order, whose answer is unchanged, must keep its score
    (within its own noise tolerance `tol[stage]`, per target)."""
    tokens, vocab, bos, sp = stream
    stats = {s: {"compared": 0, "violations": 0, "worst": 0.0, "blocks": 0, "blocks_reached": 0} for s in base}
    ranks = {s: r.ledger.score_rank() for s, r in base.items()}
    reached = {s: set() for s in base}
    worst = None  # (|Δ|, stage, flip, target)
    natural = np.arange(len(tokens))
    keep_token = tokens == bos
    for f in flips:
        order = places[f.order] if f.order is not None else natural
        changed = order > order[f.cut]
        if f.order is not None:  # in a document order, the documents stay as declared
            changed &= ~keep_token
        flipped = tokens.copy()
        n = int(changed.sum())
        new = (tokens[changed].astype(np.int64) + rng.integers(1, vocab, n)) % vocab
        if 0 <= bos < vocab:  # never a new BOS: documents stay as declared
            new = np.where(new == bos, (new + 1) % vocab, new)
        flipped[changed] = new
        res = proc(flipped)
        for stage, r in res.items():
            T = len(base[stage].nll)
            first = places[stage][changed].min() if n else np.iinfo(np.int64).max
            keep = (places[stage][:T] < first) & ~changed[1 : T + 1]  # inputs before the change, answer unchanged
            keep &= ~np.isnan(base[stage].nll)
            d = np.where(keep, _diff(base[stage].nll, r.nll), 0.0)
            st = stats[stage]
            st["compared"] += int(keep.sum())
            reached[stage].update(np.unique(ranks[stage][keep]).tolist())
            bad = d > tol[stage]
            st["violations"] += int(bad.sum())
            if bad.any():
                k = int(np.argmax(d - tol[stage]))
                st["worst"] = max(st["worst"], float(d[k]))
                if worst is None or d[k] > worst[0]:
                    worst = (float(d[k]), stage, f, k)
    for stage, st in stats.items():
        blocks = set(np.unique(ranks[stage][ranks[stage] >= 0]).tolist())
        st["blocks"], st["blocks_reached"] = len(blocks), len(blocks & reached[stage])
    compared = sum(s["compared"] for s in stats.values())
    details = {"flips": [{"cut": f.cut, "order": f.order or "stream", "why": f.why} for f in flips],
               "stages": stats}
    reach = ", ".join(f"{s} {v['blocks_reached']}/{v['blocks']}" for s, v in stats.items())
    head = (f"{len(flips)} flips × {len(stats)} stage(s), {compared:,} earlier scores compared in stream order "
            f"(blocks reached: {reach})")
    if worst is None:
        noisy = any(np.any(t > 0) for t in tol.values())
        same = "within each target's own noise" if noisy else "bit-identical"
        return Check("flip test", PASS, f"{head}: all {same}", details)
    d, stage, f, k = worst
    failing = ", ".join(f"{s} {v['violations']:,}" for s, v in stats.items() if v["violations"])
    details["worst"] = {"abs_diff": d, "stage": stage, "flip_after": f.cut, "order": f.order or "stream",
                        "target": k, "token": int(tokens[k + 1])}
    where = "" if f.order is None else f" in {f.order}'s document order"
    return Check("flip test", FAIL,
                 f"{head}: changed scores {failing}; worst |Δ| {d:.3g} nats in {stage} at target {k} "
                 f"({token_name(sp, tokens[k + 1])}) after the tokens after {f.cut}{where} were replaced", details)


def normalization(base: dict, tokens: np.ndarray, vocab: int, sp=None) -> Check:
    worst_lse = worst_nll = 0.0  # signed log Σp of the worst distribution; |NLL + log p(y)|
    where_lse = where_nll = None
    bad_shape = nonfinite = count = 0
    for stage, r in base.items():
        for k, (logp, nll) in (r.probes or {}).items():
            count += 1
            if logp.shape != (vocab,):
                bad_shape += 1
                continue
            if np.isnan(logp).any() or np.isposinf(logp).any():  # −inf (p = 0) is a valid entry
                nonfinite += 1
                continue
            lp = logp.astype(np.float64)
            m = lp.max()
            lse = m + np.log(np.sum(np.exp(lp - m)))
            err = abs(nll + lp[int(tokens[k + 1])])
            if abs(lse) > abs(worst_lse):
                worst_lse, where_lse = float(lse), (stage, k)
            if err > worst_nll:
                worst_nll, where_nll = float(err), (stage, k)
    details = {"positions": count, "worst_log_sum": worst_lse, "max_nll_error": worst_nll,
               "lse_tolerance": NORMALIZATION_TOL, "nll_tolerance": NLL_TOL, "vocab": vocab}
    if count == 0:
        return Check("normalization", SKIP, "no probed positions were scored", details)
    problems = []
    if bad_shape:
        problems.append(f"{bad_shape} distributions are not over the whole vocabulary of {vocab}")
    if nonfinite:
        problems.append(f"{nonfinite} distributions hold NaN or +inf")
    if abs(worst_lse) > NORMALIZATION_TOL:
        s, k = where_lse
        problems.append(f"Σ_v p(v) = {np.exp(worst_lse):.6g} in {s} at target {k} "
                        f"(next token {token_name(sp, tokens[k + 1])})")
    if worst_nll > NLL_TOL:
        s, k = where_nll
        problems.append(f"the recorded NLL differs from −log p(target) by {worst_nll:.3g} in {s} at target {k}")
    if problems:
        return Check("normalization", FAIL, f"{count} distributions: " + "; ".join(problems), details)
    return Check("normalization", PASS,
                 f"{count} distributions over {vocab} tokens: |log Σp| ≤ {abs(worst_lse):.2g}, "
                 f"|NLL + log p(target)| ≤ {worst_nll:.2g}", details)


def probe_positions(T: int, seq_len: int, stride: int, chunk: int, count: int, rng: np.random.Generator,
                    late: bool = False) -> list[int]:
    """Token indices i for the counterfactual probes, across the whole stream: the first
    target of a TTT chunk (so the stream holds a chunk trained on; `late`: no chunk, but
    after the longest history the slice has, where a cache that only turns on after many
    scored tokens is on), then random ones anywhere past the first window."""
    out = [i for i in ([chunk + 1] if not late else [T - stride // 2 - 1]) if seq_len < i < T]
    while len(out) < count:
        i = int(rng.integers(seq_len + 1, T))
        if i not in out:
            out.append(i)
    return out[:count]


def answer_independence(proc, stream: Stream, positions: list[int], samples: int, seq_len: int,
                        rng: np.random.Generator, progress=None) -> Check:
    """C3 on the full vocabulary, sampled: at token i, the distribution the evaluator scores
    target i−1 with must not depend on token i. Each probe runs the stream (cut after i's
    window, as C3) with token i as it is, then with other ids in its place, drawn in turn
    from the window before i (where a cache keyed on the answer fires), uniformly from the
    whole vocabulary, and from that distribution; every full distribution at i−1 must
    equal the first within fp32 rounding. Ẑ = mean p_v(v)/q(v) estimates Σ_v p_v(v)."""
    tokens, vocab, _, sp = stream
    per: list[dict] = []
    worst = None  # (max |Δ log p|, stage, i, v)
    for i in positions:
        n = -(-i // seq_len) * seq_len
        stream = tokens[: n + 1].copy()
        ref = proc(stream, probe_targets=[i - 1])
        if progress is not None:
            progress(1)
        for stage, r in ref.items():
            if i - 1 not in (r.probes or {}):
                per.append({"stage": stage, "position": i, "unscored": True})
        ref_logp = {s: r.probes[i - 1].logp.astype(np.float64) for s, r in ref.items() if i - 1 in (r.probes or {})}
        ratios: dict[str, list] = {s: [] for s in ref_logp}
        seen = np.bincount(tokens[max(0, i - seq_len) : i], minlength=vocab)[:vocab].astype(np.float64)
        hist = seen / seen.sum()  # the recent history: the ids a cache keyed on the answer fires on
        first = np.exp(next(iter(ref_logp.values()))) if ref_logp else np.full(vocab, 1.0 / vocab)
        model = first / first.sum()
        for k in range(samples):
            draw = (hist, np.full(vocab, 1.0 / vocab), model)[k % 3]
            v = int(rng.choice(vocab, p=draw))
            stream[i] = v
            for stage, r in proc(stream, probe_targets=[i - 1]).items():
                if stage not in ref_logp:
                    continue
                logp = r.probes[i - 1].logp.astype(np.float64) if i - 1 in (r.probes or {}) else np.full(vocab, np.nan)
                d = float(np.nanmax(np.abs(logp - ref_logp[stage]))) if not np.isnan(logp).all() else np.inf
                q = (hist[v] + 1.0 / vocab + model[v]) / 3  # the mixture the ids were drawn from
                ratios[stage].append(np.exp(-r.nll[i - 1]) / q if np.isfinite(r.nll[i - 1]) else np.inf)
                if worst is None or d > worst[0]:
                    worst = (d, stage, i, v)
            if progress is not None:
                progress(1)
        stream[i] = tokens[i]
        for stage, x in ratios.items():
            per.append({"stage": stage, "position": i, "samples": len(x),
                        "Z_estimate": float(np.mean(x)) if x else 1.0})
    details = {"positions": positions, "samples": samples, "vocab": vocab, "tolerance": COUNTERFACTUAL_TOL,
               "probes": per, "max_abs_logp_change": None if worst is None else worst[0]}
    if not positions or samples < 1:
        return Check("answer independence", SKIP, "no sampled probes (audit.vocab_probes or audit.vocab_samples is 0)",
                     details)
    head = f"{len(positions)} position(s) × {samples} ids from the whole vocabulary of {vocab}"
    missing = [p for p in per if p.get("unscored")]
    if missing:
        return Check("answer independence", FAIL, f"{head}: {missing[0]['stage']} did not score target "
                     f"{missing[0]['position'] - 1}", details)
    d, stage, i, v = worst
    if d > COUNTERFACTUAL_TOL:
        z = max((p for p in per if p["stage"] == stage), key=lambda p: abs(p["Z_estimate"] - 1))["Z_estimate"]
        return Check("answer independence", FAIL,
                     f"{head}: the distribution at target {i - 1} in {stage} moves by up to {d:.3g} in log p when "
                     f"token {i} is {token_name(sp, v)} instead of {token_name(sp, tokens[i])} (Ẑ ≈ {z:.3g})",
                     details)
    return Check("answer independence", PASS, f"{head}: every distribution unchanged (|Δ log p| ≤ {d:.2g})", details)


def counterfactual(proc, tokens: np.ndarray, positions: list[int], vocab: int, seq_len: int, sp=None,
                   progress=None) -> Check:
    """Z_i = Σ_v exp(−nll_{i−1}) with token i set to v, on tokens[: ⌈i/L⌉·L + 1]."""
    per: list[dict] = []
    for i in positions:
        n = -(-i // seq_len) * seq_len
        stream = tokens[: n + 1].copy()
        nll: dict[str, np.ndarray] = {}
        for v in range(vocab):
            stream[i] = v
            for stage, r in proc(stream).items():
                nll.setdefault(stage, np.full(vocab, np.nan))[v] = r.nll[i - 1]
            if progress is not None:
                progress(1)
        for stage, x in nll.items():
            z = float(np.sum(np.exp(-x[np.isfinite(x)]))) if np.isfinite(x).all() else float("nan")
            per.append({"stage": stage, "position": i, "Z": z, "stream_tokens": n + 1,
                        "leak_bits": float(np.log2(z)) if z > 0 else float("nan")})
    details = {"positions": positions, "vocab": vocab, "tolerance": COUNTERFACTUAL_TOL, "sums": per}
    if not per:
        return Check("counterfactual sum", SKIP, "no probe positions (audit.probes=0)", details)
    unscored = [p for p in per if not np.isfinite(p["Z"])]
    bad = [p for p in per if np.isfinite(p["Z"]) and abs(p["Z"] - 1.0) > COUNTERFACTUAL_TOL]
    worst = max(per, key=lambda p: abs(p["Z"] - 1.0) if np.isfinite(p["Z"]) else -1.0)
    head = f"{len(positions)} position(s) × {vocab} tokens"
    if unscored:
        p = unscored[0]
        return Check("counterfactual sum", FAIL, f"{head}: {p['stage']} did not score target {p['position'] - 1} "
                     f"for every token in its slot", details)
    if bad:
        p = max(bad, key=lambda q: abs(q["Z"] - 1.0))
        stages_bad = sorted({q["stage"] for q in bad})
        return Check("counterfactual sum", FAIL,
                     f"{head}: Z = {p['Z']:.6g} ({p['leak_bits']:+.3g} bits) in {p['stage']} at target "
                     f"{p['position'] - 1} (after {token_name(sp, tokens[p['position'] - 1])}); failing: "
                     f"{', '.join(stages_bad)}", details)
    return Check("counterfactual sum", PASS, f"{head}: |Z − 1| ≤ {abs(worst['Z'] - 1.0):.2g} in every stage", details)


def ledger(base: dict) -> Check:
    per = {stage: r.ledger.verify() for stage, r in base.items()}
    bad = {s: p for s, p in per.items() if p}
    details = {"stages": per}
    if not bad:
        n = sum(len(r.ledger.events) for r in base.values())
        return Check("ledger", PASS, f"{len(per)} stage(s), {n} events: every target scored once, nothing read "
                     "before it was scored", details)
    return Check("ledger", FAIL, "; ".join(f"{s}: {p[0]}" + (f" (+{len(p) - 1} more)" if len(p) > 1 else "")
                                           for s, p in bad.items()), details)
