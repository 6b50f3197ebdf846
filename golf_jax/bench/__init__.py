"""`python -m golf_jax.bench`: stage benchmarks (train, eval, sliding, ttt, slot, gptq, export).

Never packed: a submission runs no benchmark (nothing packed imports this package).
One module per stage family (train_stage, eval_stages, quant_stages), what they share
(measure), the FLOP counts behind MFU (flops), the runner and --compare (run), and a
summary of a profiler trace's top ops (trace_ops).
"""
