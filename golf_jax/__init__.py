"""golf_jax: the Parameter Golf record stack in JAX/Flax.

Pipeline stages, one subpackage each: data -> model -> optim -> train -> quant
-> eval (sliding, ttt, slot) -> audit -> report.
"""

__version__ = "0.1.0"
