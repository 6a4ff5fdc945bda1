"""Causal backoff n-gram mixer: p = (1 - a) p_model + a p_ngram, a set by the model's entropy.

Origin: PR #1430 (renqianluo), adapted there from PR #1379 (LucasErcolano): hashed n-gram counts
of orders 2..22 (4,194,304 buckets per order) built on this rank's already-scored windows, queried
by backoff from the highest order whose context was seen at least ``min_count`` times (else a
smoothed unigram), and blended with the model with an entropy-adaptive weight::

    a = alpha_base + alpha_range * sigmoid(alpha_slope * (H - alpha_center)),  H = entropy of p_model (nats)
    p_ngram(y) = min(count(context, y), count(context)) / count(context)

Only the target's blended probability is computed, as in the record, so it is not a distribution:
over the vocabulary the blend does not sum to 1 (hashed counts and backoff), which breaks C2 and
is declared. ``normalize = true`` instead blends with the n-gram distribution of the chosen order
renormalized over the whole vocabulary: a proper distribution, computed for every token, so the
technique then declares no break (``legality_for``; ``golf check`` and the ledger use it).
Counts are updated after each step is scored (score first, C3); the context, order and weight use
only the prefix and the model (C1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from golf_core import Legality, Technique, hookimpl, param
from golf_core.eval.adapters import EvalAdapter, EvalSession, Scored
from golf_core.eval.plan import Batch
from golf_core.eval.stream import EvalStream

# PR #1430's hash multipliers (context token k gets PRIMES[k % 10]).
PRIMES = (36313, 27191, 51647, 81929, 131071, 174763, 233017, 282527, 357347, 451439)


LEGALITY = Legality(
    reads=("validation: tokens already scored on this rank, counted after scoring",),
    breaks=("C2",),
    reason=(
        "PR #1430 blends only the target's probability with hashed n-gram counts: over the vocabulary the "
        "blend does not sum to 1 (PR #886 measured ~277 for such caches); set normalize = true for a "
        "renormalized blend"
    ),
)
# normalize = true: a full-vocabulary blend of two distributions, scored first and causal: C1-C4 hold.
NORMALIZED_LEGALITY = Legality(reads=LEGALITY.reads)


def legality_of(params) -> Legality:
    """The legality under ``params``: the record's target-only blend breaks C2, the normalized one does not."""
    return NORMALIZED_LEGALITY if params.normalize else LEGALITY


class BackoffCounts:
    """Hashed counts of contexts and (context, next token) pairs, orders ``min_order..max_order``."""

    def __init__(self, vocab: int, buckets: int, min_order: int, max_order: int, device) -> None:
        self.vocab, self.buckets = vocab, buckets
        self.orders = list(range(min_order, max_order + 1))
        self.pow2 = buckets & (buckets - 1) == 0
        self.ctx = torch.zeros(len(self.orders), buckets, dtype=torch.float32, device=device)
        self.full = torch.zeros(len(self.orders), buckets, dtype=torch.float32, device=device)
        self.uni = torch.zeros(vocab, dtype=torch.float32, device=device)
        self.tokens_seen = 0

    def bucket(self, h: Tensor) -> Tensor:
        return h & (self.buckets - 1) if self.pow2 else h.abs() % self.buckets

    @staticmethod
    def context_hash(windows: Tensor, width: int) -> Tensor:
        """``windows[:, -width:]`` (oldest first) hashed as the record does: XOR of token * PRIMES[k]."""
        cols = windows[:, windows.size(1) - width :]
        h = cols[:, 0] * PRIMES[0]
        for k in range(1, width):
            h = h ^ (cols[:, k] * PRIMES[k % len(PRIMES)])
        return h

    def full_hash(self, ctx_h: Tensor, nxt: Tensor, order: int) -> Tensor:
        return ctx_h ^ (nxt * PRIMES[(order - 1) % len(PRIMES)])

    def update_sequence(self, seq: Tensor) -> None:
        """Count every n-gram of the contiguous token sequence ``seq`` (PR #1430's ``update``)."""
        t = seq.long()
        n = t.numel()
        self.tokens_seen += n
        self.uni.index_add_(0, t, torch.ones(n, device=t.device))
        for i, order in enumerate(self.orders):
            if n < order:
                continue
            windows = t.unfold(0, order, 1)  # [n - order + 1, order]
            ctx_h = self.context_hash(windows[:, :-1], order - 1)
            ones = torch.ones(windows.size(0), device=t.device)
            self.ctx[i].index_add_(0, self.bucket(ctx_h), ones)
            self.full[i].index_add_(0, self.bucket(self.full_hash(ctx_h, windows[:, -1], order)), ones)

    def update_targets(self, contexts: Tensor, nxt: Tensor) -> None:
        """Count the n-grams ending at given targets: ``contexts [n, max_order - 1]`` (oldest first,
        -1 before the stream start), ``nxt [n]``."""
        self.tokens_seen += nxt.numel()
        self.uni.index_add_(0, nxt, torch.ones(nxt.numel(), device=nxt.device))
        for i, order in enumerate(self.orders):
            ok = contexts[:, contexts.size(1) - (order - 1)] >= 0
            if not bool(ok.any()):
                continue
            ctx_h = self.context_hash(contexts[ok].clamp(min=0), order - 1)
            ones = torch.ones(ctx_h.numel(), device=nxt.device)
            self.ctx[i].index_add_(0, self.bucket(ctx_h), ones)
            self.full[i].index_add_(0, self.bucket(self.full_hash(ctx_h, nxt[ok], order)), ones)

    def choose_order(self, contexts: Tensor, min_count: int) -> tuple[Tensor, Tensor, Tensor]:
        """Per row: index of the highest order whose context count >= min_count (-1: unigram),
        that context's hash and count."""
        n = contexts.size(0)
        dev = contexts.device
        chosen = torch.full((n,), -1, dtype=torch.long, device=dev)
        ctx_h = torch.zeros(n, dtype=torch.long, device=dev)
        ctx_c = torch.zeros(n, dtype=torch.float32, device=dev)
        for i in reversed(range(len(self.orders))):
            order = self.orders[i]
            ok = (chosen < 0) & (contexts[:, contexts.size(1) - (order - 1)] >= 0)
            h = self.context_hash(contexts.clamp(min=0), order - 1)
            c = self.ctx[i][self.bucket(h)]
            take = ok & (c >= min_count)
            chosen = torch.where(take, i, chosen)
            ctx_h = torch.where(take, h, ctx_h)
            ctx_c = torch.where(take, c, ctx_c)
        return chosen, ctx_h, ctx_c

    def unigram(self) -> Tensor:
        return (self.uni + 0.5) / (float(self.uni.sum()) + 0.5 * self.vocab)


