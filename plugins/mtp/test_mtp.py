"""MTP: the auxiliary loss against a slow reference, zero-init heads, eval-mode identity, heads dropped before quantization."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from golf_core.model.gpt import softcapped_cross_entropy
from golf_core.optim.roles import role_of
from golf_core.testing import build_model, micro_stack, run_micro
from plugins.mtp import MTPHeads, MultiTokenPrediction

IDS = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
TARGETS = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(1))


def reference_mtp(h, targets, weights, loss_weight, softcap):
    """Per head and per position: CE of softcapped logits against the target k+1 steps later."""
    losses = []
    for k, w in enumerate(weights):
        terms = []
        for b in range(h.size(0)):
            for t in range(h.size(1) - (k + 1)):
                z = softcap * torch.tanh((w @ h[b, t]) / softcap)
                terms.append(torch.logsumexp(z, 0) - z[targets[b, t + k + 1]])
        losses.append(torch.stack(terms).mean())
    return loss_weight * torch.stack(losses).mean()


def test_loss_term_matches_slow_reference():
    g = torch.Generator().manual_seed(2)
    heads = MTPHeads(32, 50, num_heads=3, loss_weight=0.1, loss_fn=softcapped_cross_entropy, softcap=30.0)
    with torch.no_grad():
        for head in heads.mtp_heads:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.5)
    h = torch.randn(2, 6, 32, generator=g)
    y = torch.randint(0, 50, (2, 6), generator=g)
    expected = reference_mtp(h, y, [hd.weight for hd in heads.mtp_heads], 0.1, 30.0)
    torch.testing.assert_close(heads(h, y), expected, rtol=1e-5, atol=1e-6)


def test_heads_that_do_not_fit_are_skipped():
    heads = MTPHeads(8, 10, num_heads=3, loss_weight=1.0, loss_fn=softcapped_cross_entropy, softcap=30.0)
    h, y = torch.randn(1, 2, 8), torch.randint(0, 10, (1, 2))
    # seq 2: only head 0 (offset 1) fits; zero heads give uniform logits -> ln(10).
    torch.testing.assert_close(heads(h, y), torch.tensor(math.log(10.0)))


def test_zero_heads_add_weight_times_ln_vocab_and_leave_the_model_gradients_unchanged():
    core, _, _ = build_model(micro_stack([]), seed=3)
    mtp, _, _ = build_model(micro_stack(["mtp"]), seed=3)
    assert {k: v for k, v in mtp.state_dict().items() if "mtp_heads" not in k}.keys() == core.state_dict().keys()
    core_loss, mtp_loss = core(IDS, TARGETS), mtp(IDS, TARGETS)
    torch.testing.assert_close(mtp_loss - core_loss, torch.tensor(0.1 * math.log(1024)), rtol=1e-5, atol=1e-6)
    core_loss.backward()
    mtp_loss.backward()
    core_grads = dict(core.named_parameters())
    for name, p in mtp.named_parameters():
        if "mtp_heads" in name:
            assert p.grad.abs().sum() > 0  # the heads learn from step one
        else:
            torch.testing.assert_close(p.grad, core_grads[name].grad, rtol=1e-6, atol=1e-7)


def test_eval_mode_is_the_core_model_bit_for_bit():
    core, _, _ = build_model(micro_stack([]), seed=4)
    mtp, _, _ = build_model(micro_stack(["mtp"]), seed=4)
    core.eval()
    mtp.eval()
    with torch.no_grad():
        assert torch.equal(core(IDS, TARGETS), mtp(IDS, TARGETS))
        assert torch.equal(core.forward_logits(IDS), mtp.forward_logits(IDS))


def test_heads_use_muon_and_leave_at_train_end():
    model, _, ctx = build_model(micro_stack(["mtp"]))
    names = [n for n, _ in model.named_parameters() if "mtp_heads" in n]
    assert names == ["loss_terms.0.mtp_heads.0.weight", "loss_terms.0.mtp_heads.1.weight"]
    assert all(role_of(n, p) == "matrix" for n, p in model.named_parameters() if "mtp_heads" in n)
    ctx.pm.hook.golf_train_end(model=model, ctx=ctx)
    assert not any("mtp" in k for k in model.state_dict())
    assert len(model.loss_terms) == 0


def test_validation():
    with pytest.raises(ValueError, match="num_heads"):
        MultiTokenPrediction.Params(num_heads=0).validate()
    with pytest.raises(ValueError, match="loss_weight"):
        MultiTokenPrediction.Params(loss_weight=0.0).validate()


def test_micro_run_excludes_heads_from_the_artifact(tmp_path):
    report = run_micro(tmp_path, enable=["mtp"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
    assert report["artifact"]["routes"] and not any("mtp" in r["name"] for r in report["artifact"]["routes"])
    assert "mtp: dropped 2 heads (131,072 parameters) before quantization" in (Path(tmp_path) / "run" / "train.log").read_text()
