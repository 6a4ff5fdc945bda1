"""ngram_tilt: vectorized hints equal a literal sequential port of the kernel's rules, hints are
causal, the tilt is normalized and matches the NLL formula (section J), the pass is causal under
perturbation, the tilt helps on repeated text, and a micro run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from golf_core.data import ByteTable, ensure_sample_dataset, find_shards, load_tokenizer, read_shard
from golf_core.eval.probe import micro_eval_setup, per_target_nll, perturb_after
from golf_core.testing import run_micro
from plugins.ngram_tilt import NgramTilt, NgramTiltAdapter, tilt_logprobs
from plugins.ngram_tilt.hints import HintGenerator

M64 = (1 << 64) - 1
PRIMES = [36313, 27191, 51647, 81929, 131071, 196613, 262147, 393241, 524309, 655373, 786433, 917521, 1048583,
          1179653, 1310729, 1441801, 1572869, 1703941, 1835017, 1966087, 2097169, 2228243, 2359319, 2490389,
          2621471, 2752549, 2883617, 3014687, 3145757, 3276833, 3407903, 3538973]


class _Table:
    """One kernel table: context -> [count, best token, best count], plus pair counts."""

    def __init__(self):
        self.ctx, self.pair = {}, {}

    def lookup(self, key):
        e = self.ctx.get(key)
        return (-1, 0.0, 0) if e is None else (e[1], e[2] / e[0], e[0])

    def update(self, key, pair_key, tok):
        pc = self.pair[pair_key] = self.pair.get(pair_key, 0) + 1
        e = self.ctx.get(key)
        if e is None:
            self.ctx[key] = [1, tok, 1]
            return
        e[0] += 1
        if tok == e[1]:
            e[2] += 1
        elif pc > e[2]:
            e[1], e[2] = tok, pc


def reference_hints(tokens, ws_lut, bnd_lut, *, base_beta=2.0, agree=0.1, wthr=0.25, wbeta=0.92, dthr=0.8, dbeta=0.5):
    """Position by position, as ContextMixer::get_hints_batch does (orders 8..16 stride 2)."""
    orders = [8, 10, 12, 14, 16]
    cfg = {k: ((0.7, 3) if k <= 10 else (0.6, 2) if k <= 13 else (0.5, 2)) for k in orders}
    token = {k: _Table() for k in orders}
    within, word = [_Table(), _Table(), _Table()], _Table()
    wh = wl = 0
    ring, head, fill, cw, cl = [0] * 4, 0, 0, 0, 0
    hints, betas = [-1] * len(tokens), [0.0] * len(tokens)

    def ring_key():
        key = 0
        for j in range(4):
            key ^= (ring[(head + j) % 4] * PRIMES[j]) & M64
        return key

    for p in range(1, len(tokens)):
        tok, prev = int(tokens[p]), int(tokens[p - 1])
        hashes, h = [], 0
        for k in range(min(16, p)):
            h ^= (int(tokens[p - k - 1]) * PRIMES[k]) & M64
            hashes.append(h)
        cands = []
        for k in reversed(orders):
            if k <= min(16, p):
                hint, conf, cnt = token[k].lookup(hashes[k - 1])
                if hint >= 0 and conf >= cfg[k][0] and cnt >= cfg[k][1]:
                    cands.append([hint, base_beta * conf])
                    break
        if not (bnd_lut[prev] or ws_lut[prev] or wl == 0):
            hint, conf, cnt = within[min(wl - 1, 2)].lookup(wh ^ ((wl * 0x9E3779B185EBCA87) & M64))
            if hint >= 0 and conf >= wthr and cnt >= 1:
                cands.append([hint, wbeta])
        if ws_lut[prev] and fill >= 4:
            hint, conf, cnt = word.lookup(ring_key())
            if hint >= 0 and conf >= dthr and cnt >= 3:
                cands.append([hint, dbeta])
        for a in cands:
            if any(b is not a and b[0] == a[0] for b in cands):
                a[1] += agree
        if cands:
            best = cands[0]
            for c in cands[1:]:
                if c[1] > best[1]:
                    best = c
            hints[p], betas[p] = best
        for k in orders:
            if k <= min(16, p):
                ch = hashes[k - 1]
                token[k].update(ch, ((ch * 1000003) & M64) ^ ((tok * PRIMES[k]) & M64), tok)
        if bnd_lut[tok]:
            wh, wl = 0, 0
        elif ws_lut[tok] or wl == 0:
            wh, wl = ((tok + 1) * PRIMES[0]) & M64, 1
        else:
            key = wh ^ ((wl * 0x9E3779B185EBCA87) & M64)
            within[min(wl - 1, 2)].update(key, ((key * 1000003) & M64) ^ ((tok * PRIMES[0]) & M64), tok)
            wh = ((wh * 1099511628211) & M64) ^ (((tok + 1) * PRIMES[wl % 32]) & M64)
            wl += 1
        if (bnd_lut[tok] or ws_lut[tok]) and cl:
            ring[head], head, fill, cw, cl = cw, (head + 1) % 4, fill + 1, 0, 0
        if not bnd_lut[tok]:
            if ws_lut[tok] and fill >= 4:
                key = ring_key()
                word.update(key, ((key * 1000003) & M64) ^ ((tok * PRIMES[4]) & M64), tok)
            cw, cl = (cw * 31 + tok) & M64, cl + 1
    return np.array(hints), np.array(betas)


@pytest.fixture(scope="module")
def corpus():
    data = ensure_sample_dataset(vocab_size=1024)
    tokens = np.concatenate([read_shard(f) for f in find_shards(data, "val")]).astype(np.int64)[:24000]
    table = ByteTable.from_sentencepiece(load_tokenizer(data / "tokenizer.model"), 1024)
    return tokens, table.has_leading_space.numpy(), table.is_boundary.numpy()


@pytest.fixture(scope="module")
def reference(corpus):
    tokens, ws, bnd = corpus
    return reference_hints(tokens, ws, bnd)


def generate(tokens, ws, bnd, ends, **kw):
    gen = HintGenerator(ws, bnd, within_beta=0.92, word_beta=0.5, **kw)
    for end in ends:
        gen.advance(tokens, end)
    return gen.hints(0, ends[-1] + 1)


def test_hints_equal_the_sequential_rules(corpus, reference) -> None:
    tokens, ws, bnd = corpus
    ref_h, ref_b = reference
    n = tokens.size - 1
    assert 0.05 < (ref_h >= 0).mean() < 0.9  # every expert fires on this corpus, not trivially
    rng = np.random.default_rng(0)
    for ends in ([n], sorted(set(rng.integers(2, n, size=40).tolist())) + [n], list(range(1, 300)) + [n]):
        h, b = generate(tokens, ws, bnd, ends, lazy_orders=False)
        np.testing.assert_array_equal(h, ref_h[: n + 1])
        np.testing.assert_allclose(b, ref_b[: n + 1], rtol=0, atol=1e-12)


def test_lazy_orders_differ_only_at_hash_collisions(corpus, reference) -> None:
    tokens, ws, bnd = corpus
    h, _ = generate(tokens, ws, bnd, [tokens.size - 1], lazy_orders=True)
    assert (h != reference[0][: h.size]).mean() < 1e-3


def test_hints_are_causal(corpus) -> None:
    tokens, ws, bnd = corpus
    base, _ = generate(tokens, ws, bnd, [tokens.size - 1])  # the default, lazy orders
    rng = np.random.default_rng(1)
    for p in (50, 4000, 15000):
        moved = tokens.copy()
        moved[p:] = rng.integers(2, 1024, size=tokens.size - p)
        h, _ = generate(moved, ws, bnd, [tokens.size - 1])
        np.testing.assert_array_equal(h[: p + 1], base[: p + 1])  # the hint of p reads tokens[:p] only
        assert (h[p + 1 :] != base[p + 1 :]).any()


def test_tilt_is_normalized_and_matches_the_nll_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1024, generator=g) * 3
    logprobs = torch.log_softmax(logits.double(), dim=-1)  # exactly normalized for the float64 check
    hints = torch.randint(0, 1024, (64,), generator=g)
    hints[::4] = -1
    betas = torch.rand(64, generator=g, dtype=torch.float64) * 3
    targets = torch.where(torch.arange(64) % 3 == 0, hints.clamp(min=0), torch.randint(0, 1024, (64,), generator=g))
    out = tilt_logprobs(logprobs, hints, betas)
    assert torch.allclose(torch.logsumexp(out.double(), dim=-1), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    # Explicit full-vocabulary renormalization, in float64.
    p = logprobs.double().exp()
    onehot = torch.zeros_like(p).scatter_(1, hints.clamp(min=0)[:, None], 1.0) * (hints >= 0)[:, None]
    tilted = p * torch.exp(betas[:, None] * onehot)
    explicit = -(tilted / tilted.sum(-1, keepdim=True)).gather(1, targets[:, None]).squeeze(1).log()
    nll = -logprobs.double().gather(1, targets[:, None]).squeeze(1)
    p_h = p.gather(1, hints.clamp(min=0)[:, None]).squeeze(1)
    has = (hints >= 0).double()
    formula = nll + has * (torch.log(1 + p_h * (betas.exp() - 1)) - betas * (targets == hints).double())
    torch.testing.assert_close(explicit, formula, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(-out.gather(1, targets[:, None]).squeeze(1), formula, rtol=1e-9, atol=1e-9)
    unhinted = hints < 0
    assert torch.equal(out[unhinted], logprobs[unhinted])
    out32 = tilt_logprobs(logprobs.float(), hints, betas)  # the pass's dtype
    torch.testing.assert_close(-out32.double().gather(1, targets[:, None]).squeeze(1), formula, rtol=1e-5, atol=1e-5)


def params(**kw):
    return NgramTilt.Params(**{"within_beta": 0.92, "word_beta": 0.5, **kw})


def repeated_stream(tokens: torch.Tensor, times: int = 3) -> torch.Tensor:
    return torch.cat([tokens] + [tokens[1:]] * (times - 1))


def test_pass_is_causal_by_perturbation() -> None:
    model, ctx, tokens = micro_eval_setup(n_tokens=300)
    tokens = repeated_stream(tokens)
    _, base = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256, adapters=[NgramTiltAdapter(params())])
    for t in (320, 500, 800):
        moved = perturb_after(tokens, t, 1024, seed=t)
        _, nll = per_target_nll(model, moved, ctx, seq_len=64, batch_tokens=256, adapters=[NgramTiltAdapter(params())])
        assert torch.equal(nll[:t], base[:t]), t


def test_tilt_helps_on_repeated_text() -> None:
    model, ctx, tokens = micro_eval_setup(n_tokens=300)
    tokens = repeated_stream(tokens)
    plain, plain_nll = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256)
    res, nll = per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256, adapters=[NgramTiltAdapter(params())])
    report = res.adapters["ngram_tilt"]
    assert report["hinted_fraction"] > 0.3  # the repeats are hinted
    repeats = slice(299, None)
    assert float(nll[repeats].mean()) < float(plain_nll[repeats].mean()) - 1.0
    assert res.val_bpb < plain.val_bpb - 0.5
    assert res.ledger["c2_max_deviation"] < 1e-4


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="one entry per order"):
        NgramTilt.Params(thresholds=(0.5,)).validate()
    with pytest.raises(ValueError, match="must include 'token'"):
        NgramTilt.Params(experts=("within",)).validate()


def test_micro_run(tmp_path) -> None:
    report = run_micro(tmp_path, enable=["ngram_tilt"])
    adapted = report["adapted"]
    assert adapted["ledger"]["exactly_once"] and adapted["ledger"]["c2_rows_checked"] > 0
    assert adapted["ledger"]["c2_max_deviation"] < 1e-4
    assert 0 <= adapted["adapters"]["ngram_tilt"]["hinted_fraction"] < 1
    assert math.isfinite(adapted["val_bpb"])
