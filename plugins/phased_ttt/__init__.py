"""Phased TTT: between LoRA-TTT batches, pause and train the base model with SGD on documents
already scored, in cumulative phases.

Origin: PR #1610 (romeerp: one global-SGD pause after 2,000 documents), PR #1626 (dexhunter:
three cumulative phases, lr 0.001, one epoch), kept by #1736 / #1787 / PR #1855 (TOP, 2,500 prefix
documents). On top of ``lora_ttt``'s document batches: the prefix of ``prefix_docs`` documents is
split into ``num_phases`` cumulative boundaries ``prefix * (i + 1) // num_phases``; when the
documents scored so far (over all ranks) reach the next boundary, every rank pauses, and the base
model trains on the first ``boundary`` scored documents (ordered by their batch in the
length-ascending list, then position: PR #1855's selection) with SGD (``lr`` cosine-decayed over
chunks of ``chunk_tokens``, the last chunk skipped, momentum, ``epochs``, sequences of ``seq_len``
split across ranks in batches of ``batch_seqs``, gradients averaged, clipped to ``grad_clip``;
documents isolated from each other when ``respect_doc_boundaries``); then LoRA TTT resumes with
fresh adapters on the adapted base.

Distributed coordination uses no files: ``lora_ttt`` schedules batches statically in rounds, so
every rank knows after which round a boundary is crossed; at that round's end the ledger's
collective ``sync`` gathers which targets every rank scored, and the global SGD fetches its
documents through the ledger (each must be fully scored: C3), with all-reduced gradients. The
selection no longer depends on timing (the record's file counters made it run-dependent).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from golf_core import Legality, Technique, hookimpl, param
from golf_core.errors import GolfError
from golf_core.eval.adapters import EvalAdapter, EvalSession, Scored
from golf_core.eval.scoring import autocast_for
from golf_core.eval.stream import BOS_ID
from plugins.score_first_ttt import average_gradients


def doc_rows(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Split each sequence of ``x``/``y`` ``[N, L]`` at its BOS inputs into rows of one document each
    (targets ``-100`` in the padding): attention then never crosses a document start, as packed
    ``cu_seqlens`` attention does."""
    xs, ys = [], []
    for xr, yr in zip(x, y):
        cuts = [0] + [int(i) for i in (xr == BOS_ID).nonzero().flatten() if int(i) > 0] + [xr.numel()]
        for a, b in zip(cuts[:-1], cuts[1:]):
            xs.append(xr[a:b])
            ys.append(yr[a:b])
    width = max(r.numel() for r in xs)
    xp = torch.zeros(len(xs), width, dtype=x.dtype, device=x.device)
    yp = torch.full((len(xs), width), -100, dtype=y.dtype, device=y.device)
    for i, (xr, yr) in enumerate(zip(xs, ys)):
        xp[i, : xr.numel()] = xr
        yp[i, : yr.numel()] = yr
    return xp, yp


def sequence_loss(model, x: Tensor, y: Tensor, respect_doc_boundaries: bool) -> Tensor:
    """Mean softcapped cross-entropy over real targets, optionally document-isolated."""
    if respect_doc_boundaries:
        x, y = doc_rows(x, y)
    with autocast_for(x.device):
        h = model.hidden(x)
        raw = model.head(h).float()
    logits = model.logit_softcap * torch.tanh(raw / model.logit_softcap)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100)


def global_sgd(model, tokens: Tensor, p, *, seq_len: int, rank: int, world_size: int) -> dict:
    """PR #1855's ``train_val_ttt_global_sgd_distributed`` on the concatenated scored documents."""
    total = tokens.numel() - 1
    num_chunks = max(math.ceil(total / p.chunk_tokens), 1)
    params = list(model.parameters())
    requires = {q: q.requires_grad for q in params}
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=p.lr, momentum=p.momentum)
    steps = 0
    try:
        for ci in range(num_chunks):
            start, end = ci * p.chunk_tokens, min((ci + 1) * p.chunk_tokens, total)
            if ci == num_chunks - 1 or p.epochs <= 0:
                continue
            seqs = (end - start) // seq_len
            if seqs <= 0:
                continue
            warm = max(0, min(p.warmup_chunks, num_chunks - 1))
            if warm > 0 and ci < warm:
                lr = p.warmup_start_lr + (p.lr - p.warmup_start_lr) * ci / max(warm - 1, 1)
            else:
                lr = p.lr * 0.5 * (1 + math.cos(math.pi * max(ci - warm, 0) / max(num_chunks - 1 - warm, 1)))
            for group in opt.param_groups:
                group["lr"] = lr
            my_lo, my_hi = seqs * rank // world_size, seqs * (rank + 1) // world_size
            batches = math.ceil(math.ceil(seqs / world_size) / p.batch_seqs)
            model.train()
            for _ in range(p.epochs):
                for b in range(batches):
                    s = my_lo + b * p.batch_seqs
                    e = min(s + p.batch_seqs, my_hi)
                    opt.zero_grad(set_to_none=True)
                    if e > s:
                        local = tokens[start + s * seq_len : start + e * seq_len + 1]
                        x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
                        with torch.enable_grad():
                            sequence_loss(model, x, y, p.respect_doc_boundaries).backward()
                    average_gradients(params)
                    if p.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, p.grad_clip)
                    opt.step()
                    steps += 1
    finally:
        model.eval()
        for q, flag in requires.items():
            q.requires_grad_(flag)
    return {"chunks": num_chunks, "steps": steps}


