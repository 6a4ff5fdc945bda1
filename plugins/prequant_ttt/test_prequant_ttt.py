"""prequant_ttt: the hook equals a hand-written AdamW loop on the validation tokens, frozen blocks
stay put, the declared break is real (the weights depend on every validation token), micro run."""

from __future__ import annotations

import copy

import pytest
import torch

from golf_core.eval.probe import micro_eval_setup
from golf_core.testing import run_micro
from plugins.prequant_ttt import PrequantTTT, prequant_ttt

SEQ = 64


def params(**kw):
    return PrequantTTT.Params(**{"epochs": 2, "lr": 0.01, "freeze_blocks": 1, "batch_seqs": 2, **kw})


@pytest.fixture(scope="module")
def setup():
    model, _, tokens = micro_eval_setup(n_tokens=4 * SEQ + 1)
    return model, tokens


def reference(model, tokens, p):
    m = copy.deepcopy(model)
    params = [q for n, q in m.named_parameters() if not n.startswith("blocks.0.")]
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=0.0)
    x_all, y_all = tokens[:-1].reshape(-1, SEQ), tokens[1:].reshape(-1, SEQ)
    for epoch in range(p.epochs):
        lr = p.lr * 0.1 + (p.lr - p.lr * 0.1) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * epoch / p.epochs)).item())
        for g in opt.param_groups:
            g["lr"] = lr
        m.train()
        for b in range(0, x_all.size(0), p.batch_seqs):
            opt.zero_grad()
            for q in m.parameters():
                q.requires_grad_(q in set(params))
            m(x_all[b : b + p.batch_seqs], y_all[b : b + p.batch_seqs]).backward()
            torch.nn.utils.clip_grad_norm_(params, p.grad_clip)
            opt.step()
    return m


def test_equals_the_direct_loop(setup) -> None:
    model, tokens = setup
    p = params()
    expected = reference(model, tokens, p)
    m = copy.deepcopy(model)
    report = prequant_ttt(m, tokens, p, seq_len=SEQ, log=lambda msg: None)
    assert report["epochs"] == 2 and report["sequences"] == 4 and len(report["epoch_losses"]) == 2
    for (name, got), want in zip(m.state_dict().items(), expected.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
    for name, q in m.named_parameters():
        if name.startswith("blocks.0."):
            assert torch.equal(q, dict(model.named_parameters())[name])  # frozen
        assert q.requires_grad  # restored
    assert not torch.equal(m.tok_emb.weight, model.tok_emb.weight)


def test_the_declared_break_is_real(setup) -> None:
    """The weights, hence every score, depend on validation tokens after any position (C1/C3)."""
    model, tokens = setup
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    moved = tokens.clone()
    moved[-SEQ:] = (moved[-SEQ:] + 7) % 1024
    prequant_ttt(a, tokens, params(epochs=1), seq_len=SEQ, log=lambda msg: None)
    prequant_ttt(b, moved, params(epochs=1), seq_len=SEQ, log=lambda msg: None)
    with torch.no_grad():
        first = tokens[:SEQ][None]
        assert not torch.allclose(a.forward_logits(first), b.forward_logits(first), atol=1e-6)
    assert set(PrequantTTT.legality.breaks) == {"C1", "C3"}


def test_params_are_validated() -> None:
    with pytest.raises(ValueError):
        params(batch_seqs=0).validate()


def test_micro_run(tmp_path) -> None:
    report = run_micro(tmp_path, enable=["prequant_ttt"], overrides=["techniques.prequant_ttt.epochs=1", "techniques.prequant_ttt.lr=0.01"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert "prequant_ttt: 1 epochs on 16 validation sequences" in log
    assert report["phases"]["train_end"] > 0 and report["pre_quant"]["tokens"] == 2048
