"""The compliance audit (golf_jax/audit): each check catches the toy evaluator broken for it
(tests/audit_toys.py), every check passes the legal ones, the seed configs fail, and the
budget checks read artifacts and timings."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import audit_toys
from golf_jax.audit import budgets, checks
from golf_jax.audit.__main__ import load_factory
from golf_jax.audit.run import run_audit
from golf_jax.config import base_config
from golf_jax.core.errors import UserError
from golf_jax.core.paths import REPO_ROOT

SMALL = {"tokens": 2048, "flips": 4, "probes": 1, "probe_vocab": 16, "vocab_probes": 1, "vocab_samples": 2,
         "normalization_positions": 16}
CHECKS = ("noise floor", "flip test", "normalization", "counterfactual sum", "answer independence", "ledger",
          "declared flags")


def _small(cfg):
    for k, v in SMALL.items():
        cfg.audit[k] = v
    return cfg


def _status(report) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


@functools.lru_cache(maxsize=None)
def _toy_report(name: str) -> dict:
    """One audit per toy and test process (the random model's compiles are shared)."""
    return run_audit(_small(base_config()), custom=getattr(audit_toys, name), log=lambda m: None)


class _Reports:
    def __getitem__(self, name: str) -> dict:
        return _toy_report(name)


@pytest.fixture
def toy_reports(shared_data):
    return _Reports()


# Which check each broken toy is built for (it must fail); the others may fail too, except
# where the toy is one that only that check catches.
CAUGHT_BY = {
    "peek_next": ("flip test", ()),
    "scaled": ("normalization", ()),
    "hit_cache": ("counterfactual sum", ("flip test", "normalization", "ledger")),  # only C3 sees it
    # inert early (on after 1,000 scored targets) or on ids 0-31 (the reduced vocabulary): probed late, on the
    # full vocabulary
    "late_hit_cache": ("answer independence", ("flip test", "normalization", "ledger")),
    "high_id_cache": ("answer independence", ("flip test", "normalization", "counterfactual sum", "ledger")),
    "update_before_score": ("ledger", ()),
    "double_score": ("ledger", ()),
    "batch_shared": ("ledger", ()),
    # scored out of stream order (a warm-up block from the end, or last to first): caught in stream order
    "end_first_peek": ("flip test", ("noise floor", "ledger")),
    "reversed_peek": ("flip test", ("noise floor", "ledger")),
    "noisy_peek": ("flip test", ()),  # noise on one target loosens that target only; and is a finding
    "scale_keyed": ("flip test", ("noise floor",)),  # told the real evaluation's size, it peeks in the audit
}


@pytest.mark.parametrize("toy", sorted(CAUGHT_BY))
def test_each_broken_toy_is_caught(toy_reports, toy):
    check, clean = CAUGHT_BY[toy]
    status = _status(toy_reports[toy])
    assert status[check] == "FAIL", (toy, status)
    assert all(status[c] == "PASS" for c in clean), (toy, status)
    assert toy_reports[toy]["verdict"] == "FAIL"


def test_reordered_and_noisy_toys_say_why(toy_reports):
    flip = {c["name"]: c for c in toy_reports["end_first_peek"]["checks"]}["flip test"]
    stats = flip["details"]["stages"]["end_first_peek"]
    assert stats["blocks"] > 1 and stats["blocks_reached"] == stats["blocks"]  # the first-scored block included
    assert flip["details"]["flips"][0]["why"] == "inside block 0 of end_first_peek"
    noisy = {c["name"]: c for c in toy_reports["noisy_peek"]["checks"]}
    assert noisy["noise floor"]["status"] == "FAIL" and "nondeterministic: 1 target" in noisy["noise floor"]["evidence"]
    assert noisy["noise floor"]["details"]["runs"] == 3


def test_the_evaluator_is_told_the_real_evaluations_sizes(toy_reports):
    """FineWeb-200 stands in for the official val set: the evaluator is told that set's sizes."""
    report = toy_reports["scale_keyed"]
    assert report["told"] == {"num_targets": 62_021_632, "num_documents": 50_000, "seed": 0}
    assert report["slice"]["targets"] == 2048


def test_batch_shared_fit_is_also_a_flip_violation(toy_reports):
    r = toy_reports["batch_shared"]
    flip = next(c for c in r["checks"] if c["name"] == "flip test")
    assert flip["status"] == "FAIL" and flip["details"]["worst"]["target"] < flip["details"]["worst"]["flip_after"]
    ledger = next(c for c in r["checks"] if c["name"] == "ledger")
    assert "score before fit" in ledger["evidence"]


def test_evidence_names_the_worst_difference(toy_reports):
    c = {c["name"]: c for c in toy_reports["scaled"]["checks"]}
    assert "Σ_v p(v) = 1.25" in c["normalization"]["evidence"]
    assert abs(c["counterfactual sum"]["details"]["sums"][0]["Z"] - 1.25) < 1e-5
    hit = {c["name"]: c for c in toy_reports["hit_cache"]["checks"]}["counterfactual sum"]
    assert hit["details"]["sums"][0]["Z"] > 1.01 and "bits" in hit["evidence"]
    dup = {c["name"]: c for c in toy_reports["double_score"]["checks"]}["ledger"]
    assert "single pass" in dup["evidence"] and "repeats" in dup["evidence"]


@pytest.mark.parametrize("toy", ["plain", "score_first_cache", "seeded_noise"])
def test_legal_toys_pass_every_check(toy_reports, toy):
    status = _status(toy_reports[toy])
    assert all(status[c] == "PASS" for c in CHECKS), status
    assert toy_reports[toy]["verdict"] == "PASS"
    flip = next(c for c in toy_reports[toy]["checks"] if c["name"] == "flip test")
    assert "bit-identical" in flip["evidence"]


def _record_report(**eval_over) -> dict:
    from configs.record import get_config

    cfg = _small(get_config())
    for k, v in eval_over.items():
        cfg.eval[k] = v
    return run_audit(cfg, log=lambda m: None)


def test_record_legal_defaults_pass(shared_data):
    """Round trip, sliding, score-first TTT and context SLOT: every check passes."""
    report = _record_report()
    status = _status(report)
    assert all(status[c] == "PASS" for c in CHECKS), report["checks"]
    assert status["data access"] == "PASS"  # calibration inside export.reserve_seconds
    assert report["verdict"] == "PASS" and report["procedure"] == ["roundtrip", "sliding", "ttt", "slot"]


def test_score_first_slot_passes(shared_data):
    """The legal SLOT shape #1735 disabled (δ carried window to window, refitted on scored targets)."""
    from configs.record import get_config

    cfg = _small(get_config())
    cfg.eval.stages, cfg.eval.slot.mode = "slot", "score_first"
    report = run_audit(cfg, log=lambda m: None)
    assert all(_status(report)[c] == "PASS" for c in CHECKS), report["checks"]


def test_lbfgs_slot_fails(shared_data):
    from configs.lbfgs_slot import get_config

    report = run_audit(_small(get_config()), log=lambda m: None)
    status = _status(report)
    assert report["verdict"] == "FAIL"
    assert status["flip test"] == status["counterfactual sum"] == status["ledger"] == "FAIL"
    assert status["normalization"] == "PASS"  # #675's distribution is normalised; it depends on the answer


def _cli(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    first = [a for a in args if a.startswith("--config=")]  # before any --config.KEY override
    argv = [sys.executable, "-m", "golf_jax.audit", *first] + [f"--config.audit.{k}={v}" for k, v in SMALL.items()]
    argv += [a for a in args if a not in first]
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_audits_a_users_evaluator_from_a_file(shared_data, tmp_path):
    out = tmp_path / "user.json"
    proc = _cli("--config=configs/smoke.py", "--evaluator=tests/audit_toys.py:plain", f"--json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["evaluator"] == "custom" and report["procedure"] == ["plain"] and report["verdict"] == "PASS"
    assert report["geometry"]["devices"] == 8  # the CLI simulates 8 host devices on a CPU
    for line in ("flip test            PASS", "counterfactual sum   PASS", "artifact bytes       SKIP",
                 "evaluator isolation  PASS    ran in its own process"):
        assert line in proc.stdout
    # (a factory that does not exist fails in the evaluator's process: test_load_factory_errors_name_the_problem)


def test_cli_isolates_an_evaluator_that_reads_val_and_patches_the_checks(shared_data, tmp_path):
    """In its own process, the evaluator's read of the validation text is recorded, and its
    replacement of the audit's flip test replaces nothing of the audit's."""
    out = tmp_path / "cheat.json"
    proc = _cli("--config=configs/smoke.py", "--evaluator=tests/audit_toys.py:reads_val", f"--json={out}",
                "--config.audit.probes=0", "--config.audit.vocab_probes=0", "--config.audit.flips=1")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    assert status["flip test"]["status"] == "FAIL"  # the audit's own flip test ran
    assert status["evaluator isolation"]["status"] == "FAIL"
    assert status["evaluator isolation"]["details"]["touched"][0].endswith("text/fineweb_val_200.jsonl")


def test_load_factory_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="MODULE:FACTORY"):
        load_factory("tests/audit_toys.py")
    with pytest.raises(UserError, match="no such file"):
        load_factory(str(tmp_path / "missing.py") + ":f")
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_factory("tests/audit_toys.py:nope")
    assert load_factory("audit_toys:plain") is audit_toys.plain


# -- budgets -------------------------------------------------------------------------


def test_artifact_budget_counts_the_code(tmp_path):
    from golf_jax.submission import codebytes

    small, big = tmp_path / "small.golfjax", tmp_path / "big.golfjax"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(b"x" * (budgets.ARTIFACT_BYTES - codebytes.code_bytes() + 1))
    ok, over = budgets.artifact(small), budgets.artifact(big)
    assert ok.status == "PASS" and ok.details["total_bytes"] == 1000 + codebytes.code_bytes()
    assert over.status == "FAIL" and "over by 1" in over.evidence
    assert budgets.artifact(None).status == "SKIP"


def test_time_budgets_count_only_on_the_target_hardware():
    cfg = base_config()
    cfg.export.format, cfg.export.calib_source, cfg.export.reserve_seconds = "gptq_int6", "train", 12.0
    run = {"train_time_s": 588.0, "stage_seconds": {"calibrate": 10.0},
           "eval_budget": {"seconds": 420.0, "hardware": "8xNVIDIA H100 80GB HBM3"}}
    assert budgets.timings(cfg, run).status == "PASS"
    assert budgets.data_access(cfg, run).status == "PASS"
    slow = {**run, "stage_seconds": {"calibrate": 55.0}}
    assert budgets.timings(cfg, slow).status == "FAIL"  # 588 + 55 s of training-data reads > 600
    assert "more than the 12.0 s reserved" in budgets.data_access(cfg, slow).evidence
    long_eval = {**run, "eval_budget": {"seconds": 750.0, "hardware": "8xH100"}}
    assert "evaluation 750.0 s > 600" in budgets.timings(cfg, long_eval).evidence
    cpu = {**run, "eval_budget": {"seconds": 9999.0, "hardware": "8xcpu"}}
    assert budgets.timings(cfg, cpu).status == "SKIP" and "not 8xH100" in budgets.timings(cfg, cpu).evidence
    assert budgets.on_target("8xNVIDIA H100 80GB HBM3", "8xH100") and not budgets.on_target("1xH100", "8xH100")


def test_data_access_after_the_clock():
    cfg = base_config()
    assert budgets.data_access(cfg).status == "PASS"  # int8 + zlib: no calibration
    cfg.export.format = "gptq_int6"
    cfg.export.calib_source = "val"
    assert "reads val" in budgets.data_access(cfg).evidence
    cfg.export.calib_source = "train"
    assert budgets.data_access(cfg).status == "FAIL"  # no reserve: calibration after the clock
    cfg.export.reserve_seconds = 12.0
    assert budgets.data_access(cfg).status == "PASS"
    cfg.export.calib_source = "selfgen"
    cfg.export.reserve_seconds = 0.0
    assert budgets.data_access(cfg).status == "PASS"
    cfg.eval.prequant_ttt.mode = "flat"
    assert budgets.prequant_ttt(cfg).status == "FAIL"


def test_noise_floor_is_a_finding_with_a_tolerance_per_target():
    r = lambda nll: {"s": SimpleNamespace(nll=np.asarray(nll, np.float64))}  # noqa: E731
    same, tol = checks.noise_floor([r([1.0, np.nan]), r([1.0, np.nan])])
    assert same.status == "PASS" and not tol["s"].any()
    noisy, tol = checks.noise_floor([r([1.0, 2.0, 3.0]), r([1.0, 2.0 + 1e-6, 3.0]), r([1.0, 2.0, 3.0 - 1e-7])])
    assert noisy.status == "FAIL" and "nondeterministic: 2 target" in noisy.evidence
    np.testing.assert_allclose(tol["s"], [0.0, 1e-5, 1e-6], rtol=1e-6)  # each target its own


# -- the flip test in declared document order, on a numpy procedure -------------------


def _doc_ordered(tokens, order, docs, peek_doc: int | None = None) -> dict:
    """Phased TTT's shape in numpy: documents scored whole in `order`, each target's NLL a
    function of its own document's tokens so far and of every document scored before
    (global adaptation); `peek_doc`: that document's targets also see the next token."""
    from golf_jax.eval.ledger import Ledger

    T = len(tokens) - 1
    ledger, nll, seen = Ledger("docs", T), np.full(T, np.nan), 0.0
    for d in order:
        a, b = docs[d], (docs[d + 1] if d + 1 < len(docs) else T)
        for k in range(a, b):
            nll[k] = seen + 1e-3 * np.sum(tokens[a : k + 1] * np.arange(1, k - a + 2)) % 7.0
            if d == peek_doc and k + 2 <= T:
                nll[k] += 1e-3 * tokens[k + 2]
        ledger.score([(a, b)])
        ledger.update([(a, b)])
        seen += 1e-4 * np.sum(tokens[a + 1 : b + 1])
    return {"docs": SimpleNamespace(nll=nll, ledger=ledger)}


@pytest.mark.parametrize("peek_doc, verdict", [(None, "PASS"), (0, "FAIL"), (2, "FAIL")])
def test_flip_test_follows_the_declared_document_order(peek_doc, verdict):
    """Documents scored in their own order (longest first, like phased TTT) may depend on
    documents scored before them, not on their own later tokens: in stream order per
    document, the legal order passes and a look-ahead in any document, the first-scored
    one included, fails."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 50, 301)
    docs = np.array([0, 40, 150, 220])
    tokens[docs[1:]] = 1  # BOS
    order = [1, 3, 0, 2]
    base = _doc_ordered(tokens, order, docs, peek_doc)
    ranks = {"docs": base["docs"].ledger.score_rank()}
    places = {"docs": checks.stream_order(ranks["docs"], docs, len(tokens))}
    assert list(np.argsort(places["docs"])[:3]) == [40, 41, 42]  # document 1 first, tokens in order
    geometry = {"seq_len": 16, "stride": 4, "rows": 2, "chunk": 64}
    flips = checks.flip_plan(tokens, ranks, places, geometry, 1, 6, rng)
    proc = lambda t: _doc_ordered(t, order, docs, peek_doc)  # noqa: E731
    check = checks.flip_test(proc, checks.Stream(tokens, 50, 1), base, flips, {"docs": np.zeros(300)}, rng, places)
    assert check.status == verdict, check.evidence
    stats = check.details["stages"]["docs"]
    assert stats["blocks_reached"] == stats["blocks"] == 4


def test_compliance_doc_renders_reports_and_compares_with_expectations(tmp_path):
    from golf_jax.audit import doc

    checks_ = [{"name": n, "status": "PASS", "evidence": "ok | fine", "details": {}} for n in doc.COLUMNS]
    base = {"procedure": ["sliding"], "model": "random", "slice": {"targets": 10, "source": "x", "documents": 1},
            "runs": 3, "seconds": 1.0, "checks": checks_}
    good = {**base, "config": "record", "argv": ["--config=configs/record.py", "--json=r.json"], "verdict": "PASS"}
    odd = {**base, "config": "lbfgs_slot", "argv": ["--config=configs/lbfgs_slot.py", "--config.audit.flips=2"],
           "verdict": "PASS"}
    paths = []
    for i, r in enumerate((good, odd)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(r))
    out = tmp_path / "compliance.md"
    assert doc.main([*map(str, paths), f"--out={out}"]) == 0
    text = out.read_text()
    assert "| record | sliding | PASS" in text and "| **PASS** | ✓ |" in text
    assert "**FAIL (disagrees)**" in text  # lbfgs_slot is expected to fail
    assert "`python -m golf_jax.audit --config=configs/record.py`" in text  # the command, without --json
    assert "ok ∣ fine" in text  # a pipe in the evidence does not break the table


def test_disjoint_check_fails_with_the_overlap_count(tmp_path):
    from golf_jax.data.prepare import write_shard

    write_shard(tmp_path / "fineweb_val_000000.bin", np.array([1, 5, 6, 1, 7, 8, 1, 3], np.uint16))
    write_shard(tmp_path / "fineweb_train_000000.bin", np.array([1, 7, 8, 1, 5, 6, 1, 2], np.uint16))
    bad = budgets.disjoint(tmp_path)
    assert bad.status == "FAIL" and bad.details["overlap"] == 2 and "2 of 3 val documents" in bad.evidence
    write_shard(tmp_path / "fineweb_train_000000.bin", np.array([1, 7, 9, 1, 2], np.uint16))
    assert budgets.disjoint(tmp_path).status == "PASS"
    assert budgets.disjoint(None).status == "SKIP"
