"""The compliance audit: a rule-by-rule verdict for any evaluation procedure
(docs/reference-notes.md#rules, docs/reference-notes.md#checker).

`python -m golf_jax.audit --config=configs/X.py [--artifact PATH] [--evaluator MODULE:FACTORY]
[--json OUT]` reruns the config's evaluation (or a user's evaluator) on a small slice
of real validation text and checks the challenge's four conditions (causality, a
normalised distribution, score before update, a single pass) black-box and from the
harness's ledger, plus the artifact, time and data-access budgets.

* procedure.py: the evaluation as a function of a token stream, at the audit's scale;
* checks.py: noise floor, flip test, normalization, counterfactual sum, answer independence, ledger;
* budgets.py: artifact bytes, time budgets, data access after the clock, pre-quant TTT, train/val disjoint;
* isolated.py: a user's evaluator in a process of its own;
* run.py: `run_audit` → the report (table and JSON); doc.py: docs/compliance.md from reports.
"""
