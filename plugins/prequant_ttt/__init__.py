"""Pre-quantization TTT: fine-tune the trained weights on the validation tokens for several epochs.

Origin: PR #1487 (ndokutovich's stack line: PR #1423 (aryanbhosale), #1485, #1482 sweep; credits
in the record: PR #1471 X-Abhishek-X, #1423, #1394 clarkkev, #1204 msisovic): after training and EMA,
the model trains on all validation tokens for ``epochs`` epochs (AdamW, weight decay 0, learning
rate cosine-annealed per epoch from ``lr`` to ``lr / 10``, the first ``freeze_blocks`` blocks
frozen, ``batch_seqs`` sequences of ``seq_len`` per rank, gradients averaged over ranks and clipped
to ``grad_clip``); quantization and the artifact then carry the adapted weights. Record #1487:
10 epochs, lr 0.00045, freeze 1, 1.0600 BPB (172 s of TTT, outside the training clock).

Not legal, and declared so: every validation token is trained on before it is scored (C3, "score
after adapt": rejected in the PR #1972 audit) and the artifact carries statistics of tokens after
each scored position (C1). Runs at ``golf_train_end`` (after every other train-end hook, so after
EMA). Reproduced so the PR #1487 stack can run; ``golf check`` reports it as non-compliant.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from golf_core import Legality, Technique, hookimpl, param
from golf_core.data import load_validation_tokens
from golf_core.errors import GolfError
from golf_core.eval.scoring import autocast_for
from plugins.score_first_ttt import average_gradients, frozen_block_prefixes


def validation_tokens(ctx, seq_len: int) -> torch.Tensor:
    """The validation tokens the run evaluates (``data.val_tokens_limit`` applied), cut to whole sequences."""
    if not ctx.val_files:
        raise GolfError("prequant_ttt: the run has no validation shards to train on")
    tokens = load_validation_tokens(ctx.val_files, seq_len)
    limit = ctx.cfg.data.val_tokens_limit
    if limit > 0:
        keep = min(tokens.numel() - 1, limit) // seq_len * seq_len
        tokens = tokens[: keep + 1]
    return tokens


def prequant_ttt(model, tokens: torch.Tensor, p, *, seq_len: int, rank: int = 0, world_size: int = 1, log=print) -> dict:
    """Train ``model`` in place on ``tokens`` (the record's loop); returns figures for the report."""
    device = next(model.parameters()).device
    total_seqs = (tokens.numel() - 1) // seq_len
    frozen = frozen_block_prefixes(model, p.freeze_blocks)
    requires = {q: q.requires_grad for q in model.parameters()}
    params = []
    for name, q in model.named_parameters():
        q.requires_grad_(not name.startswith(frozen))
        if q.requires_grad:
            params.append(q)
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs, eta_min=p.lr * 0.1) if p.cosine_decay else None
    my_lo, my_hi = total_seqs * rank // world_size, total_seqs * (rank + 1) // world_size
    batches = math.ceil(math.ceil(total_seqs / world_size) / p.batch_seqs)  # the same on every rank
    t0 = time.perf_counter()
    losses = []
    model.train()
    try:
        for epoch in range(p.epochs):
            loss_sum, count = 0.0, 0
            for b in range(batches):
                s = my_lo + b * p.batch_seqs
                e = min(s + p.batch_seqs, my_hi)
                opt.zero_grad(set_to_none=True)
                if e > s:
                    local = tokens[s * seq_len : e * seq_len + 1].to(device=device, dtype=torch.int64)
                    x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
                    with autocast_for(device):
                        loss = model(x, y)
                    loss.backward()
                    loss_sum += float(loss.detach()) * (e - s)
                    count += e - s
                average_gradients(params)
                if p.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, p.grad_clip)
                opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss_sum / max(count, 1))
            log(f"prequant_ttt: epoch {epoch + 1}/{p.epochs} loss {losses[-1]:.4f} {time.perf_counter() - t0:.1f}s")
    finally:
        model.eval()
        for q, flag in requires.items():
            q.requires_grad_(flag)
    return {"epochs": p.epochs, "sequences": total_seqs, "epoch_losses": losses, "seconds": time.perf_counter() - t0}


class PrequantTTT(Technique):
    """Pre-quantization TTT: fine-tune the trained weights on the validation tokens for several epochs."""

    name = "prequant_ttt"
    stage = "eval"
    origin_pr = 1487
    credits = "PR #1487 stack (on PR #1485 / #1423 aryanbhosale / #1482 aamodbhatt sweep; #1471 X-Abhishek-X)"
    legality = Legality(
        reads=("validation: every token, trained on before any is scored",),
        breaks=("C1", "C3"),
        reason=(
            "pre-quant TTT trains the weights on all validation tokens before they are scored: each score follows an "
            "update on its own token (C3, score after adapt; rejected in the PR #1972 audit) and the artifact carries "
            "statistics of the tokens after it (C1)"
        ),
    )

    @dataclass(frozen=True, kw_only=True)
    class Params:
        epochs: int = param(10, "passes over the validation tokens (PREQUANT_TTT_EPOCHS)")
        lr: float = param(0.00045, "AdamW learning rate (PREQUANT_TTT_LR)")
        freeze_blocks: int = param(1, "leave the first N blocks untrained (PREQUANT_TTT_FREEZE_BLOCKS)")
        batch_seqs: int = param(32, "sequences per batch on each rank (PREQUANT_TTT_BATCH_SEQS)")
        seq_len: int = param(0, "training sequence length; 0 = train.train_seq_len")
        grad_clip: float = param(1.0, "clip the global gradient norm (PREQUANT_TTT_GRAD_CLIP; 0 = off)")
        cosine_decay: bool = param(True, "cosine-anneal the learning rate per epoch down to lr / 10 (PREQUANT_TTT_COSINE_DECAY)")
        weight_decay: float = param(0.0, "AdamW weight decay")

        def validate(self) -> None:
            if self.epochs < 0 or self.lr < 0 or self.batch_seqs <= 0 or self.seq_len < 0 or self.freeze_blocks < 0:
                raise ValueError("epochs, lr, seq_len, freeze_blocks must be >= 0 and batch_seqs > 0")

    @hookimpl(trylast=True)
    def golf_train_end(self, model, ctx):
        seq_len = self.params.seq_len or ctx.cfg.train.train_seq_len
        tokens = validation_tokens(ctx, seq_len)
        report = prequant_ttt(model, tokens, self.params, seq_len=seq_len, rank=ctx.rank, world_size=ctx.world_size, log=ctx.log)
        ctx.shared[self.name] = report
        ctx.log(f"prequant_ttt: {report['epochs']} epochs on {report['sequences']} validation sequences in {report['seconds']:.1f}s (declared non-compliant: C1, C3)")
