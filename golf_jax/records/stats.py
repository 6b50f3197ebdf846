"""Multi-seed statistics for a record claim, in the unit of the challenge's rule.

The rule (upstream README, "Submission Process"): a new record must beat the SOTA by at
least 0.005 nats, shown at p < 0.01 over the submitted runs. Nats are val_loss, the mean
cross-entropy per token; val_bpb = val_loss / ln 2 · tokens / bytes. So the test runs on
val_loss: H0 mean val_loss ≥ SOTA − 0.005 nats against H1 below it, a one-sided
one-sample t-test (scipy.stats.ttest_1samp) with the seeds' sample std (ddof = 1).

The leaderboard quotes the SOTA in bpb. It is converted with the runs' own ratio
val_loss / val_bpb = ln 2 · bytes / tokens, a property of the val set and the tokenizer
that every seed shares, the way merged records state their margins ("0.01992 BPB /
0.04359 nats", #1855). In bpb the same test has the threshold SOTA − 0.005 / ratio.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

MARGIN_NATS = 0.005  # the improvement a record must show
ALPHA = 0.01  # ... at this significance
RATIO_RTOL = 1e-6  # val_loss / val_bpb of runs on one val set agree to float rounding


@dataclass(frozen=True)
class RecordTest:
    n: int
    mean_loss: float  # nats per token
    std_loss: float  # sample std (ddof=1); nan for one run
    mean_bpb: float
    std_bpb: float
    nats_per_bpb: float  # val_loss / val_bpb = ln 2 · bytes / tokens
    sota_bpb: float
    sota_loss: float  # the SOTA in nats on this val set
    threshold_loss: float  # SOTA − 0.005 nats: H0 says the mean is at or above it
    delta_bpb: float  # mean − SOTA (negative: better)
    delta_nats: float
    t: float  # nan for one run
    df: int
    p: float  # one-sided; nan for one run
    significant: bool  # p < ALPHA

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def nats_per_bpb(losses: Sequence[float], bpbs: Sequence[float]) -> float:
    """The runs' common val_loss / val_bpb; runs that disagree were scored on different val sets."""
    ratios = np.asarray(losses, np.float64) / np.asarray(bpbs, np.float64)
    if not np.allclose(ratios, ratios[0], rtol=RATIO_RTOL, atol=0):
        raise ValueError(f"val_loss / val_bpb differs between the runs ({ratios.min():.8f} .. {ratios.max():.8f}): "
                         "they were scored on different val sets or tokenizers (eval.max_tokens, data.dir); "
                         "a record compares runs on the full val split")
    return float(ratios.mean())


def record_test(losses: Sequence[float], bpbs: Sequence[float], sota_bpb: float) -> RecordTest:
    """The one-sided t-test of the runs' val_loss against SOTA − MARGIN_NATS."""
    try:
        from scipy import stats
    except ImportError as e:
        raise ImportError("golf_jax.records needs scipy: pip install -e '.[tools]'") from e

    loss, bpb = np.asarray(losses, np.float64), np.asarray(bpbs, np.float64)
    if loss.size == 0 or loss.shape != bpb.shape:
        raise ValueError(f"need one val_loss and one val_bpb per run, got {loss.size} and {bpb.size}")
    ratio = nats_per_bpb(loss, bpb)
    sota_loss = sota_bpb * ratio
    threshold = sota_loss - MARGIN_NATS
    n = int(loss.size)
    t = p = math.nan
    if n >= 2:
        with warnings.catch_warnings():  # identical losses: scipy warns, and gives t = ±inf, p = 0 or 1
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.ttest_1samp(loss, threshold, alternative="less")
        t, p = float(res.statistic), float(res.pvalue)
    std = lambda x: float(np.std(x, ddof=1)) if n >= 2 else math.nan  # noqa: E731
    return RecordTest(n=n, mean_loss=float(loss.mean()), std_loss=std(loss), mean_bpb=float(bpb.mean()),
                      std_bpb=std(bpb), nats_per_bpb=ratio, sota_bpb=float(sota_bpb), sota_loss=sota_loss,
                      threshold_loss=threshold, delta_bpb=float(bpb.mean()) - sota_bpb,
                      delta_nats=float(loss.mean()) - sota_loss, t=t, df=n - 1, p=p,
                      significant=bool(p < ALPHA))


def verdict(test: RecordTest) -> str | None:
    """None when the statistics make a record, else why not (one line)."""
    if test.n < 2:
        return f"one run: a t-test needs at least 2 seeds (the README asks for enough runs to show p < {ALPHA})"
    if test.significant:
        return None
    return (f"not shown to beat the SOTA by {MARGIN_NATS} nats: mean val_loss {test.mean_loss:.5f} against the "
            f"threshold {test.threshold_loss:.5f} (SOTA {test.sota_loss:.5f} − {MARGIN_NATS}), "
            f"p = {test.p:.3g} ≥ {ALPHA}")
