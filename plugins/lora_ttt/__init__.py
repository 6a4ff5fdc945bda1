"""Per-document LoRA TTT: score each document chunk by chunk, training per-document LoRA adapters
on the chunks already scored.

Origin: LoRA TTT of the LTTT record (samacqua, batch PR #63), revived by PR #1530 (samacqua) and
the inner loop of the phased TTT of PR #1610 / #1626 / #1787 / #1855 (TOP); alpha/rank scaling
and warm-start A from PR #1767 (renqianluo). Reproduces ``eval_val_ttt_phased``'s scoring:

* documents (split at BOS, each including the next document's BOS as its last target) are
  scored independently: sorted by length, cut into batches of ``batch_docs``, the batches taken
  longest first (rank ``r`` of ``W`` takes batches ``r, r + W, ...``: a static schedule, where the
  record raced for batches through a file counter);
* per batch, for chunk ``ci`` of ``chunk_size`` targets: each document's chunk is scored with the
  last ``context`` tokens of the document up to the chunk's end, through the model with the
  batch's LoRA deltas (one set per document and per virtual layer slot); then, unless it was a
  document's last chunk, one AdamW step (``grad_steps``) on the mean loss of each document's chunk
  (the scoring forward's graph is reused, as in the record);
* the LoRA of a batch starts with B = 0 (A kept across batches with ``warm_start_a``, except for a
  smaller last batch and after a global phase, which draw a fresh A), the optimizer state fresh.

``delta(x) = (x A^T) B^T * alpha / rank`` with ``A ~ U(+-1/sqrt(in))``, on the query, key, value
projections, the attention sublayer (PR #1855's O-LoRA, reading the normed block input), the MLP
sublayer, and the head (before the softcap): the ``sites`` of golf's ``AdapterSet``, so the model's
one block implementation serves training, scoring and TTT.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from golf_core import Legality, Technique, hookimpl, param
from golf_core.errors import GolfError
from golf_core.eval.adapters import EvalAdapter, EvalSession, Scored
from golf_core.eval.plan import Batch, Plan, Step
from golf_core.eval.scoring import autocast_for

SITES = ("c_q", "c_k", "c_v", "attn", "mlp", "head")


class BatchedLoRA(nn.Module):
    """One low-rank delta per batch row: ``(x A^T) B^T * alpha / rank``."""

    def __init__(self, bsz: int, in_features: int, out_features: int, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.bound = 1.0 / math.sqrt(in_features)
        self.scale = alpha / rank
        a = torch.empty(bsz, rank, in_features).uniform_(-self.bound, self.bound, generator=generator)
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(torch.zeros(bsz, out_features, rank))

    def reset(self, warm_start_a: bool, generator: torch.Generator) -> None:
        with torch.no_grad():
            if not warm_start_a:
                self.A.copy_(torch.empty_like(self.A, device="cpu").uniform_(-self.bound, self.bound, generator=generator))
            self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.A.transpose(1, 2).to(x.dtype)) @ self.B.transpose(1, 2).to(x.dtype) * self.scale


def site_shapes(model) -> dict[str, tuple[int, int]]:
    spec = model.spec
    kv = spec.num_kv_heads * spec.head_dim
    return {
        "c_q": (spec.model_dim, spec.model_dim), "c_k": (spec.model_dim, kv), "c_v": (spec.model_dim, kv),
        "attn": (spec.model_dim, spec.model_dim), "mlp": (spec.model_dim, spec.model_dim),
        "head": (spec.model_dim, spec.vocab_size),
    }


def build_lora(model, bsz: int, p, generator: torch.Generator, device) -> nn.Module:
    """An ``AdapterSet`` of per-row LoRAs for every virtual block slot of the model's active layout."""
    from golf_core.model.gpt import AdapterSet

    shapes = site_shapes(model)
    slots = [
        {site: BatchedLoRA(bsz, *shapes[site], p.rank, p.alpha, generator) for site in p.sites if site != "head"}
        for _ in range(model.num_slots())
    ]
    head = BatchedLoRA(bsz, *shapes["head"], p.rank, p.alpha, generator) if "head" in p.sites else None
    return AdapterSet(slots, head).to(device)


def document_queue(doc_lengths: Tensor, batch_docs: int) -> list[tuple[int, Tensor]]:
    """PR #1855's queue: documents sorted by length, batched, the batches ordered longest first.

    Returns ``(index of the batch in the length-ascending list, document ids)`` in queue order.
    """
    order = torch.sort(doc_lengths, stable=True).indices
    batches = [order[i : i + batch_docs] for i in range(0, order.numel(), batch_docs)]
    indexed = list(enumerate(batches))
    indexed.sort(key=lambda item: -int(doc_lengths[item[1]].max()))  # stable: ties keep ascending order
    return indexed


def chunk_window(ci: int, pred_len: int, num_chunks: int, chunk: int, context: int) -> tuple[int, int, int, int]:
    """``(window start, window length, chunk offset in the window, chunk length)`` in a document."""
    chunk_end = pred_len if ci == num_chunks - 1 else (ci + 1) * chunk
    win_start = max(0, chunk_end - context)
    return win_start, chunk_end - win_start, ci * chunk - win_start, chunk_end - ci * chunk


