"""The core scoring pass and its ledger: the four conditions are checked, and cheating is rejected.

C1 causal, C2 normalized, C3 score before update, C4 each target scored exactly once. Every
adapter shipped with golf proves C1 in its own tests by perturbation; here the core is tested
with throwaway adapters, legal and deliberately illegal.
"""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from golf_core.errors import GolfError
from golf_core.eval.adapters import EvalAdapter
from golf_core.eval.ledger import LegalityError, ScoreLedger
from golf_core.eval.plan import WindowPlan, strided_windows, tiled_windows
from golf_core.eval.scoring import evaluate
from golf_core.eval.stream import EvalStream
from golf_core.testing import build_model, micro_stack

VOCAB = 1024


class TinyTable:
    """Byte table stand-in: every target is worth 2 bytes, except BOS (0)."""

    def token_bytes(self, prev, tgt):
        return torch.where(tgt == 1, 0, 2).to(torch.int32)


class Ctx:
    def __init__(self, rank=0, world_size=1):
        self.device = torch.device("cpu")
        self.byte_table = TinyTable()
        self.rank, self.world_size = rank, world_size
        self.pm = None
        self.stack = None


def make_tokens(n: int = 700, seed: int = 0, doc_len: int = 90) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, VOCAB, (n,), generator=g)
    tokens[::doc_len] = 1  # a BOS every doc_len tokens: documents
    return tokens


class TinyLM(torch.nn.Module):
    """A causal model cheap enough for many passes: logits from the current and previous token."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.cur = torch.nn.Parameter(torch.randn(VOCAB, VOCAB, generator=g))
        self.prev = torch.nn.Parameter(torch.randn(VOCAB, VOCAB, generator=g) * 0.5)

    def forward_logits(self, x):
        shifted = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        return self.cur[x] + self.prev[shifted]


@pytest.fixture(scope="module")
def model():
    return TinyLM().eval()


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    m, _, _ = build_model(micro_stack())
    return m.eval()


def direct_nll(model, tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Per-target NLL of non-overlapping windows, computed without the pass."""
    out = []
    n = tokens.numel() - 1
    for s in range(0, n, seq_len):
        e = min(s + seq_len, n)
        x = tokens[s:e][None]
        logits = model.forward_logits(x)[0]
        out.append(F.cross_entropy(logits.float(), tokens[s + 1 : e + 1], reduction="none"))
    return torch.cat(out)


@torch.no_grad()
def test_default_pass_matches_direct_computation(gpt) -> None:
    tokens = make_tokens()
    res = evaluate(gpt, tokens, Ctx(), seq_len=128, batch_tokens=256)
    nll = direct_nll(gpt, tokens, 128)
    nbytes = TinyTable().token_bytes(None, tokens[1:]).double().sum()
    assert res.tokens == tokens.numel() - 1 == nll.numel()  # the last, partial window is scored too
    assert res.bytes == int(nbytes)
    assert res.val_loss == pytest.approx(float(nll.double().mean()), rel=1e-5)
    assert res.val_bpb == pytest.approx(float(nll.double().sum()) / (math.log(2) * float(nbytes)), rel=1e-5)
    assert res.ledger["exactly_once"] and res.ledger["scored_tokens"] == res.ledger["expected_tokens"]


def test_eval_time_is_compared_with_the_budget(model) -> None:
    res = evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=512, budget_seconds=1e-9)
    assert res.seconds > 0 and res.as_dict()["within_budget"] is False
    assert evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=512, budget_seconds=1e6).within_budget


# ---- C3: score before update -------------------------------------------------------------------


class PeekingLearner(EvalAdapter):
    """Deliberately illegal: trains on the chunk being scored, before the core has scored it."""

    name = "peeking"
    changes_distribution = True

    def begin(self, session):
        self.stream = session.stream

    def adjust_logprobs(self, logprobs, batch, stream):
        lo, hi = int(batch.targets.min()), int(batch.targets.max()) + 1
        self.stream.scored_tokens(lo, hi, self.name)  # "learn" from this chunk first
        return logprobs


def test_training_on_an_unscored_chunk_is_rejected(model) -> None:
    with pytest.raises(LegalityError) as err:
        evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=256, adapters=[PeekingLearner()])
    msg = str(err.value)
    assert "C3 violated" in msg and "'peeking'" in msg and "target 0 " in msg and "frontier of document 0 is target 0" in msg


class AheadLearner(EvalAdapter):
    """Learns at each chunk end from the *next* chunk (illegal) or from the chunk just scored (legal)."""

    name = "ahead"
    learns = True
    chunk_tokens = 200

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.learned: list[tuple[int, int]] = []

    def learn(self, scored):
        if not scored.step.chunk_end:
            return
        lo, hi = scored.step.chunk_range
        lo, hi = lo + self.offset, min(hi + self.offset, scored.stream.num_targets)
        scored.stream.scored_tokens(lo, hi, self.name)
        self.learned.append((lo, hi))


