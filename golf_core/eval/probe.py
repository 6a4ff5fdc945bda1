"""Probes for adapter authors: per-target scores of a pass, and the perturbation test of C1.

``per_target_nll`` runs the core pass and returns the NLL the ledger recorded for every target.
``perturb_after`` / ``perturb_docs`` build the perturbed streams the causality tests score: an
adapter is causal (C1) and scores before it learns (C3) exactly when the score of every target
before the perturbed region is unchanged (for document-aware passes: of every document whose
tokens were left alone, when the perturbed documents are scored later).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from golf_core.eval.adapters import EvalAdapter, Scored
from golf_core.eval.scoring import EvalResult, evaluate
from golf_core.eval.stream import BOS_ID, find_doc_starts


class _NllTap(EvalAdapter):
    """Records the NLL of every scored target (a learner that learns nothing)."""

    name = "_nll_tap"
    learns = True

    def __init__(self, num_targets: int) -> None:
        self.nll = torch.full((num_targets,), float("nan"), dtype=torch.float64)

    def learn(self, scored: Scored) -> None:
        if scored.targets is not None:
            self.nll[scored.targets.cpu()] = scored.nll.detach().double().cpu()


def per_target_nll(
    model: nn.Module,
    tokens: Tensor,
    ctx,
    *,
    seq_len: int,
    batch_tokens: int,
    adapters: list[EvalAdapter] = (),  # type: ignore[assignment]
    byte_sidecar: Tensor | None = None,
) -> tuple[EvalResult, Tensor]:
    """Run the pass; return its result and the recorded NLL of each target ``[N - 1]`` (fp64, CPU)."""
    tap = _NllTap(tokens.numel() - 1)
    result = evaluate(
        model, tokens, ctx, seq_len=seq_len, batch_tokens=batch_tokens,
        adapters=[*adapters, tap], byte_sidecar=byte_sidecar, budget_seconds=0.0,
    )
    result.adapters.pop(tap.name, None)
    return result, tap.nll


def perturb_after(tokens: Tensor, t: int, vocab_size: int, seed: int = 0, keep_bos: bool = True) -> Tensor:
    """``tokens`` with every token after index ``t`` redrawn (BOS positions kept, so documents stay put)."""
    g = torch.Generator().manual_seed(seed)
    out = tokens.clone()
    fresh = torch.randint(2, vocab_size, (tokens.numel() - t - 1,), generator=g, dtype=out.dtype)
    tail = out[t + 1 :]
    out[t + 1 :] = torch.where(tail == BOS_ID, tail, fresh) if keep_bos else fresh
    return out


def perturb_docs(tokens: Tensor, docs: list[int], vocab_size: int, seed: int = 0) -> Tensor:
    """``tokens`` with the tokens of documents ``docs`` redrawn (their BOS kept)."""
    g = torch.Generator().manual_seed(seed)
    out = tokens.clone()
    starts = find_doc_starts(tokens).tolist() + [tokens.numel()]
    for d in docs:
        lo, hi = starts[d] + 1, starts[d + 1]
        out[lo:hi] = torch.randint(2, vocab_size, (hi - lo,), generator=g, dtype=out.dtype)
    return out


def scramble_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw every weight at random (matrices ~ N(0, 1/fan_in), vectors left as built).

    A freshly built model has zero-initialized output projections and a tiny tied embedding, so
    its predictions barely depend on the context; a scrambled one makes every position depend on
    its whole context, which causality tests need to have teeth.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return model


def micro_eval_setup(
    enable: list[str] | tuple[str, ...] = (), overrides: list[str] | tuple[str, ...] = (), n_tokens: int = 1025,
    seed: int = 0, scramble: bool = True,
):
    """A micro model (seeded; scrambled unless ``scramble=False``), its context with the sample
    corpus's byte table, and the first ``n_tokens`` validation tokens of the sample corpus (int64):
    ``(model, ctx, tokens)``."""
    from golf_core.data import ByteTable, ensure_sample_dataset, find_shards, load_tokenizer, read_shard
    from golf_core.testing import build_model, micro_stack

    stack = micro_stack(enable, overrides)
    model, _, ctx = build_model(stack, seed=seed)
    if scramble:
        scramble_(model, seed)
    data = ensure_sample_dataset(vocab_size=stack.core.model.vocab_size)
    tokenizer = load_tokenizer(data / "tokenizer.model")
    ctx.tokenizer = tokenizer
    ctx.byte_table = ByteTable.from_sentencepiece(tokenizer, stack.core.model.vocab_size)
    ctx.data_dir = data
    ctx.val_files = find_shards(data, "val")
    ctx.train_files = find_shards(data, "train")
    tokens = torch.from_numpy(read_shard(ctx.val_files[0])[:n_tokens].astype("int64"))
    return model.eval(), ctx, tokens