class NgramMixerAdapter(EvalAdapter):
    """Blends the model with the rank's n-gram counts; learns the counts after each step."""

    name = "ngram_mixer"
    learns = True
    legality = LEGALITY

    def __init__(self, p) -> None:
        self.p = p
        self.legality = legality_of(p)  # what the pass checks when no registered technique stands behind it
        self.changes_distribution = p.normalize
        self.target_only = not p.normalize
        self.blended = 0
        self.scored = 0

    def begin(self, session: EvalSession) -> None:
        vocab = session.ctx.cfg.model.vocab_size if getattr(session.ctx, "stack", None) is not None else int(session.model.tok_emb.num_embeddings)
        self.counts = BackoffCounts(vocab, self.p.buckets, self.p.min_order, self.p.max_order, session.device)
        self.width = self.p.max_order - 1

    def _contexts(self, stream: EvalStream, targets: Tensor) -> Tensor:
        """The ``max_order - 1`` tokens ending at each target's last input (oldest first, -1 before 0)."""
        prefix = stream.prefix(stream.visible_end, self.name)
        offs = torch.arange(-(self.width - 1), 1, device=targets.device)
        idx = targets[:, None] + offs[None, :]
        return torch.where(idx >= 0, prefix[idx.clamp(min=0)], -1)

    def _weight(self, logprobs: Tensor) -> Tensor:
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        p = self.p
        return p.alpha_base + p.alpha_range * torch.sigmoid(p.alpha_slope * (entropy - p.alpha_center))

    def _active(self) -> bool:
        return self.counts.tokens_seen >= self.p.min_tokens

    def adjust_target_logprob(self, logprobs: Tensor, target_tokens: Tensor, batch: Batch, stream: EvalStream) -> Tensor:
        """PR #1430: the blended probability of the target alone (not a distribution)."""
        lp_y = logprobs.gather(1, target_tokens[:, None]).squeeze(1)
        self.scored += lp_y.numel()
        if not self._active():
            return lp_y
        counts = self.counts
        chosen, ctx_h, ctx_c = counts.choose_order(self._contexts(stream, batch.targets), self.p.min_count)
        p_ng = counts.unigram()[target_tokens]
        for i, order in enumerate(counts.orders):
            rows = chosen == i
            if bool(rows.any()):
                full_c = counts.full[i][counts.bucket(counts.full_hash(ctx_h[rows], target_tokens[rows], order))]
                c = ctx_c[rows]
                p_ng[rows] = (torch.minimum(full_c, c) / c.clamp(min=1)).clamp(0, 1)
        a = self._weight(logprobs)
        mixed = (1 - a) * lp_y.exp() + a * p_ng
        self.blended += lp_y.numel()
        return mixed.clamp(min=1e-12).log()

    def adjust_logprobs(self, logprobs: Tensor, batch: Batch, stream: EvalStream) -> Tensor:
        """``normalize = true``: blend with the chosen order's n-gram distribution over the vocabulary."""
        self.scored += logprobs.size(0)
        if not self._active():
            return logprobs
        counts = self.counts
        vocab = logprobs.size(1)
        chosen, ctx_h, ctx_c = counts.choose_order(self._contexts(stream, batch.targets), self.p.min_count)
        q = counts.unigram()[:vocab].expand(logprobs.size(0), vocab).clone()
        q = q / q.sum(-1, keepdim=True)
        every = torch.arange(vocab, device=logprobs.device)
        for i, order in enumerate(counts.orders):
            rows = (chosen == i).nonzero().flatten()
            if rows.numel() == 0:
                continue
            keys = counts.bucket(counts.full_hash(ctx_h[rows][:, None], every[None, :], order))
            c = ctx_c[rows][:, None]
            pc = torch.minimum(counts.full[i][keys], c) / c
            total = pc.sum(-1, keepdim=True)
            # Hash collisions can leave a seen context with no counted continuation: fall back.
            q[rows] = torch.where(total > 0, pc / total.clamp(min=1e-12), q[rows])
        a = self._weight(logprobs)[:, None]
        self.blended += logprobs.size(0)
        return torch.log((1 - a) * logprobs.exp() + a * q)

    def learn(self, scored: Scored) -> None:
        batch = scored.batch
        if batch is None:
            return
        if self.p.update == "window_inputs":
            # The record: every scored window's inputs, concatenated (overlapping windows count again).
            # Input token t is target t - 1: each must be scored already (the ledger checks, C3).
            live = [r for r in range(batch.size) if int(batch.score_hi[r]) > int(batch.score_lo[r])]
            if live:
                starts, lengths = batch.starts[live], batch.lengths[live]
                spans = torch.stack([(starts - 1).clamp(min=0), starts + lengths - 1], dim=1)
                scored.stream.ledger.require_scored_many(spans, self.name)
                self.counts.update_sequence(torch.cat([batch.x[r, : int(batch.lengths[r])] for r in live]))
        else:
            self.counts.update_targets(self._contexts(scored.stream, scored.targets), scored.target_tokens)

    def end(self) -> dict:
        return {"blended_fraction": self.blended / max(self.scored, 1), "tokens_counted": self.counts.tokens_seen}