def test_chunked_learning_sees_only_scored_chunks(model) -> None:
    tokens = make_tokens()
    legal = AheadLearner(0)
    res = evaluate(model, tokens, Ctx(), seq_len=128, batch_tokens=256, adapters=[legal])
    n = tokens.numel() - 1
    assert legal.learned and legal.learned[-1][1] == n  # every chunk, up to the end
    assert res.ledger["learn_checks"] == len(legal.learned)
    with pytest.raises(LegalityError, match=r"C3 violated: adapter 'ahead' asked to learn from target \d+"):
        evaluate(model, tokens, Ctx(), seq_len=128, batch_tokens=256, adapters=[AheadLearner(200)])


def test_learners_get_each_step_after_it_is_scored(model) -> None:
    events = []

    class Recorder(EvalAdapter):
        name = "recorder"
        changes_distribution = True
        learns = True

        def begin(self, session):
            self.ledger = session.ledger

        def adjust_logprobs(self, logprobs, batch, stream):
            events.append(("score", int(self.ledger.counts.sum())))
            return logprobs

        def learn(self, scored):
            # The step's targets are scored (counted) and revealed.
            assert bool((self.ledger.counts[scored.targets] == 1).all())
            assert torch.equal(scored.target_tokens, tokens[scored.targets + 1])
            events.append(("learn", int(self.ledger.counts.sum())))

    tokens = make_tokens()
    plain = evaluate(model, tokens, Ctx(), seq_len=128, batch_tokens=256)
    res = evaluate(model, tokens, Ctx(), seq_len=128, batch_tokens=256, adapters=[Recorder()])
    assert [e[0] for e in events] == ["score", "learn"] * (len(events) // 2)
    assert all(events[i][1] < events[i + 1][1] for i in range(0, len(events), 2))  # learn after the count grew
    assert res.val_bpb == pytest.approx(plain.val_bpb, rel=1e-6)
    assert res.ledger["c2_rows_checked"] > 0


# ---- C1: prefix only -----------------------------------------------------------------------------


def test_reading_past_the_scored_targets_is_rejected(model) -> None:
    class Lookahead(EvalAdapter):
        name = "lookahead"
        changes_distribution = True

        def adjust_logprobs(self, logprobs, batch, stream):
            stream.prefix(int(batch.targets.max()) + 2, self.name)  # includes the last target's token
            return logprobs

    with pytest.raises(LegalityError, match="C1 violated: adapter 'lookahead'"):
        evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=256, adapters=[Lookahead()])


# ---- C2: normalized -----------------------------------------------------------------------------


class Unnormalized(EvalAdapter):
    name = "unnormalized"
    changes_distribution = True

    def adjust_logprobs(self, logprobs, batch, stream):
        return logprobs + 0.1  # every probability up by 10%: sums to 1.105


def test_unnormalized_distribution_is_rejected(model) -> None:
    with pytest.raises(LegalityError, match=r"C2 violated: after unnormalized a scored distribution sums to 1.105"):
        evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=256, adapters=[Unnormalized()])


def test_declared_c2_break_is_measured_not_rejected(model) -> None:
    from golf_core.technique import Legality

    adapter = Unnormalized()
    adapter.legality = Legality(breaks=("C2",), reason="test")
    res = evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=256, adapters=[adapter])
    assert res.ledger["c2_max_deviation"] == pytest.approx(0.1, abs=1e-5)
    assert res.ledger["c2_declared_broken_by"] == ["unnormalized"]


def test_target_only_rescoring_needs_a_declared_c2_break(model) -> None:
    class TargetOnly(EvalAdapter):
        name = "target_only"
        target_only = True

        def adjust_target_logprob(self, logprobs, target_tokens, batch, stream):
            return torch.zeros_like(target_tokens, dtype=torch.float32)  # "p(target) = 1"

    with pytest.raises(LegalityError, match="target_only.*does not declare"):
        evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=256, adapters=[TargetOnly()])


# ---- C4: exactly once ---------------------------------------------------------------------------


class PlanAdapter(EvalAdapter):
    name = "plan"
    provides_plan = True

    def __init__(self, windows) -> None:
        self.windows = windows

    def plan(self, session):
        return WindowPlan(*self.windows, num_targets=session.stream.num_targets, batch_rows=3)


