"""The scoring pass: the ledger, the bits-per-byte formula, and evaluate() against a slow reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from golf_core.data import ByteTable, bits_per_byte, find_shards, load_tokenizer, load_validation_tokens
from golf_core.eval.ledger import LegalityError, ScoreLedger
from golf_core.eval.scoring import evaluate
from golf_core.model.gpt import GPT
from golf_core.model.spec import ModelSpec
from golf_core.testing import make_ctx, micro_stack

SEQ_LEN = 16
WINDOWS = 4
LN2 = math.log(2.0)


def test_ledger_sums_every_target_once() -> None:
    ledger = ScoreLedger(3, torch.device("cpu"))
    ledger.record(torch.tensor([0, 1]), torch.tensor([LN2, LN2]), torch.tensor([1, 2]))
    ledger.record(torch.tensor([2]), torch.tensor([2 * LN2]), torch.tensor([1]))
    summary = ledger.finish()
    assert (summary.tokens, summary.bytes, summary.expected_tokens, summary.exactly_once) == (3, 4, 3, True)
    assert summary.nats == pytest.approx(4 * LN2)
    assert summary.loss == pytest.approx(4 * LN2 / 3)
    # 1 + 1 + 2 bits over 4 bytes
    assert summary.bpb == pytest.approx(1.0)
    with pytest.raises(LegalityError, match="finished"):
        ledger.record(torch.tensor([0]), torch.tensor([0.0]), torch.tensor([1]))


def test_ledger_refuses_double_and_missing_scores() -> None:
    twice = ScoreLedger(2, torch.device("cpu"))
    twice.record(torch.tensor([0, 1]), torch.zeros(2), torch.ones(2))
    twice.record(torch.tensor([1]), torch.zeros(1), torch.ones(1))
    with pytest.raises(LegalityError, match="C4 violated.*scored more than once"):
        twice.finish()
    missing = ScoreLedger(2, torch.device("cpu"))
    missing.record(torch.tensor([0]), torch.zeros(1), torch.ones(1))
    with pytest.raises(LegalityError, match="C4 violated.*never scored"):
        missing.finish()


def test_bits_per_byte_hand_worked() -> None:
    # Three tokens with probabilities 1/2, 1/4 and 1/8 are 1 + 2 + 3 = 6 bits; over 4 bytes, 1.5 bpb.
    nats = -(math.log(0.5) + math.log(0.25) + math.log(0.125))
    assert bits_per_byte(nats, 4) == pytest.approx(1.5)
    assert bits_per_byte(nats, 4) == pytest.approx(nats / (LN2 * 4))


@pytest.fixture(scope="module")
def scoring_setup(sample_dataset):
    sp = load_tokenizer(sample_dataset / "tokenizer.model")
    table = ByteTable.from_sentencepiece(sp, 1024)
    tokens = load_validation_tokens(find_shards(sample_dataset, "val"), SEQ_LEN)[: WINDOWS * SEQ_LEN + 1].clone()
    stack = micro_stack()
    torch.manual_seed(0)
    model = GPT(ModelSpec.from_config(stack.core.model))
    with torch.no_grad():  # random weights everywhere, so every position depends on its prefix
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return sp, table, tokens, stack, model.eval()


def _piece_bytes(sp, prev: int, tok: int) -> int:
    """UTF-8 bytes that token ``tok`` adds after ``prev``, read straight from the tokenizer."""
    def special(t: int) -> bool:
        return sp.is_control(t) or sp.is_unknown(t) or sp.is_unused(t)

    if tok >= sp.vocab_size() or special(tok):
        return 0
    if sp.is_byte(tok):
        return 1
    piece = sp.id_to_piece(tok)
    space = 0
    if piece.startswith("\u2581"):
        piece = piece[1:]
        space = 0 if special(prev) else 1  # a leading space right after BOS is not counted
    return len(piece.encode("utf-8")) + space


def _slow_reference(model, sp, tokens) -> tuple[float, int, int]:
    """Score every target from its own prefix only, one position at a time."""
    nats, count, nbytes = 0.0, 0, 0
    with torch.no_grad():
        for w in range(WINDOWS):
            start = w * SEQ_LEN
            for j in range(SEQ_LEN):
                prefix = tokens[start : start + j + 1].long()[None]
                target = int(tokens[start + j + 1])
                logits = model.forward_logits(prefix)[0, -1]
                nats += float(-F.log_softmax(logits.double(), dim=-1)[target])
                count += 1
                nbytes += _piece_bytes(sp, int(tokens[start + j]), target)
    return nats, count, nbytes


def test_evaluate_equals_a_slow_per_token_computation(scoring_setup) -> None:
    sp, table, tokens, stack, model = scoring_setup
    ctx = make_ctx(stack, byte_table=table)
    # Two windows per batch: three batches, so the batching and the byte lookup are both exercised.
    result = evaluate(model, tokens, ctx, seq_len=SEQ_LEN, batch_tokens=2 * SEQ_LEN)
    nats, count, nbytes = _slow_reference(model, sp, tokens)
    assert result.tokens == count == WINDOWS * SEQ_LEN
    assert result.bytes == nbytes
    assert result.val_loss == pytest.approx(nats / count, rel=1e-5)
    assert result.val_bpb == pytest.approx(nats / (LN2 * nbytes), rel=1e-5)
    assert not model.training


def test_evaluate_uses_a_byte_sidecar_when_given(scoring_setup) -> None:
    _, table, tokens, stack, model = scoring_setup
    sidecar = torch.full((tokens.numel(),), 3, dtype=torch.int32)
    sidecar[1] = 10  # the first target's bytes
    result = evaluate(model, tokens, make_ctx(stack, byte_table=table), seq_len=SEQ_LEN, batch_tokens=2 * SEQ_LEN, byte_sidecar=sidecar)
    assert result.bytes == 3 * (WINDOWS * SEQ_LEN - 1) + 10
