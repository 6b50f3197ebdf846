"""SLOT: a per-window logit delta fitted by L-BFGS and added before scoring (`stage`), with
the solvers it uses (`solver`: torch's L-BFGS step for step, or jaxopt's)."""
