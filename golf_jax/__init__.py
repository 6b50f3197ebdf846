"""golf_jax: the Parameter Golf record stack in JAX/Flax.

The packages follow the pipeline (docs/architecture.md): core (foundations) -> data ->
model -> optim -> train -> quant -> eval (ttt, phased, slot) -> audit -> report, run in
order by pipeline.py; submission is the packed script, bench the bench, records the
record folders. Each command is `python -m golf_jax.<package>`.
"""

__version__ = "0.1.0"
