"""score_first_ttt: the pass equals a hand-written score-then-train loop, scores are causal under
perturbation (learning included), the model is restored, the ledger refuses a misaligned chunk,
and a micro run."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from golf_core.eval.ledger import LegalityError
from golf_core.eval.probe import micro_eval_setup, per_target_nll, perturb_after
from golf_core.testing import run_micro
from plugins.score_first_ttt import ScoreFirstTTT, ScoreFirstTTTAdapter

SEQ, CHUNK = 64, 128


def params(**kw):
    base = dict(lr=0.05, epochs=1, momentum=0.9, chunk_tokens=CHUNK, batch_seqs=2, seq_len=0, grad_clip=1.0, freeze_blocks=0)
    base.update(kw)
    return ScoreFirstTTT.Params(**base)


@pytest.fixture(scope="module")
def setup():
    return micro_eval_setup(n_tokens=600)


def reference_nll(model, tokens: torch.Tensor, p) -> torch.Tensor:
    """Score each chunk's windows, then train on the chunk: written out directly."""
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(list(m.parameters()), lr=p.lr, momentum=p.momentum)
    n = tokens.numel() - 1
    num_chunks = math.ceil(n / CHUNK)
    nll = torch.empty(n, dtype=torch.float64)
    for c in range(num_chunks):
        m.eval()
        with torch.no_grad():
            for s in range(0, n, SEQ):
                if min(s // CHUNK, num_chunks - 1) != c:
                    continue
                e = min(s + SEQ, n)
                logits = m.forward_logits(tokens[s:e][None])[0]
                nll[s:e] = F.cross_entropy(logits.float(), tokens[s + 1 : e + 1], reduction="none").double()
        if c == num_chunks - 1:
            continue
        for g in opt.param_groups:
            g["lr"] = p.lr * 0.5 * (1 + math.cos(math.pi * c / (num_chunks - 1)))
        seqs = (min((c + 1) * CHUNK, n) - c * CHUNK) // SEQ
        m.train()
        for b in range(0, seqs, p.batch_seqs):
            e = min(b + p.batch_seqs, seqs)
            local = tokens[c * CHUNK + b * SEQ : c * CHUNK + e * SEQ + 1]
            opt.zero_grad()
            m(local[:-1].reshape(-1, SEQ), local[1:].reshape(-1, SEQ)).backward()
            torch.nn.utils.clip_grad_norm_(list(m.parameters()), p.grad_clip)
            opt.step()
    return nll


def test_pass_equals_direct_score_then_train(setup) -> None:
    model, ctx, tokens = setup
    p = params()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res, nll = per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=4 * SEQ, adapters=[ScoreFirstTTTAdapter(p)])
    expected = reference_nll(model, tokens, p)
    torch.testing.assert_close(nll, expected, rtol=2e-4, atol=2e-4)
    report = res.adapters["score_first_ttt"]
    assert report["chunks"] == 5 and report["trained_chunks"] == 4
    _, plain = per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=4 * SEQ)
    assert torch.equal(nll[:CHUNK], plain[:CHUNK])  # chunk 0: nothing learned yet
    assert not torch.allclose(nll[CHUNK:], plain[CHUNK:], atol=1e-3)  # later chunks: adapted
    for k, v in model.state_dict().items():  # the pass leaves the model as it found it
        assert torch.equal(v, before[k]), k


def test_causal_by_perturbation_with_learning(setup) -> None:
    model, ctx, tokens = setup
    adapter = lambda: ScoreFirstTTTAdapter(params())  # noqa: E731
    _, base = per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=4 * SEQ, adapters=[adapter()])
    for t in [100, 300, 450]:
        moved_tokens = perturb_after(tokens, t, 1024, seed=t)
        _, moved = per_target_nll(model, moved_tokens, ctx, seq_len=SEQ, batch_tokens=4 * SEQ, adapters=[adapter()])
        torch.testing.assert_close(moved[:t], base[:t], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(moved[t:], base[t:], atol=1e-3)


def test_training_on_a_chunk_not_yet_scored_is_refused(setup) -> None:
    model, ctx, tokens = setup

    class OffByOne(ScoreFirstTTTAdapter):
        """Trains on the chunk after the one just scored (a classic indexing bug)."""

        def learn(self, scored):
            if scored.step.chunk_end and scored.step.chunk + 1 < scored.step.num_chunks - 1:
                scored.step.chunk += 1
            super().learn(scored)

    with pytest.raises(LegalityError, match=r"C3 violated: adapter 'score_first_ttt' asked to learn from target 128 \(token 129"):
        per_target_nll(model, tokens, ctx, seq_len=SEQ, batch_tokens=4 * SEQ, adapters=[OffByOne(params())])


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        params(chunk_tokens=0).validate()
    with pytest.raises(ValueError, match="optimizer"):
        params(optimizer="lion").validate()


def test_micro_run(tmp_path) -> None:
    report = run_micro(
        tmp_path, enable=["score_first_ttt"],
        overrides=["techniques.score_first_ttt.chunk_tokens=512", "techniques.score_first_ttt.epochs=1"],
    )
    adapted = report["adapted"]
    assert adapted["ledger"]["exactly_once"] and adapted["ledger"]["learn_checks"] == 3
    assert adapted["adapters"]["score_first_ttt"] == {**adapted["adapters"]["score_first_ttt"], "chunks": 4, "trained_chunks": 3}
    assert math.isfinite(adapted["val_bpb"])
