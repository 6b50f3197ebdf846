"""The black-box and ledger checks of the audit (variants-and-compliance §5.2).

Each check reruns (or reads) the procedure of golf_jax/audit/procedure.py and returns a
`Check`: PASS / FAIL / SKIP, one line of evidence (the worst difference, where and on
which token), and details for the JSON report.

* noise floor (T0): the same stream twice must give bit-identical scores; otherwise
  the flip test's tolerance is 10× the largest difference seen.
* flip test (C1, causality): replace every token after t; every score of a target
  ≤ t (a target index < t) must stay bit-identical, in every stage — every such score
  made before the first score of a target after t in evaluation order (the base run's
  ledger): an evaluator that permutes documents (phased TTT) may legally score an
  earlier document after a later one and adapt on the later one first (§5.2 C1).
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


def noise_floor(base: dict, again: dict) -> Check:
    worst, where = 0.0, ""
    for stage, r in base.items():
        d = _diff(r.nll, again[stage].nll)
        if d.size and d.max() > worst:
            worst, where = float(d.max()), f"{stage}, target {int(d.argmax())}"
    if worst == 0.0:
        return Check("noise floor", PASS, "two runs on the same stream are bit-identical in every stage",
                     {"max_abs_diff": 0.0, "tolerance": 0.0})
    tol = 10 * worst
    return Check("noise floor", PASS, f"runs differ by up to {worst:.3g} ({where}); the flip test allows {tol:.3g}",
                 {"max_abs_diff": worst, "tolerance": tol})


def flip_positions(tokens: np.ndarray, seq_len: int, stride: int, rows: int, chunk: int, bos: int, count: int,
                   rng: np.random.Generator) -> list[int]:
    """Flip points t, stratified (§5.2), most telling first: inside a TTT chunk and a batch of
    windows (so that later targets of the same chunk and batch change), just after a chunk
    boundary, a document start, inside the first batch, on a chunk boundary, a window's
    first scored target, near the end; then random ones. Targets < t must not move."""
    T = len(tokens) - 1
    ctx = seq_len - stride
    batch_span = rows * stride  # targets one batch of windows scores, past window 0
    first_batch = seq_len + batch_span  # window 0 plus the first batch of later windows
    docs = np.flatnonzero(tokens[1:-1] == bos) + 1
    docs = docs[docs > seq_len]
    cands = [chunk + chunk // 2 + 3, chunk + 1, seq_len + batch_span // 2 + 5]
    cands += [int(docs[0])] if docs.size else []
    cands += [chunk, first_batch + 1, ctx + 3 * stride, T - stride // 2]
    out: list[int] = []
    for t in cands:
        if 1 <= t < T and t not in out:
            out.append(int(t))
    while len(out) < count and len(out) < T - 1:
        t = int(rng.integers(seq_len // 2, T))
        if t not in out:
            out.append(t)
    return sorted(out[:count])


def _before_exposure(rank: np.ndarray, t: int) -> np.ndarray:
    """Of targets < t, those scored no later than the first score event of a target ≥ t."""
    later = rank[t:][rank[t:] >= 0]
    return rank[:t] <= (later.min() if later.size else np.iinfo(np.int64).max)


def flip_test(proc, tokens: np.ndarray, base: dict, positions: list[int], vocab: int, tol: float,
              rng: np.random.Generator, sp=None) -> Check:
    stats = {s: {"compared": 0, "violations": 0, "worst": 0.0, "scored_after_exposure": 0} for s in base}
    ranks = {s: r.ledger.score_rank() for s, r in base.items()}
    worst = None  # (|Δ|, stage, t, target)
    for t in positions:
        flipped = tokens.copy()
        n = len(tokens) - t - 1
        flipped[t + 1 :] = (tokens[t + 1 :].astype(np.int64) + rng.integers(1, vocab, n)) % vocab
        res = proc(flipped)
        for stage, r in res.items():
            keep = _before_exposure(ranks[stage], t)
            d = np.where(keep, _diff(base[stage].nll[:t], r.nll[:t]), 0.0)
            scored = ~np.isnan(base[stage].nll[:t])
            st = stats[stage]
            st["scored_after_exposure"] += int((scored & ~keep).sum())
            scored &= keep
            st["compared"] += int(scored.sum())
            bad = d > tol
            st["violations"] += int(bad.sum())
            if bad.any():
                k = int(np.argmax(d))
                st["worst"] = max(st["worst"], float(d[k]))
                if worst is None or d[k] > worst[0]:
                    worst = (float(d[k]), stage, t, k)
    compared = sum(s["compared"] for s in stats.values())
    details = {"positions": positions, "tolerance": tol, "stages": stats}
    head = f"{len(positions)} flips × {len(stats)} stage(s), {compared:,} earlier scores compared"
    reordered = sum(s["scored_after_exposure"] for s in stats.values())
    if reordered:
        head += f" ({reordered:,} more were scored after a later target, in evaluation order)"
    if worst is None:
        same = "bit-identical" if tol == 0 else f"within {tol:.3g}"
        return Check("flip test", PASS, f"{head}: all {same}", details)
    d, stage, t, k = worst
    failing = ", ".join(f"{s} {v['violations']:,}" for s, v in stats.items() if v["violations"])
    details["worst"] = {"abs_diff": d, "stage": stage, "flip_after": t, "target": k, "token": int(tokens[k + 1])}
    return Check("flip test", FAIL,
                 f"{head}: changed scores {failing}; worst |Δ| {d:.3g} nats in {stage} at target {k} "
                 f"({token_name(sp, tokens[k + 1])}) after the tokens after {t} were replaced", details)


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


def probe_positions(T: int, seq_len: int, stride: int, chunk: int, count: int, rng: np.random.Generator) -> list[int]:
    """Token indices i for the counterfactual sum: the first target of a TTT chunk (so the
    stream holds a chunk trained on), then inside a window's scored span."""
    cands = [chunk + 1, chunk + seq_len // 2 + 3, chunk + stride + 1]
    out = [i for i in cands if seq_len < i < T]
    while len(out) < count:
        i = int(rng.integers(seq_len + 1, max(T - seq_len, seq_len + 2)))
        if i not in out:
            out.append(i)
    return out[:count]


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
