"""What a run left behind, for people: TensorBoard events while it trains
(`tensorboard.py`), and after it `python -m golf_jax.report RUN_DIR` (plots and a
markdown summary in RUN_DIR/report/).

Never packed (golf_jax/submission/modules.py NOT_PACKED): a submission runs without it and skips
TensorBoard.
"""
