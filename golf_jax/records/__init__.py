"""Record folders for the challenge's `records/` from finished runs: `python -m golf_jax.records`.

`runs.py` reads run directories and says why a run cannot be part of a record, `stats.py`
holds the multi-seed statistics and the challenge's significance rule, `folder.py` writes
the folder (README.md, submission.json, logs, configs, the packed script). Never packed
(golf_jax/submission/modules.py NOT_PACKED): nothing a submission runs needs it.
"""