class DocChunkPlan(Plan):
    """Rounds of document batches; every rank ends every round with a (batch-less) round-end step."""

    def __init__(self, docs: Tensor, queue, chunk: int, context: int, rank: int, world_size: int) -> None:
        self.docs, self.queue, self.chunk, self.context = docs, queue, chunk, context
        self.rank, self.world_size = rank, world_size
        self.rounds = math.ceil(len(queue) / world_size)
        sizes = torch.tensor([ids.numel() for _, ids in queue] + [0])
        # Documents scored by all ranks once round r is over (the same on every rank).
        self.scored_after = [int(sizes[: min((r + 1) * world_size, len(queue))].sum()) for r in range(self.rounds)]

    def batch_steps(self, q: int, r: int) -> Iterator[Step]:
        orig, ids = self.queue[q]
        starts, lengths = self.docs[ids, 0], self.docs[ids, 1]
        pred = lengths - 1
        chunks = torch.div(pred + self.chunk - 1, self.chunk, rounding_mode="floor")
        for ci in range(int(chunks.max())):
            rows = [
                chunk_window(ci, int(pred[b]), int(chunks[b]), self.chunk, self.context) if ci < int(chunks[b]) else (0, 0, 0, 0)
                for b in range(ids.numel())
            ]
            win = torch.tensor(rows, dtype=torch.int64)
            width = min((ci + 1) * self.chunk, self.context)
            batch = Batch(
                starts=starts + win[:, 0], lengths=win[:, 1], score_lo=win[:, 2], score_hi=win[:, 2] + win[:, 3],
                width=width, docs=ids,
                tag={"group": q, "orig_batch": orig, "round": r, "chunk": ci, "new_group": ci == 0, "train_rows": ci < chunks - 1},
            )
            yield Step(batch=batch, tag=batch.tag)

    def steps(self) -> Iterator[Step]:
        for r in range(self.rounds):
            q = r * self.world_size + self.rank
            if q < len(self.queue):
                yield from self.batch_steps(q, r)
            yield Step(tag={"round_end": r, "scored_docs": self.scored_after[r]})


class LoraTTTAdapter(EvalAdapter):
    """Plan (document chunks), forward (with the batch's LoRA) and learner (one step per chunk)."""

    name = "lora_ttt"
    provides_plan = True
    owns_forward = True
    learns = True

    def __init__(self, p, seed: int = 0) -> None:
        self.p = p
        self.generator = torch.Generator().manual_seed(seed)
        self.kept = None
        self.stats = {"batches": 0, "chunks": 0, "train_steps": 0}
        self.seconds_training = 0.0

    def begin(self, session: EvalSession) -> None:
        model = session.model
        if not all(hasattr(model, a) for a in ("hidden", "head", "num_slots", "spec", "logit_softcap")):
            raise GolfError("lora_ttt needs the baseline GPT's adapter API (hidden/head with adapters=, num_slots)")
        self.session = session
        self.model = model
        self.device = session.device
        self.context = self.p.context or session.seq_len
        self.requires = {q: q.requires_grad for q in model.parameters()}
        for q in model.parameters():
            q.requires_grad_(False)
        self.full = build_lora(model, self.p.batch_docs, self.p, self.generator, self.device)
        self.lora, self.opt = None, None

    def plan(self, session: EvalSession) -> Plan:
        stream = session.stream
        self.queue = document_queue(stream.docs[:, 1], self.p.batch_docs)
        self.doc_plan = DocChunkPlan(stream.docs, self.queue, self.p.chunk_size, self.context, session.rank, session.world_size)
        return self.doc_plan

    def _optimizer(self, lora: nn.Module):
        p = self.p
        if p.optimizer == "sgd":
            return torch.optim.SGD(lora.parameters(), lr=p.lr, momentum=p.beta1, weight_decay=p.weight_decay)
        return torch.optim.AdamW(lora.parameters(), lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=p.weight_decay)

    def on_base_update(self) -> None:
        """After a global phase changed the base weights: fresh LoRA (new A) and optimizer, as the record."""
        self.full = build_lora(self.model, self.p.batch_docs, self.p, self.generator, self.device)
        self.lora, self.opt = None, None

    def _start_group(self, bsz: int) -> None:
        if bsz == self.p.batch_docs:
            for m in self.full.modules():
                if isinstance(m, BatchedLoRA):
                    m.reset(self.p.warm_start_a, self.generator)
            self.lora = self.full
        else:  # the record builds a fresh LoRA (fresh A) for a batch of another size
            self.lora = build_lora(self.model, bsz, self.p, self.generator, self.device)
        self.opt = self._optimizer(self.lora)
        self.stats["batches"] += 1

    def _logits(self, batch: Batch) -> tuple[Tensor, int]:
        """Softcapped logits ``[B, w, V]`` of the columns covering every scored position, and the first column."""
        model = self.model
        lo = int(batch.score_lo[batch.score_hi > batch.score_lo].min()) if bool((batch.score_hi > batch.score_lo).any()) else 0
        hi = max(int(batch.score_hi.max()), lo + 1)
        with autocast_for(batch.x.device):
            h = model.hidden(batch.x, self.lora)[:, lo:hi]
            raw = model.head(h, self.lora).float()
        return model.logit_softcap * torch.tanh(raw / model.logit_softcap), lo

    def forward(self, model, batch: Batch) -> Tensor:
        if batch.tag["new_group"]:
            self._start_group(batch.size)
        self.stats["chunks"] += 1
        with torch.enable_grad():
            logits, lo = self._logits(batch)
        self.kept = (batch, logits, lo)
        return logits[batch.rows, batch.cols - lo]

    def learn(self, scored: Scored) -> None:
        batch = scored.batch
        if batch is None or self.kept is None:
            return
        kept_batch, logits, lo = self.kept
        self.kept = None
        train = batch.tag["train_rows"].to(self.device)
        if kept_batch is not batch or not bool(train.any()):
            return
        t0 = time.perf_counter()
        # The scored targets, revealed now, laid out like the logits (-100 where nothing is scored).
        y = torch.full(logits.shape[:2], -100, dtype=torch.long, device=self.device)
        y[batch.rows, batch.cols - lo] = scored.target_tokens
        with torch.enable_grad():
            for step in range(self.p.grad_steps):
                if step > 0:
                    logits, _ = self._logits(batch)
                tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none", ignore_index=-100)
                tok = tok.reshape(y.shape)
                per_doc = tok.sum(1) / (y >= 0).sum(1).clamp(min=1)
                loss = (per_doc * train.float()).sum()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.stats["train_steps"] += 1
        self.seconds_training += time.perf_counter() - t0

    def end(self) -> dict:
        for q, flag in self.requires.items():
            q.requires_grad_(flag)
        self.kept = None
        lora_params = sum(q.numel() for q in self.full.parameters()) if hasattr(self, "full") else 0
        return {**self.stats, "lora_params": lora_params, "train_seconds": self.seconds_training}


