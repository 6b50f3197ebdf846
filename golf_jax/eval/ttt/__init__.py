"""Test-time training on the full weights: score-first TTT as an eval stage (`score_first`:
eval.ttt.mode=score_first or pr1318), and pre-quant TTT, which adapts the float weights on
the validation text before export (`prequant`: eval.prequant_ttt, non-compliant)."""
