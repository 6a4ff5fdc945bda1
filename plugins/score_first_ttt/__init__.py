"""Score-first test-time training: score a chunk of the stream, then train the model on it with SGD.

Origin: the legal TTT framework of PR #461 (Christopher-Lee-McClendon), first record PR #549;
refined in #1413 / #1477 / #1493 (bigbag), which this reproduces (``eval_val_ttt``): the stream's
targets are cut into chunks of ``chunk_tokens`` (32,768); each chunk is scored (with the pass's
windows: sliding windows in #1493) and, unless it is the last, the model then trains on it for
``epochs`` epochs: non-overlapping ``seq_len`` sequences split across ranks, ``batch_seqs`` at a
time, SGD with momentum on all parameters (or all but the first ``freeze_blocks`` blocks), learning
rate ``lr * 0.5 * (1 + cos(pi * c / (C - 1)))`` for chunk ``c`` of ``C``, gradients averaged over
ranks and clipped to ``grad_clip``. Chunk ``c`` is therefore scored by a model adapted only on
chunks before it; golf's ledger checks that every token trained on was scored first (C3).

The model's weights are restored when the pass ends (the records ran TTT on a throwaway copy).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from golf_core import Legality, Technique, hookimpl, param
from golf_core.eval.adapters import EvalAdapter, EvalSession, Scored
from golf_core.eval.scoring import autocast_for


def frozen_block_prefixes(model, freeze_blocks: int) -> tuple[str, ...]:
    return tuple(f"blocks.{i}." for i in range(min(freeze_blocks, len(getattr(model, "blocks", ())))))


def average_gradients(params: list[torch.Tensor]) -> None:
    """All-reduce every gradient (zeros where a rank had none) and divide by the world size."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world)


class ScoreFirstTTTAdapter(EvalAdapter):
    """Learner: after each chunk end, train the model on the chunk's (scored) tokens."""

    name = "score_first_ttt"
    learns = True

    def __init__(self, p) -> None:
        self.p = p
        self.chunk_tokens = p.chunk_tokens
        self.trained_chunks = 0
        self.train_seconds = 0.0
        self.num_chunks = 0

    def begin(self, session: EvalSession) -> None:
        self.session = session
        self.model = session.model
        self.seq_len = self.p.seq_len or session.seq_len
        self.saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        frozen = frozen_block_prefixes(self.model, self.p.freeze_blocks)
        self.params = [p for n, p in self.model.named_parameters() if not n.startswith(frozen)]
        if self.p.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.params, lr=self.p.lr, momentum=self.p.momentum)
        else:
            self.opt = torch.optim.AdamW(self.params, lr=self.p.lr, weight_decay=0.0)

    def learn(self, scored: Scored) -> None:
        step = scored.step
        if not step.chunk_end:
            return
        self.num_chunks = step.num_chunks
        c, num_chunks = step.chunk, step.num_chunks
        if c == num_chunks - 1 or self.p.epochs <= 0:  # nothing left to score with what the last chunk teaches
            return
        stream, L = scored.stream, self.seq_len
        lo = c * self.chunk_tokens
        hi = min((c + 1) * self.chunk_tokens, stream.num_targets)
        chunk_seqs = (hi - lo) // L
        if chunk_seqs <= 0:
            return
        t0 = time.perf_counter()
        tokens = stream.scored_tokens(lo, lo + chunk_seqs * L, self.name)  # the ledger checks C3 here
        rank, world = self.session.rank, self.session.world_size
        my_lo, my_hi = chunk_seqs * rank // world, chunk_seqs * (rank + 1) // world
        # Every rank runs the same number of batches so the gradient all-reduces pair up.
        batches = math.ceil(math.ceil(chunk_seqs / world) / self.p.batch_seqs)
        lr = self.p.lr * 0.5 * (1.0 + math.cos(math.pi * c / max(num_chunks - 1, 1)))
        for group in self.opt.param_groups:
            group["lr"] = lr
        model = self.model
        requires = {p: p.requires_grad for p in model.parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.params:
            p.requires_grad_(True)
        model.train()
        try:
            with torch.enable_grad():
                for _ in range(self.p.epochs):
                    for b in range(batches):
                        s = my_lo + b * self.p.batch_seqs
                        e = min(s + self.p.batch_seqs, my_hi)
                        self.opt.zero_grad(set_to_none=True)
                        if e > s:
                            local = tokens[s * L : e * L + 1]
                            x, y = local[:-1].reshape(-1, L), local[1:].reshape(-1, L)
                            with autocast_for(x.device):
                                loss = model(x, y)
                            loss.backward()
                        average_gradients(self.params)
                        if self.p.grad_clip > 0:
                            torch.nn.utils.clip_grad_norm_(self.params, self.p.grad_clip)
                        self.opt.step()
        finally:
            model.eval()
            for p, flag in requires.items():
                p.requires_grad_(flag)
        self.trained_chunks += 1
        self.train_seconds += time.perf_counter() - t0

    def end(self) -> dict:
        with torch.no_grad():
            self.model.load_state_dict(self.saved)
        self.saved = {}
        return {"chunks": self.num_chunks, "trained_chunks": self.trained_chunks, "train_seconds": self.train_seconds}


class ScoreFirstTTT(Technique):
    """Score-first test-time training: score a chunk of the stream, then train the model on it with SGD."""

    name = "score_first_ttt"
    stage = "eval"
    origin_pr = 549
    credits = "Christopher-Lee-McClendon (PR #461 framework); PR #549; bigbag (PR #1493 settings); PR #1413 / #1477"
    conflicts = ("lora_ttt",)
    legality = Legality(reads=("validation: tokens already scored, to train on",))

    @dataclass(frozen=True, kw_only=True)
    class Params:
        lr: float = param(0.005, "peak learning rate (TTT_LR), cosine-decayed over the chunks")
        epochs: int = param(3, "passes over each chunk (TTT_EPOCHS)")
        momentum: float = param(0.9, "SGD momentum (TTT_MOMENTUM)")
        chunk_tokens: int = param(32768, "targets per chunk: score, then train (TTT_CHUNK_TOKENS)")
        batch_seqs: int = param(32, "sequences per training batch on each rank")
        seq_len: int = param(0, "training sequence length; 0 = the run's evaluation seq_len")
        grad_clip: float = param(1.0, "clip the global gradient norm (0 = off)")
        freeze_blocks: int = param(0, "leave the first N blocks untrained (TTT_FREEZE_BLOCKS)")
        optimizer: str = param("sgd", "sgd (momentum) or adamw (PR #1430's variant)", choices=("sgd", "adamw"))

        def validate(self) -> None:
            if self.chunk_tokens <= 0:
                raise ValueError(f"chunk_tokens = {self.chunk_tokens} must be positive")
            if self.lr < 0 or self.epochs < 0 or self.batch_seqs <= 0 or self.seq_len < 0 or self.freeze_blocks < 0:
                raise ValueError("lr, epochs, seq_len and freeze_blocks must be >= 0 and batch_seqs > 0")
            if self.optimizer not in ("sgd", "adamw"):
                raise ValueError(f"optimizer = {self.optimizer!r} must be 'sgd' or 'adamw'")

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        return ScoreFirstTTTAdapter(self.params)
