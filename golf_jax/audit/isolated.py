"""A user's evaluator in a process of its own: it gets only what the harness hands it.

`python -m golf_jax.audit --evaluator MODULE:FACTORY` runs the factory and every call of
its evaluator (schedule, objective, predict, update) in a child process. The audit's
process keeps the stream, scores, ledger and verdict: the child receives each batch's
window tokens and positions, returns logits (or log-probabilities), and reads revealed
targets through requests that the audit's own Reveal answers and logs. So the evaluator
cannot reach the audit's check functions, and the slice it is audited on is never a file.

Before the user's module is imported, the child installs an audit hook (sys.addaudithook)
that records every file open, directory listing and glob under the validation data's
folders (the config's shard folder, ../shared/data, the generated corpus). The audit
FAILs an evaluator whose process touched them ("evaluator isolation").

Out of reach: reads from native code (a C extension's fopen, np.fromfile, ctypes), which
raise no audit event; and anything a hostile extension module does. This is a check for
mistakes and ordinary cheats, not a sandbox.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing as mp
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from golf_jax.core.errors import UserError

_CTX = mp.get_context("spawn")  # a fresh interpreter: nothing of the audit's process is inherited


def load_factory(spec: str):
    """`module:function` or `path/to/file.py:function` → the function (in the evaluator's process)."""
    if ":" not in spec:
        raise UserError(f"--evaluator={spec!r}: use MODULE:FACTORY or path/to/file.py:FACTORY")
    where, name = spec.rsplit(":", 1)
    try:
        if where.endswith(".py") or os.sep in where:
            path = Path(where)
            if not path.is_file():
                raise UserError(f"--evaluator={spec!r}: no such file {path}")
            mod_spec = importlib.util.spec_from_file_location(f"golf_jax_user_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except (ImportError, SyntaxError) as e:
        raise UserError(f"--evaluator={spec!r}: {where} does not import ({type(e).__name__}: {e}); pass an "
                        "importable module or a path to a .py file") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UserError(f"--evaluator={spec!r}: {where} has no function {name!r}")
    return factory


class RemoteError(RuntimeError):
    """The evaluator raised in its process (the message carries its traceback)."""


class Server:
    """The child process serving one evaluator factory (started on first use)."""

    def __init__(self, spec: str, protected, cfg, weights=None, vocab_size=None) -> None:
        self.setup = {"spec": spec, "cfg": cfg.to_dict(), "weights": None if weights is None else str(weights),
                      "vocab_size": vocab_size, "protected": [str(Path(p).resolve()) for p in protected]}
        self.conn = self.proc = None
        self.touched: list[str] = []

    def call(self, *msg):
        if self.proc is None:
            self.conn, child = _CTX.Pipe()
            self.proc = _CTX.Process(target=serve, args=(child, self.setup), daemon=True, name="golf_jax-evaluator")
            self.proc.start()
            child.close()
            self._reply()  # ready
        self.conn.send(msg)
        return self._reply()

    def _reply(self, reveal=None):
        """The child's answer; while it updates, answer its reads through `reveal`."""
        while True:
            try:
                kind, *rest = self.conn.recv()
            except EOFError as e:
                raise RemoteError(f"the evaluator's process exited (code {self.proc.exitcode})") from e
            if kind == "ok":
                self.touched = rest[1]
                return rest[0]
            if kind == "error":
                raise RemoteError(rest[0])
            try:  # "read" / "read_many" during an update
                self.conn.send(("ok", getattr(reveal, kind)(*rest)))
            except Exception as e:  # noqa: BLE001 (handed back to the evaluator to raise)
                self.conn.send(("error", type(e).__name__, str(e)))

    def update(self, reveal):
        self.conn.send(("update", reveal.block, reveal.num_blocks, reveal.num_targets))
        return self._reply(reveal)

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.conn.send(("close",))
                self.proc.join(timeout=30)
            except (BrokenPipeError, OSError):
                pass
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
            self.proc = None


def factory(server: Server):
    """An evaluator factory (of golf_jax.eval.stages.EvalContext) whose evaluators live in `server`."""
    return lambda ctx: RemoteEvaluator(server, ctx)


class RemoteEvaluator:
    """The harness's evaluator interface, answered by the child process."""

    def __init__(self, server: Server, ctx) -> None:
        self._server = server
        told = {"num_documents": ctx.num_documents, "seed": ctx.seed}  # the context as the audit tells it
        info = server.call("start", ctx.num_targets, told)
        self.name, self.compliant, self.notes = info["name"], info["compliant"], info["notes"]
        if info["schedule"]:
            self.schedule = lambda units: server.call("schedule", units)
        if info["objective"]:
            self.objective = lambda units, rows: server.call("objective", units, rows)

    def predict(self, inputs: dict):
        sent = {k: (np.asarray(v) if k != "num_units" else int(v)) for k, v in inputs.items()}
        return self._server.call("predict", sent)

    def update(self, reveal) -> None:
        self._server.update(reveal)


# -- the child ------------------------------------------------------------------------------


class _Reveal:
    """What the evaluator reads revealed targets through: each read is the audit's Reveal's."""

    def __init__(self, conn, block: int, num_blocks: int, num_targets: int) -> None:
        self._conn, self.block, self.num_blocks, self.num_targets = conn, block, num_blocks, num_targets

    @property
    def is_last(self) -> bool:
        return self.block == self.num_blocks - 1

    def _ask(self, *msg):
        from golf_jax.eval.harness import ComplianceError

        self._conn.send(msg)
        kind, *rest = self._conn.recv()
        if kind == "error":
            raise (ComplianceError if rest[0] == "ComplianceError" else ValueError)(rest[1])
        return rest[0]

    def read(self, a: int, b: int) -> np.ndarray:
        return self._ask("read", int(a), int(b))

    def read_many(self, a, b) -> list[np.ndarray]:
        return self._ask("read_many", np.asarray(a), np.asarray(b))


def _watch(protected: list[str], touched: list[str]) -> None:
    """Record opens, listings and globs under the protected folders (an audit hook stays for life)."""
    roots = tuple(p.rstrip(os.sep) + os.sep for p in protected)

    def hook(event: str, args) -> None:
        if event not in ("open", "os.listdir", "os.scandir", "glob.glob"):
            return
        path = args[0] if args else None
        if isinstance(path, (str, bytes, os.PathLike)):
            p = os.path.abspath(os.fsdecode(path))
            if (p + os.sep).startswith(roots) and p not in touched:
                touched.append(p)

    sys.addaudithook(hook)


def serve(conn, setup: dict) -> None:
    """The child: build the model as the audit did, then answer the harness's calls."""
    import dataclasses

    import ml_collections

    sys.stdout = sys.stderr  # the audit's process owns stdout (its report)
    touched: list[str] = []
    try:
        from golf_jax.core import mesh as mesh_lib
        from golf_jax.audit import procedure
        from golf_jax.eval import harness, stages

        cfg = ml_collections.ConfigDict(setup["cfg"])
        mesh = mesh_lib.make_mesh()
        proc = procedure.build(cfg, mesh, None, artifact=setup["weights"], vocab_size=setup["vocab_size"])
        view = proc.cfg.copy_and_resolve_references()
        view.data.dir = view.data.tokenizer = ""  # the evaluator has no business with the data's whereabouts
        seq_len = stages.eval_seq_len(view)
        predict = harness.model_predict(proc.model, mesh)
        _watch(setup["protected"], touched)
        factory = load_factory(setup["spec"])
        conn.send(("ok", None, touched))
    except Exception:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))
        return
    evaluator = None
    while True:
        try:
            kind, *args = conn.recv()
        except EOFError:
            return
        if kind == "close":
            return
        try:
            if kind == "start":
                T, told = args
                ctx = stages.EvalContext(view, proc.model, proc.params, mesh, seq_len, int(view.eval.sliding.stride), T,
                                         predict)
                evaluator = factory(dataclasses.replace(ctx, **told))
                out = {"name": str(getattr(evaluator, "name", "custom")),
                       "compliant": bool(getattr(evaluator, "compliant", True)),
                       "notes": list(getattr(evaluator, "notes", [])),
                       "schedule": callable(getattr(evaluator, "schedule", None)),
                       "objective": callable(getattr(evaluator, "objective", None))}
            elif kind == "schedule":
                out = [np.asarray(b) for b in evaluator.schedule(*args)]
            elif kind == "objective":
                out = evaluator.objective(*args)
            elif kind == "predict":
                inputs = {k: (v if k == "num_units" else mesh_lib.put_global_batch(mesh, v))
                          for k, v in args[0].items()}
                got = evaluator.predict(inputs)
                out = ({k: np.asarray(v) for k, v in got.items()} if isinstance(got, dict) else np.asarray(got))
            elif kind == "update":
                evaluator.update(_Reveal(conn, *args))
                out = None
            else:
                raise ValueError(f"unknown request {kind!r}")
            conn.send(("ok", out, touched))
        except Exception:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))