class NgramMixer(Technique):
    """Causal backoff n-gram mixer: p = (1 - a) p_model + a p_ngram, a set by the model's entropy."""

    name = "ngram_mixer"
    stage = "eval"
    origin_pr = 1430
    credits = "renqianluo (PR #1430); LucasErcolano (PR #1379)"
    legality = LEGALITY

    @dataclass(frozen=True, kw_only=True)
    class Params:
        min_order: int = param(2, "lowest n-gram order (context of order - 1 tokens)")
        max_order: int = param(22, "highest n-gram order (NGRAM_ORDER)")
        buckets: int = param(4_194_304, "hash buckets per order for context and pair counts (NGRAM_BUCKETS)")
        min_count: int = param(2, "back off past orders whose context was seen fewer times (NGRAM_MIN_COUNT)")
        min_tokens: int = param(5000, "blend only once this many tokens were counted (NGRAM_MIN_TOKENS)")
        alpha_base: float = param(0.20, "blend weight floor (NGRAM_ALPHA_BASE)")
        alpha_range: float = param(0.55, "blend weight range above the floor (NGRAM_ALPHA_RANGE)")
        alpha_center: float = param(2.5, "model entropy (nats) at the middle of the range (NGRAM_ALPHA_CENTER)")
        alpha_slope: float = param(2.0, "steepness of the sigmoid in entropy")
        normalize: bool = param(False, "blend with a full-vocabulary n-gram distribution (legal, V lookups per position) instead of the target only")
        update: str = param(
            "window_inputs", "what is counted after a step: window_inputs (the record: every scored window's inputs) "
            "or scored (each scored target's n-grams once)", choices=("window_inputs", "scored"),
        )

        def validate(self) -> None:
            if not 2 <= self.min_order <= self.max_order:
                raise ValueError(f"orders {self.min_order}..{self.max_order}: need 2 <= min_order <= max_order")
            if self.buckets < 2:
                raise ValueError(f"buckets = {self.buckets} must be >= 2")
            if not 0 <= self.alpha_base <= 1 or not 0 <= self.alpha_base + self.alpha_range <= 1 or self.alpha_range < 0:
                raise ValueError("alpha_base and alpha_base + alpha_range must lie in [0, 1]")
            if self.update not in ("window_inputs", "scored"):
                raise ValueError(f"update = {self.update!r}: window_inputs or scored")

    @classmethod
    def legality_for(cls, params) -> Legality:
        # The class attribute stays the worst case (normalize = false) for the catalog.
        return legality_of(params)

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        return NgramMixerAdapter(self.params)
