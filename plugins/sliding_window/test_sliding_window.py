"""sliding_window: the window rule against a direct per-target computation, exactly-once coverage,
causality by perturbation (flat and per document), and a micro run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf_core.eval.probe import micro_eval_setup, per_target_nll, perturb_after, perturb_docs
from golf_core.eval.stream import EvalStream
from golf_core.testing import run_micro
from plugins.sliding_window import SlidingWindow, SlidingWindowPlan, doc_windows

SEQ, STRIDE = 64, 16


@pytest.fixture(scope="module")
def setup():
    return micro_eval_setup(n_tokens=400)


@torch.no_grad()
def direct_nll(model, tokens: torch.Tensor, j: int, seq_len: int, stride: int, lo: int = 0) -> float:
    """NLL of target j with the window the rule assigns it, computed alone (lo: first usable token)."""
    t = j - lo
    ws = 0 if t < seq_len else ((t - seq_len) // stride + 1) * stride
    x = tokens[lo + ws : j + 1][None]
    logits = model.forward_logits(x)[0, -1]
    return float(F.cross_entropy(logits[None].float(), tokens[j + 1 : j + 2]))


def test_scores_equal_direct_windows(setup) -> None:
    model, ctx, tokens = setup
    res, nll = per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=1024, adapters=[SlidingWindowPlan(STRIDE, 0, 5, False)])
    assert res.tokens == tokens.numel() - 1 and res.ledger["exactly_once"]
    for j in [0, 5, SEQ - 1, SEQ, SEQ + STRIDE - 1, SEQ + STRIDE, 200, tokens.numel() - 2]:
        assert float(nll[j]) == pytest.approx(direct_nll(model, tokens, j, SEQ, STRIDE), rel=1e-4, abs=1e-5), j
    plain, plain_nll = per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=1024)
    assert torch.allclose(nll[:SEQ], plain_nll[:SEQ], atol=1e-5)  # the first window is a plain window
    assert not torch.allclose(nll[SEQ:], plain_nll[SEQ:], atol=1e-3)  # later targets see more context


def test_doc_aware_windows_stay_inside_documents(setup) -> None:
    model, ctx, tokens = setup
    stream = EvalStream(tokens)
    assert stream.num_docs >= 3
    res, nll = per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=1024, adapters=[SlidingWindowPlan(STRIDE, 0, 4, True)])
    assert res.ledger["exactly_once"]
    for d in range(stream.num_docs):
        lo, hi = stream.doc_targets(d)
        for j in sorted({lo, (lo + hi) // 2, hi - 1}):
            assert float(nll[j]) == pytest.approx(direct_nll(model, tokens, j, SEQ, STRIDE, lo=lo), rel=1e-4, abs=1e-5), (d, j)


def test_vectorized_doc_windows_equal_per_document_rule() -> None:
    from golf_core.eval.plan import strided_windows

    starts = torch.tensor([0, 1, 9, 30, 31, 100])
    targets = torch.tensor([1, 8, 21, 1, 69, 40])
    got = doc_windows(starts, targets, 16, 5)
    parts = [strided_windows(int(n), 16, 5, offset=int(s)) for s, n in zip(starts, targets)]
    for k in range(4):
        assert torch.equal(got[k], torch.cat([p[k] for p in parts]))


@pytest.mark.parametrize("doc_aware", [False, True])
def test_causal_by_perturbation(setup, doc_aware) -> None:
    model, ctx, tokens = setup
    adapter = SlidingWindowPlan(STRIDE, 0, 5, doc_aware)
    _, base = per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=1024, adapters=[adapter])
    for t in [70, 150, 333]:
        _, moved = per_target_nll(model, perturb_after(tokens, t, 1024, seed=t), ctx, seq_len=SEQ, batch_tokens=1024, adapters=[adapter])
        assert torch.equal(moved[:t], base[:t]), t
        assert not torch.equal(moved[t:], base[t:])
    if doc_aware:  # another document's tokens never reach this one's scores
        stream = EvalStream(tokens)
        _, moved = per_target_nll(model, perturb_docs(tokens, [0], 1024), ctx, seq_len=SEQ, batch_tokens=1024, adapters=[adapter])
        lo, _ = stream.doc_targets(1)
        assert torch.equal(moved[lo:], base[lo:])


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="stride = 0"):
        SlidingWindow.Params(stride=0).validate()
    with pytest.raises(ValueError, match="longer than seq_len"):
        SlidingWindow.Params(stride=128, seq_len=64).validate()


def test_micro_run(tmp_path) -> None:
    report = run_micro(tmp_path, enable=["sliding_window"], overrides=["techniques.sliding_window.stride=32"])
    adapted = report["adapted"]
    assert adapted["tokens"] == report["post_quant"]["tokens"] and adapted["ledger"]["exactly_once"]
    assert adapted["adapters"]["sliding_window"]["windows"] > 2048 // 128
    assert adapted["val_bpb"] < report["post_quant"]["val_bpb"] + 0.05  # more context never costs much
    assert report["eval_budget"]["within_budget"]
