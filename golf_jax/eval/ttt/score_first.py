"""Score-first chunked test-time training (docs/reference-notes.md#ttt-score-first; docs/reference-notes.md#ttt-pr1318).

The val targets are cut into chunks of eval.ttt.chunk_tokens. Each chunk's sliding
windows are scored through the harness first; then the chunk is revealed and the
model trains on it (epochs × mini-batches of non-overlapping seq_len sequences),
with LR lr·½(1 + cos(π·c/(K-1))) at chunk c. The last chunk is never trained: no
later score could use it.

Modes (eval.ttt.mode):
* "score_first": the merged 1.0828 record (SGD momentum 0.9, lr 0.005, 3 epochs).
* "pr1318": the reference's TTT pass (AdamW lr 1e-3, 1 epoch, freeze blocks 0–9 with
  either scope), score-first as the reference's is: a chunk's training sequences end at
  its last target (reference L1351's `+ 1` pays only for the input/target shift). Two
  non-compliant flags: `eval.ttt.carry`, the reference's (the adapted weights score the
  stages after TTT: a second pass over targets they were trained on), and
  `eval.ttt.lookahead`, no submission's (the last training sequence of a chunk ends one
  target into the next, unscored chunk: a known leak that the ledger and the audit
  must catch; an earlier reading of L1351 put it into #1318).

Params are functional: a chunk is scored with the weights from before its own update.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from golf_jax.core import mesh as mesh_lib
from golf_jax.eval import adapt
from golf_jax.eval.compiled import settings_key
from golf_jax.eval.harness import Reveal
from golf_jax.optim.build import build_adaptation_optimizer
from golf_jax.submission.modules import repo_only

# eval.ttt.mode -> what it runs, one line each (the error for a bad mode lists them; docs/reference-notes.md#modes).
MODES = {
    "score_first": "score-first chunked TTT as the merged 1.0828 record: SGD momentum 0.9, lr 0.005, 3 epochs",
    "pr1318": "PR #1318's TTT pass (AdamW lr 1e-3, 1 epoch, blocks 0-9 frozen), score-first; "
              "eval.ttt.carry reproduces its second pass",
    "phased": "PR #1855's phased score-first TTT: per-document LoRA and global SGD phases (keys eval.phased.*; "
              "golf_jax/eval/phased/ttt.py)",
}
OPTIMIZERS = ("sgd", "adamw")  # eval.ttt.optimizer: sgd with eval.ttt.momentum, or adamw (beta1, beta2, eps)


@repo_only
def check_config(t, seq_len: int, stride: int, used: bool = True) -> None:
    """Every key's range; the window geometry only when the ttt stage is listed (`used`)."""
    from golf_jax.config import described  # the schema: a submission does not pack it

    if t.mode not in MODES:
        raise ValueError(f"eval.ttt.mode={t.mode!r}: use one of {described(MODES)}")
    if t.optimizer not in OPTIMIZERS:
        raise ValueError(f"eval.ttt.optimizer={t.optimizer!r}: use one of {', '.join(map(repr, OPTIMIZERS))}")
    if t.freeze_scope not in adapt.SCOPES:
        raise ValueError(f"eval.ttt.freeze_scope={t.freeze_scope!r}: use one of {adapt.SCOPES}")
    if not used:
        return
    if (t.lookahead or t.carry) and t.mode != "pr1318":
        raise ValueError("eval.ttt.lookahead (a deliberate leak) and eval.ttt.carry (#1318's carried weights) "
                         "run in #1318's pass only; set eval.ttt.mode=pr1318 to use them")
    if seq_len % stride:
        raise ValueError(f"eval.ttt needs eval.sliding.stride={stride} to divide the eval seq_len={seq_len}, "
                         "so that every scored span lies inside one chunk")
    if t.chunk_tokens <= 0 or t.chunk_tokens % stride:
        raise ValueError(f"eval.ttt.chunk_tokens={t.chunk_tokens} must be a positive multiple of "
                         f"eval.sliding.stride={stride}, so that no window's scored span straddles two chunks")
    if t.epochs < 1 or t.batch_seqs < 1 or t.lr < 0:
        raise ValueError("eval.ttt.epochs and eval.ttt.batch_seqs must be >= 1 and eval.ttt.lr >= 0")
    if t.chunk_tokens < seq_len:
        raise ValueError(f"eval.ttt.chunk_tokens={t.chunk_tokens} is shorter than one training sequence "
                         f"({seq_len}); nothing would be trained")


def trainer(model, params, mesh: Mesh, t):
    """(trainable mask, init, step) of the chunk updates: eval.ttt's optimizer on the unfrozen
    weights, jitted once per settings (golf_jax/eval/adapt.py)."""
    trainable = adapt.trainable_mask(params, t.freeze_blocks, t.freeze_scope)
    tx = build_adaptation_optimizer(t.optimizer, float(t.lr), trainable, momentum=float(t.momentum),
                                    b1=float(t.beta1), b2=float(t.beta2), eps=float(t.eps),
                                    weight_decay=float(t.weight_decay), grad_clip=float(t.grad_clip))
    return (trainable, *adapt.lm_trainer(model, tx, mesh, ("ttt", settings_key(t))))


class ScoreFirstTTT:
    """An evaluator whose update trains on the chunk just scored."""

    def __init__(self, model, predict, params, mesh: Mesh, t, seq_len: int, num_chunks: int) -> None:
        """`predict`: the jitted jit_predict(make_predict(model), mesh) the sliding stage uses too."""
        self.name = "ttt"
        self.compliant = not t.lookahead
        self.notes = (["eval.ttt.lookahead: each chunk's last training sequence reads the first target of the "
                       "next, unscored chunk (non-compliant)"] if t.lookahead else [])
        self._t, self._seq_len, self._num_chunks, self._mesh = t, seq_len, num_chunks, mesh
        self._predict = predict
        self.trainable, init, self._step = trainer(model, params, mesh, t)
        self.state = init(params)
        self._in_flight = adapt.InFlight()
        self._rows = -(-min(t.batch_seqs, max(t.chunk_tokens // seq_len, 1)) // mesh.devices.size) * mesh.devices.size
        self.steps = 0

    @property
    def params(self):
        return self.state.params

    def predict(self, inputs: dict) -> jax.Array:
        return self._predict(self.state.params, inputs["x_BxL"], inputs["pos_BxS"])

    def update(self, reveal: Reveal) -> None:
        if reveal.is_last:  # the is_last_chunk guard: an update after the final score is never used
            return
        t, seq_len, c = self._t, self._seq_len, reveal.block
        T = reveal.num_targets
        a, b = c * t.chunk_tokens, min((c + 1) * t.chunk_tokens, T)
        x, y = adapt.sequences(reveal.read(a, b), seq_len)
        if t.lookahead and x.shape[0] and b < T:
            # The leak: the span ends one token late, so the last sequence is shifted by one.
            extra = reveal.read(b - seq_len + 1, b + 1)
            x[-1], y[-1] = extra[:-1], extra[1:]
        if x.shape[0] == 0:
            return
        lr_scale = np.float32(adapt.cosine(c, self._num_chunks - 1))
        for _ in range(t.epochs):
            for start in range(0, x.shape[0], self._rows):
                rows = adapt.padded_rows(x[start : start + self._rows], y[start : start + self._rows], self._rows)
                batch = {k: mesh_lib.put_global_batch(self._mesh, v) for k, v in rows.items()}
                batch["hparams"] = {"lr_scale": lr_scale}
                self.state, metrics = self._step(self.state, batch)
                self.steps += 1
                self._in_flight.push(metrics["loss"])