class PhasedTTTAdapter(EvalAdapter):
    """Learner: at round ends where the scored documents cross a boundary, global SGD on them."""

    name = "phased_ttt"
    learns = True

    def __init__(self, p) -> None:
        self.p = p
        self.phases: list[dict] = []

    def begin(self, session: EvalSession) -> None:
        self.session = session
        self.lora = session.find("lora_ttt")
        if self.lora is None:
            raise GolfError("phased_ttt pauses lora_ttt's document batches; enable lora_ttt (--enable lora_ttt)")
        num_docs = session.stream.num_docs
        prefix = max(0, min(num_docs, self.p.prefix_docs))
        self.boundaries = [prefix * (i + 1) // self.p.num_phases for i in range(self.p.num_phases)] if prefix else []
        self.phase = 0
        self.seq_len = self.p.seq_len or session.seq_len
        # The pass hands the model back as it found it (the record adapted a throwaway copy).
        self.saved = {k: v.detach().clone() for k, v in session.model.state_dict().items()}

    def learn(self, scored: Scored) -> None:
        tag = scored.step.tag
        if "round_end" not in tag or self.phase >= len(self.boundaries):
            return
        boundary = self.boundaries[self.phase]
        if tag["scored_docs"] < boundary:
            return
        t0 = time.perf_counter()
        session, stream = self.session, scored.stream
        session.ledger.sync()  # collective: every rank's scores become visible before training on them
        rounds_done = tag["round_end"] + 1
        queue = self.lora.queue[: rounds_done * session.world_size]
        entries = sorted((orig, pos, int(doc)) for orig, ids in queue for pos, doc in enumerate(ids.tolist()))
        docs = torch.tensor([doc for _, _, doc in entries[:boundary]], dtype=torch.int64)
        tokens = torch.cat(stream.scored_docs(docs, self.name))  # the ledger refuses unscored documents (C3)
        report = global_sgd(session.model, tokens, self.p, seq_len=self.seq_len, rank=session.rank, world_size=session.world_size)
        self.lora.on_base_update()
        self.phase += 1
        with torch.no_grad():
            weight_sum = float(sum(q.double().sum() for q in session.model.parameters()))
        self.phases.append({
            "phase": self.phase, "after_round": rounds_done, "scored_docs": tag["scored_docs"], "trained_docs": int(docs.numel()),
            "tokens": int(tokens.numel()), **report, "weight_sum": weight_sum, "seconds": time.perf_counter() - t0,
        })

    def end(self) -> dict:
        if getattr(self, "saved", None):
            with torch.no_grad():
                self.session.model.load_state_dict(self.saved)
            self.saved = {}
        return {"phases": self.phases, "boundaries": self.boundaries}


class PhasedTTT(Technique):
    """Phased TTT: between LoRA-TTT batches, pause and train the base model with SGD on documents already scored, in cumulative phases."""

    name = "phased_ttt"
    stage = "eval"
    origin_pr = 1626
    credits = "romeerp (PR #1610, phased TTT); dexhunter (PR #1626, multi-phase global SGD); PR #1787 / #1855 settings"
    requires = ("lora_ttt",)
    legality = Legality(reads=("validation: whole documents already scored, to train the base model between phases",))

    @dataclass(frozen=True, kw_only=True)
    class Params:
        prefix_docs: int = param(2500, "documents the global phases train on, in total (PHASED_TTT_PREFIX_DOCS)")
        num_phases: int = param(3, "cumulative global-SGD phases (PHASED_TTT_NUM_PHASES)")
        lr: float = param(0.001, "global SGD peak learning rate, cosine over chunks (GLOBAL_TTT_LR)")
        momentum: float = param(0.9, "global SGD momentum (GLOBAL_TTT_MOMENTUM)")
        epochs: int = param(1, "passes over each chunk (GLOBAL_TTT_EPOCHS)")
        chunk_tokens: int = param(32768, "tokens per learning-rate chunk; the last chunk is skipped (GLOBAL_TTT_CHUNK_TOKENS)")
        batch_seqs: int = param(32, "sequences per batch on each rank (GLOBAL_TTT_BATCH_SEQS)")
        seq_len: int = param(0, "global SGD sequence length; 0 = the run's evaluation seq_len")
        grad_clip: float = param(1.0, "clip the global gradient norm (GLOBAL_TTT_GRAD_CLIP; 0 = off)")
        warmup_chunks: int = param(0, "linear learning-rate warm-up chunks (GLOBAL_TTT_WARMUP_CHUNKS)")
        warmup_start_lr: float = param(0.0, "learning rate at the first warm-up chunk (GLOBAL_TTT_WARMUP_START_LR)")
        respect_doc_boundaries: bool = param(True, "no attention across documents in global SGD (GLOBAL_TTT_RESPECT_DOC_BOUNDARIES)")

        def validate(self) -> None:
            if self.num_phases < 1 or self.prefix_docs < 0:
                raise ValueError("num_phases must be >= 1 and prefix_docs >= 0")
            if self.chunk_tokens <= 0 or self.batch_seqs <= 0 or self.seq_len < 0 or self.epochs < 0:
                raise ValueError("chunk_tokens and batch_seqs must be positive; seq_len, epochs >= 0")

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        return PhasedTTTAdapter(self.params)
