"""ngram_mixer: the record's target blend against a direct per-position computation, the blend is
indeed not a distribution (the declared C2 break) while normalize=true is, causality by
perturbation in both modes, counts learned only after scoring, and a micro run."""

from __future__ import annotations

import math

import pytest
import torch

from golf_core.eval.probe import micro_eval_setup, per_target_nll, perturb_after
from golf_core.testing import run_micro
from plugins.ngram_mixer import PRIMES, BackoffCounts, NgramMixer, NgramMixerAdapter

BUCKETS = 1 << 16


def params(**kw):
    base = dict(min_order=2, max_order=6, buckets=BUCKETS, min_count=2, min_tokens=50, update="scored")
    base.update(kw)
    return NgramMixer.Params(**base)


@pytest.fixture(scope="module")
def setup():
    model, ctx, tokens = micro_eval_setup(n_tokens=300)
    return model, ctx, torch.cat([tokens, tokens[1:], tokens[1:]])  # repeats give the counts something to find


def direct_blend(tokens, logprobs_rows, targets, p, step: int, vocab=1024):
    """The record's score() for each target, with counts from the targets of earlier steps of
    ``step`` targets (they are counted once their step is scored), in plain loops."""
    out = []
    for row, j in zip(logprobs_rows, targets.tolist()):
        counted = j // step * step  # targets 0..counted-1
        seen = tokens[1 : counted + 1].tolist()
        lp_y = float(row[tokens[j + 1]])
        if len(seen) < p.min_tokens:
            out.append(lp_y)
            continue
        ctx_cnt, full_cnt = {}, {}
        for t in range(1, counted + 1):  # n-grams ending at token t (target t - 1)
            for order in range(p.min_order, p.max_order + 1):
                if t - (order - 1) < 0:
                    continue
                ctx = tokens[t - order + 1 : t].tolist()
                h = 0
                for k, tok in enumerate(ctx):
                    h ^= tok * PRIMES[k % 10]
                ck = h & (BUCKETS - 1)
                fk = (h ^ (int(tokens[t]) * PRIMES[(order - 1) % 10])) & (BUCKETS - 1)
                ctx_cnt[(order, ck)] = ctx_cnt.get((order, ck), 0) + 1
                full_cnt[(order, fk)] = full_cnt.get((order, fk), 0) + 1
        uni = sum(1 for t in seen if t == int(tokens[j + 1]))
        p_ng = (uni + 0.5) / (len(seen) + 0.5 * vocab)
        y = int(tokens[j + 1])
        for order in range(p.max_order, p.min_order - 1, -1):
            if j - (order - 2) < 0:
                continue
            ctx = tokens[j - order + 2 : j + 1].tolist()
            h = 0
            for k, tok in enumerate(ctx):
                h ^= tok * PRIMES[k % 10]
            c = ctx_cnt.get((order, h & (BUCKETS - 1)), 0)
            if c >= p.min_count:
                f = full_cnt.get((order, (h ^ (y * PRIMES[(order - 1) % 10])) & (BUCKETS - 1)), 0)
                p_ng = min(max(min(f, c) / max(c, 1), 0.0), 1.0)
                break
        entropy = float(-(row.exp() * row).sum())
        a = p.alpha_base + p.alpha_range / (1 + math.exp(-p.alpha_slope * (entropy - p.alpha_center)))
        out.append(math.log(max((1 - a) * math.exp(lp_y) + a * p_ng, 1e-12)))
    return torch.tensor(out, dtype=torch.float64)


def test_record_blend_equals_direct_computation(setup) -> None:
    model, ctx, tokens = setup
    p = params()
    _, nll = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=128, adapters=[NgramMixerAdapter(p)])
    targets = torch.tensor([70, 200, 333, 450, 700, 890])
    rows = []
    for j in targets.tolist():
        s = j // 64 * 64
        with torch.no_grad():
            rows.append(torch.log_softmax(model.forward_logits(tokens[s : j + 1][None])[0, -1].float(), -1))
    expected = -direct_blend(tokens, rows, targets, p, step=128)  # two 64-token windows per step
    torch.testing.assert_close(nll[targets], expected, rtol=1e-4, atol=1e-4)
    _, plain = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=128)
    assert torch.equal(nll[:64], plain[:64])  # nothing counted before the first step is scored
    assert float(nll[400:].mean()) < float(plain[400:].mean()) - 0.5  # repeats are predicted