class LoraTTT(Technique):
    """Per-document LoRA TTT: score each document chunk by chunk, training per-document LoRA adapters on the chunks already scored."""

    name = "lora_ttt"
    stage = "eval"
    origin_pr = 1530
    credits = "samacqua (LTTT record, batch PR #63; PR #1530); renqianluo (PR #1767: alpha scaling, warm-start A); PR #1855 settings"
    conflicts = ("sliding_window", "score_first_ttt", "slot")
    legality = Legality(reads=("validation: each document's already-scored chunks, to train its own LoRA",))

    @dataclass(frozen=True, kw_only=True)
    class Params:
        rank: int = param(80, "LoRA rank (TTT_LORA_RANK)")
        alpha: float = param(144.0, "LoRA output scale alpha / rank (TTT_LORA_ALPHA)")
        lr: float = param(1e-4, "learning rate (TTT_LORA_LR)")
        chunk_size: int = param(48, "targets per score-then-update chunk (TTT_CHUNK_SIZE)")
        context: int = param(0, "context window ending at each chunk (TTT_EVAL_SEQ_LEN); 0 = the run's evaluation seq_len")
        batch_docs: int = param(64, "documents per LoRA batch (TTT_BATCH_SIZE)")
        grad_steps: int = param(1, "optimizer steps per chunk; the first reuses the scoring forward (TTT_GRAD_STEPS)")
        optimizer: str = param("adam", "adam (AdamW) or sgd (TTT_OPTIMIZER)", choices=("adam", "sgd"))
        beta1: float = param(0.0, "AdamW beta1 (SGD momentum) (TTT_BETA1)")
        beta2: float = param(0.99, "AdamW beta2 (TTT_BETA2)")
        eps: float = param(1e-10, "AdamW epsilon")
        weight_decay: float = param(0.5, "weight decay of the LoRA parameters (TTT_WEIGHT_DECAY)")
        warm_start_a: bool = param(True, "keep A between batches, reset only B (TTT_WARM_START_A)")
        sites: tuple[str, ...] = param(SITES, "where LoRA deltas go: c_q, c_k, c_v, attn (O), mlp, head")
        seed: int = param(0, "seed of the LoRA A initializations")

        def validate(self) -> None:
            if min(self.rank, self.chunk_size, self.batch_docs, self.grad_steps) <= 0 or self.context < 0:
                raise ValueError("rank, chunk_size, batch_docs and grad_steps must be positive, context >= 0")
            unknown = set(self.sites) - set(SITES)
            if unknown:
                raise ValueError(f"sites {sorted(unknown)} unknown; choose from {SITES}")
            if self.optimizer not in ("adam", "sgd"):
                raise ValueError(f"optimizer = {self.optimizer!r}: adam or sgd")

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        return LoraTTTAdapter(self.params, seed=self.params.seed)