def test_a_plan_that_skips_or_repeats_targets_fails(model) -> None:
    tokens = make_tokens()
    n = tokens.numel() - 1
    starts, lengths, lo, hi = tiled_windows(n, 128)
    with pytest.raises(LegalityError, match=r"C4 violated: .* 1 targets never scored \(first: target 0, document 0\)"):
        evaluate(model, tokens, Ctx(), seq_len=128, batch_tokens=256, adapters=[PlanAdapter((starts, lengths, lo + (starts == 0).long(), hi))])
    starts, lengths, lo, hi = strided_windows(n, 128, 64)
    with pytest.raises(LegalityError, match="targets scored more than once"):
        evaluate(model, tokens, Ctx(), seq_len=128, batch_tokens=256, adapters=[PlanAdapter((starts, lengths, torch.zeros_like(lo), hi))])


def test_count_is_sum_of_document_lengths_minus_one(model) -> None:
    tokens = make_tokens(n=333, doc_len=47)
    stream = EvalStream(tokens)
    assert int((stream.docs[:, 1] - 1).sum()) == tokens.numel() - 1
    res = evaluate(model, tokens, Ctx(), seq_len=64, batch_tokens=128)
    assert res.tokens == int((stream.docs[:, 1] - 1).sum())


def test_two_plan_providers_are_refused(model) -> None:
    windows = tiled_windows(699, 128)
    with pytest.raises(GolfError, match="plan, plan each provides the evaluation plan"):
        evaluate(model, make_tokens(), Ctx(), seq_len=128, batch_tokens=256, adapters=[PlanAdapter(windows), PlanAdapter(windows)])


def test_sliding_windows_cover_every_target_once() -> None:
    for n, seq_len, stride in [(1, 8, 4), (7, 8, 4), (8, 8, 4), (9, 8, 4), (100, 16, 5), (100, 16, 16), (64, 16, 20)]:
        starts, lengths, lo, hi = strided_windows(n, seq_len, stride)
        covered = torch.cat([torch.arange(int(s + a), int(s + b)) for s, a, b in zip(starts, lo, hi)])
        assert torch.equal(covered, torch.arange(n)), (n, seq_len, stride)
        assert bool((lengths <= seq_len).all())
        context = (starts + lo - starts)[1:]  # scored targets see at least seq_len - stride tokens
        assert bool((context >= seq_len - min(stride, seq_len)).all())


# ---- distributed: two ranks on gloo -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_rank_worker(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = TinyLM().eval()
        tokens = make_tokens()
        learner = AheadLearner(0)
        res = evaluate(model, tokens, Ctx(rank, 2), seq_len=128, batch_tokens=256, adapters=[learner])
        results[rank] = (res.tokens, res.val_loss, res.ledger["exactly_once"], learner.learned)
    finally:
        dist.destroy_process_group()


def test_two_ranks_score_each_target_once_and_share_chunks() -> None:
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_two_rank_worker, args=(_free_port(), results), nprocs=2, join=True)
    alone = AheadLearner(0)
    single = evaluate(TinyLM().eval(), make_tokens(), Ctx(), seq_len=128, batch_tokens=256, adapters=[alone])
    for rank in (0, 1):
        tokens, loss, once, learned = results[rank]
        assert tokens == single.tokens and once
        assert loss == pytest.approx(single.val_loss, rel=1e-5)
        # Each rank learned from every whole chunk although it scored only half of each: the sync
        # made the other rank's scores visible, and nothing beyond them.
        assert learned == alone.learned


def test_ledger_names_the_document_of_a_violation() -> None:
    ledger = ScoreLedger(100, torch.device("cpu"), torch.tensor([0, 40, 70]))
    ledger.record(torch.arange(0, 45), torch.zeros(45), torch.ones(45))
    ledger.require_scored(0, 45, "me")
    with pytest.raises(LegalityError, match=r"target 45 \(token 46, document 1\).*frontier of document 1 is target 45"):
        ledger.require_scored(30, 50, "me")


# ---- golf check names the conditions the shipped techniques declare -----------------------------


@pytest.mark.parametrize(
    "enable, broken",
    [
        (["sliding_window", "score_first_ttt", "ngram_tilt"], set()),
        (["lora_ttt", "phased_ttt"], set()),
        (["ngram_mixer"], {"C2"}),
        (["slot"], {"C1", "C3"}),
        (["prequant_ttt"], {"C1", "C3"}),
    ],
)
def test_check_reports_declared_breaks(enable, broken) -> None:
    from golf_core.check import legality_summary
    from golf_core.testing import catalog

    summary = legality_summary(micro_stack(enable), catalog())
    assert summary["compliant"] == (not broken)
    assert {row["condition"] for row in summary["broken"]} == broken
    assert all(row["reason"] for row in summary["broken"])