def test_record_blend_is_not_a_distribution() -> None:
    """The declared C2 break: the record's per-target blend, applied to every token, does not sum to 1."""
    counts = BackoffCounts(64, 1 << 10, 2, 4, "cpu")
    g = torch.Generator().manual_seed(0)
    counts.update_sequence(torch.randint(0, 8, (400,), generator=g))  # a small alphabet: many hits and collisions
    ctx = torch.randint(0, 8, (1, 3), generator=g)
    chosen, ctx_h, ctx_c = counts.choose_order(ctx, 2)
    i, order = int(chosen[0]), counts.orders[int(chosen[0])]
    every = torch.arange(64)
    full = counts.full[i][counts.bucket(counts.full_hash(ctx_h.expand(64), every, order))]
    p_ng = torch.minimum(full, ctx_c.expand(64)) / ctx_c
    model = torch.full((64,), 1 / 64)
    a = 0.5
    assert abs(float(((1 - a) * model + a * p_ng).sum()) - 1) > 0.01


def test_normalized_blend_is_a_distribution(setup) -> None:
    model, ctx, tokens = setup
    res, nll = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=128, adapters=[NgramMixerAdapter(params(normalize=True))])
    assert res.ledger["c2_rows_checked"] > 0 and res.ledger["c2_max_deviation"] < 1e-4
    assert "c2_declared_broken_by" not in res.ledger  # checked as a distribution, not exempted as a declared break
    assert res.adapters["ngram_mixer"]["blended_fraction"] > 0.8
    _, plain = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=128)
    assert float(nll[400:].mean()) < float(plain[400:].mean()) - 0.5


@pytest.mark.parametrize("kw", [dict(), dict(normalize=True), dict(update="window_inputs")])
def test_causal_by_perturbation(setup, kw) -> None:
    model, ctx, tokens = setup
    _, base = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=128, adapters=[NgramMixerAdapter(params(**kw))])
    for t in (150, 420, 777):
        _, moved = per_target_nll(
            model, perturb_after(tokens, t, 1024, seed=t), ctx, seq_len=64, batch_tokens=128, adapters=[NgramMixerAdapter(params(**kw))]
        )
        assert torch.equal(moved[:t], base[:t]), (kw, t)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="min_order"):
        params(min_order=1).validate()
    with pytest.raises(ValueError, match="alpha"):
        params(alpha_base=0.6, alpha_range=0.55).validate()


def test_declares_the_broken_condition() -> None:
    assert NgramMixer.legality.breaks == ("C2",) and "sum to 1" in NgramMixer.legality.reason


def test_legality_follows_normalize_in_golf_check() -> None:
    """normalize = true breaks nothing: golf check reports the stack compliant; the catalog keeps the worst case."""
    from golf_core.check import legality_summary
    from golf_core.stack import resolve
    from golf_core.testing import catalog

    assert NgramMixer.legality_for(params()).breaks == ("C2",)
    assert NgramMixer.legality_for(params(normalize=True)).compliant
    assert NgramMixerAdapter(params(normalize=True)).legality.compliant and not NgramMixerAdapter(params()).legality.compliant
    record = legality_summary(resolve(None, catalog(), enable=["ngram_mixer"]), catalog())
    assert not record["compliant"] and [b["condition"] for b in record["broken"]] == ["C2"]
    normalized = legality_summary(resolve(None, catalog(), enable=["ngram_mixer"], overrides=["techniques.ngram_mixer.normalize=true"]), catalog())
    assert normalized["compliant"] and normalized["broken"] == [] and normalized["techniques"][0]["breaks"] == []
    assert catalog().get("ngram_mixer").cls.legality.breaks == ("C2",)
    # The scoring pass asks the registered technique with the run's Params too.
    from golf_core.eval.scoring import declared_legality
    from golf_core.testing import make_ctx, micro_stack

    for normalize, breaks in ((True, ()), (False, ("C2",))):
        ctx = make_ctx(micro_stack(enable=["ngram_mixer"], overrides=[f"techniques.ngram_mixer.normalize={str(normalize).lower()}"]))
        adapter = ctx.pm.get_plugin("ngram_mixer").golf_eval_adapters(model=None, ctx=ctx)
        adapter.legality = None  # only the registered technique's answer is left
        assert declared_legality(adapter, ctx).breaks == breaks


def test_micro_run(tmp_path) -> None:
    report = run_micro(
        tmp_path, enable=["ngram_mixer"],
        overrides=[
            "techniques.ngram_mixer.buckets=65536", "techniques.ngram_mixer.min_tokens=256", "techniques.ngram_mixer.max_order=8",
            "train.val_batch_tokens=256",  # 8 steps: the counts of early steps serve the later ones
        ],
    )
    adapted = report["adapted"]
    assert adapted["ledger"]["exactly_once"] and adapted["adapters"]["ngram_mixer"]["blended_fraction"] > 0.5
    assert math.isfinite(adapted["val_bpb"])
