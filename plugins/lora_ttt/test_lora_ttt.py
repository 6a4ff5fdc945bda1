"""lora_ttt: the pass equals a direct per-batch score-then-train loop, the queue and windows follow
PR #1855, scores are causal (later chunks of a document, documents scored later), each target is
scored once, adaptation helps on a self-repeating document, and a micro run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from golf_core.eval.probe import micro_eval_setup, per_target_nll, perturb_docs
from golf_core.eval.stream import EvalStream
from golf_core.testing import run_micro
from plugins.lora_ttt import BatchedLoRA, LoraTTT, LoraTTTAdapter, build_lora, chunk_window, document_queue

CHUNK, CONTEXT = 8, 24


def params(**kw):
    base = dict(rank=4, alpha=8.0, lr=0.01, chunk_size=CHUNK, context=CONTEXT, batch_docs=2, weight_decay=0.1)
    base.update(kw)
    return LoraTTT.Params(**base)


@pytest.fixture(scope="module")
def setup():
    model, ctx, tokens = micro_eval_setup(n_tokens=420)
    return model, ctx, tokens


def test_batched_lora_is_the_low_rank_delta() -> None:
    g = torch.Generator().manual_seed(0)
    lora = BatchedLoRA(3, 5, 7, 2, alpha=6.0, generator=g)
    with torch.no_grad():
        lora.B.normal_(generator=g)
    x = torch.randn(3, 4, 5, generator=g)
    for b in range(3):
        expected = x[b] @ lora.A[b].T @ lora.B[b].T * 3.0
        torch.testing.assert_close(lora(x)[b], expected)
    assert float(lora.A.detach().abs().max()) <= 1 / math.sqrt(5)


def test_queue_and_windows_follow_the_record() -> None:
    lengths = torch.tensor([5, 30, 9, 30, 2, 17, 11])
    queue = document_queue(lengths, 2)
    # ascending: [4(2), 0(5), 2(9), 6(11), 5(17), 1(30), 3(30)] -> batches 0:[4,0] 1:[2,6] 2:[5,1] 3:[3]
    assert [orig for orig, _ in queue] == [2, 3, 1, 0]  # longest first (ties keep the ascending order)
    assert [ids.tolist() for _, ids in queue] == [[5, 1], [3], [2, 6], [4, 0]]
    # A 100-target document, chunks of 8, context 24: the window ends at the chunk's end.
    assert chunk_window(0, 100, 13, 8, 24) == (0, 8, 0, 8)
    assert chunk_window(5, 100, 13, 8, 24) == (24, 24, 16, 8)
    assert chunk_window(12, 100, 13, 8, 24) == (76, 24, 20, 4)  # the last, partial chunk


@torch.no_grad()
def reference_nll(model, tokens: torch.Tensor, p) -> torch.Tensor:
    """PR #1855's scoring loop, written out per batch and chunk."""
    stream = EvalStream(tokens)
    docs = stream.docs
    d = docs.size(0)
    order = sorted(range(d), key=lambda i: (int(docs[i, 1]), i))
    batches = [order[i : i + p.batch_docs] for i in range(0, d, p.batch_docs)]
    queue = sorted(enumerate(batches), key=lambda ib: -max(int(docs[i, 1]) for i in ib[1]))
    gen = torch.Generator().manual_seed(p.seed)
    full = build_lora(model, p.batch_docs, p, gen, "cpu")
    nll = torch.full((tokens.numel() - 1,), float("nan"), dtype=torch.float64)
    for _, ids in queue:
        if len(ids) == p.batch_docs:
            for m in full.modules():
                if isinstance(m, BatchedLoRA):
                    m.reset(p.warm_start_a, gen)
            lora = full
        else:
            lora = build_lora(model, len(ids), p, gen, "cpu")
        opt = torch.optim.AdamW(lora.parameters(), lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=p.weight_decay)
        preds = [int(docs[i, 1]) - 1 for i in ids]
        nchunks = [math.ceil(n / CHUNK) for n in preds]
        for ci in range(max(nchunks)):
            width = min((ci + 1) * CHUNK, CONTEXT)
            x = torch.zeros(len(ids), width, dtype=torch.long)
            y = torch.full((len(ids), width), -100, dtype=torch.long)
            spans = []
            for b, i in enumerate(ids):
                if ci >= nchunks[b]:
                    spans.append(None)
                    continue
                start = int(docs[i, 0])
                end = min((ci + 1) * CHUNK, preds[b])
                ws = max(0, end - CONTEXT)
                x[b, : end - ws] = tokens[start + ws : start + end]
                y[b, : end - ws] = tokens[start + ws + 1 : start + end + 1]
                spans.append((start, ws, ci * CHUNK - ws, end - ws))
            with torch.enable_grad():
                raw = model.head(model.hidden(x, lora), lora).float()
                logits = model.logit_softcap * torch.tanh(raw / model.logit_softcap)
                tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none", ignore_index=-100).reshape(y.shape)
                loss = torch.zeros(())
                for b, span in enumerate(spans):
                    if span is None:
                        continue
                    start, ws, a, e = span
                    nll[start + ws + a : start + ws + e] = tok[b, a:e].double()
                    if ci < nchunks[b] - 1:
                        loss = loss + tok[b, a:e].mean()
                if loss.requires_grad:
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    return nll


def test_pass_equals_the_direct_loop(setup) -> None:
    model, ctx, tokens = setup
    p = params()
    res, nll = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256, adapters=[LoraTTTAdapter(p, seed=p.seed)])
    stream = EvalStream(tokens)
    assert res.tokens == int((stream.docs[:, 1] - 1).sum()) == tokens.numel() - 1 and res.ledger["exactly_once"]
    torch.testing.assert_close(nll, reference_nll(model, tokens, p), rtol=2e-4, atol=2e-4)
    report = res.adapters["lora_ttt"]
    assert report["batches"] == math.ceil(stream.num_docs / 2) and report["train_steps"] > 0
    assert all(q.requires_grad for q in model.parameters())  # the base is handed back trainable


def test_causal_within_documents_and_across_the_queue(setup) -> None:
    model, ctx, tokens = setup
    p = params()
    run = lambda toks: per_target_nll(model, toks, ctx, seq_len=64, batch_tokens=256, adapters=[LoraTTTAdapter(p, seed=0)])[1]  # noqa: E731
    base = run(tokens)
    stream = EvalStream(tokens)
    # (1) a document's later chunks: changing its tokens from chunk 3 on leaves its chunks 0..2 alone,
    # and every document of its batch (own LoRA rows) or of earlier batches. (Later batches may
    # legitimately change: a warm-started A carries what earlier, scored, documents taught it.)
    queue = document_queue(stream.docs[:, 1], p.batch_docs)
    longest = int(torch.argmax(stream.docs[:, 1]))
    lo, hi = stream.doc_targets(longest)
    cut = lo + 3 * CHUNK
    moved = tokens.clone()
    moved[cut + 1 : hi] = (moved[cut + 1 : hi] + 5) % 1000 + 2
    got = run(moved)
    assert torch.equal(got[lo:cut], base[lo:cut]) and not torch.equal(got[cut:hi], base[cut:hi])
    upto = next(i for i, (_, ids) in enumerate(queue) if longest in ids.tolist())
    for _, ids in queue[: upto + 1]:
        for d in ids.tolist():
            if d != longest:
                a, b = stream.doc_targets(d)
                assert torch.equal(got[a:b], base[a:b]), d
    # (2) documents scored last (the first queue batch is the longest; the last is the shortest).
    last = document_queue(stream.docs[:, 1], p.batch_docs)[-1][1].tolist()
    got = run(perturb_docs(tokens, last, 1024, seed=3))
    keep = torch.ones(tokens.numel() - 1, dtype=torch.bool)
    for d in last:
        a, b = stream.doc_targets(d)
        keep[a:b] = False
    assert torch.equal(got[keep], base[keep]) and not torch.equal(got[~keep], base[~keep])


def test_adaptation_helps_on_a_self_repeating_document(setup) -> None:
    model, ctx, tokens = setup
    doc = tokens[1:60]
    stream_tokens = torch.cat([torch.tensor([1]), doc, doc, doc, doc, torch.tensor([1]), doc[:20]])
    plain, plain_nll = per_target_nll(model, stream_tokens, ctx, seq_len=64, batch_tokens=256)
    res, nll = per_target_nll(model, stream_tokens, ctx, seq_len=64, batch_tokens=256, adapters=[LoraTTTAdapter(params(lr=0.05, context=256), seed=0)])
    assert float(nll[120:236].mean()) < float(plain_nll[120:236].mean()) - 0.3


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="sites"):
        params(sites=("c_q", "c_o")).validate()
    with pytest.raises(ValueError, match="positive"):
        params(rank=0).validate()


def test_micro_run(tmp_path) -> None:
    report = run_micro(
        tmp_path, enable=["lora_ttt"],
        overrides=["techniques.lora_ttt.rank=4", "techniques.lora_ttt.batch_docs=4", "techniques.lora_ttt.chunk_size=32"],
    )
    adapted = report["adapted"]
    assert adapted["ledger"]["exactly_once"] and adapted["adapters"]["lora_ttt"]["train_steps"] > 0
    assert math.isfinite(adapted["val_bpb"])
