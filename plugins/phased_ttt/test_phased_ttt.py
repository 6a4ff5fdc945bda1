"""phased_ttt: the phase schedule and document selection of PR #1855, global SGD equals a direct
loop (document-isolated rows equal separate documents), documents scored later never change
earlier scores, training on unscored documents is refused, two ranks agree, and a micro run."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from golf_core.eval.ledger import LegalityError
from golf_core.eval.probe import micro_eval_setup, per_target_nll, perturb_docs
from golf_core.eval.stream import EvalStream
from golf_core.testing import run_micro
from plugins.lora_ttt import LoraTTT, LoraTTTAdapter, document_queue
from plugins.phased_ttt import PhasedTTT, PhasedTTTAdapter, doc_rows, global_sgd, sequence_loss

LORA = dict(rank=4, alpha=8.0, lr=0.01, chunk_size=16, context=32, batch_docs=2, weight_decay=0.1)


def phased(**kw):
    base = dict(prefix_docs=4, num_phases=2, lr=0.05, chunk_tokens=64, batch_seqs=2, seq_len=16)
    base.update(kw)
    return PhasedTTT.Params(**base)


def docs_stream(tokens: torch.Tensor, lengths=(40, 70, 25, 90, 55, 30, 65, 45)) -> torch.Tensor:
    """Documents of the given lengths cut from ``tokens``, each opened by BOS."""
    out, at = [], 1
    for n in lengths:
        out += [torch.tensor([1]), tokens[at : at + n - 1]]
        at += n - 1
    return torch.cat(out)


@pytest.fixture(scope="module")
def setup():
    model, ctx, tokens = micro_eval_setup(n_tokens=600)
    return model, ctx, docs_stream(tokens)


def run(model, ctx, tokens, p=None, lora=None, extra=()):
    adapters = [LoraTTTAdapter(LoraTTT.Params(**(lora or LORA)), seed=0), PhasedTTTAdapter(p or phased()), *extra]
    return per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256, adapters=adapters)


def test_phase_schedule_and_document_selection(setup) -> None:
    model, ctx, tokens = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res, _ = run(model, ctx, tokens)
    stream = EvalStream(tokens)
    queue = document_queue(stream.docs[:, 1], 2)
    report = res.adapters["phased_ttt"]
    assert report["boundaries"] == [2, 4]
    phases = report["phases"]
    assert [(ph["after_round"], ph["trained_docs"]) for ph in phases] == [(1, 2), (2, 4)]
    # Phase 2 trains on the four documents of the first two queue batches, ordered by their batch in
    # the length-ascending list (then position), i.e. the shorter batch first.
    (o0, d0), (o1, d1) = queue[0], queue[1]
    first = d1.tolist() + d0.tolist() if o1 < o0 else d0.tolist() + d1.tolist()
    assert phases[1]["tokens"] == int(sum(int(stream.docs[d, 1]) for d in first))
    assert res.ledger["exactly_once"] and res.ledger["learn_checks"] >= 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # handed back unchanged


def test_global_sgd_equals_a_direct_loop(setup) -> None:
    model, _, tokens = setup
    p = phased(respect_doc_boundaries=False, lr=0.05)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    report = global_sgd(a, tokens[:200], p, seq_len=16, rank=0, world_size=1)
    opt = torch.optim.SGD(b.parameters(), lr=p.lr, momentum=p.momentum)
    total, chunks = 199, 4
    for ci in range(chunks - 1):  # the last chunk is skipped
        for g in opt.param_groups:
            g["lr"] = p.lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * ci / (chunks - 1))).item())
        seqs = (min((ci + 1) * 64, total) - ci * 64) // 16
        for s in range(0, seqs, 2):
            local = tokens[ci * 64 + s * 16 : ci * 64 + min(s + 2, seqs) * 16 + 1]
            opt.zero_grad()
            b.train()
            b(local[:-1].reshape(-1, 16), local[1:].reshape(-1, 16)).backward()
            torch.nn.utils.clip_grad_norm_(list(b.parameters()), p.grad_clip)
            opt.step()
    assert report == {"chunks": chunks, "steps": 6}
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)


@torch.no_grad()
def test_document_rows_equal_separate_documents(setup) -> None:
    model, _, tokens = setup
    x, y = tokens[:48].reshape(3, 16), tokens[1:49].reshape(3, 16)
    xs, ys = doc_rows(x, y)
    assert int((ys >= 0).sum()) == 48
    separate = []
    for xr, yr in zip(x, y):
        cuts = [0] + [int(i) for i in (xr == 1).nonzero().flatten() if int(i) > 0] + [16]
        for a, b in zip(cuts[:-1], cuts[1:]):
            logits = model.forward_logits(xr[a:b][None])[0]
            separate.append(F.cross_entropy(logits, yr[a:b], reduction="none"))
    expected = torch.cat(separate).mean()
    torch.testing.assert_close(sequence_loss(model, x, y, True), expected, rtol=1e-5, atol=1e-6)
    assert xs.size(0) > 3  # the sample's BOS did split rows


def test_documents_scored_later_never_change_earlier_scores(setup) -> None:
    model, ctx, tokens = setup
    _, base = run(model, ctx, tokens)
    stream = EvalStream(tokens)
    last = document_queue(stream.docs[:, 1], 2)[-1][1].tolist()
    _, got = run(model, ctx, perturb_docs(tokens, last, 1024, seed=9))
    keep = torch.ones(tokens.numel() - 1, dtype=torch.bool)
    for d in last:
        a, b = stream.doc_targets(d)
        keep[a:b] = False
    assert torch.equal(got[keep], base[keep]) and not torch.equal(got[~keep], base[~keep])


def test_training_on_unscored_documents_is_refused(setup) -> None:
    model, ctx, tokens = setup

    class Greedy(PhasedTTTAdapter):
        """Pauses one round early: the boundary's documents are not all scored yet."""

        def learn(self, scored):
            tag = scored.step.tag
            if "round_end" in tag and self.phase < len(self.boundaries):
                scored.step.tag = {**tag, "round_end": tag["round_end"] + 1, "scored_docs": 10**9}
            super().learn(scored)

    with pytest.raises(LegalityError, match="C3 violated: adapter 'phased_ttt'"):
        per_target_nll(model, tokens, ctx, seq_len=64, batch_tokens=256,
                       adapters=[LoraTTTAdapter(LoraTTT.Params(**LORA), seed=0), Greedy(phased(prefix_docs=8, num_phases=1))])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, ctx, tokens = micro_eval_setup(n_tokens=600)
        ctx.rank, ctx.world_size = rank, 2
        res, nll = run(model, ctx, docs_stream(tokens))
        results[rank] = (res.tokens, res.ledger["exactly_once"], res.adapters["phased_ttt"]["phases"], res.val_loss)
    finally:
        dist.destroy_process_group()


def test_two_ranks_pause_together_and_agree() -> None:
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    (t0, once0, ph0, loss0), (t1, once1, ph1, loss1) = results[0], results[1]
    assert t0 == t1 == 419 and once0 and once1 and loss0 == loss1
    assert [p["after_round"] for p in ph0] == [p["after_round"] for p in ph1] == [1, 2]  # 2 batches per round
    for a, b in zip(ph0, ph1):
        assert a["trained_docs"] == b["trained_docs"] and a["weight_sum"] == pytest.approx(b["weight_sum"], rel=1e-9)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError):
        phased(num_phases=0).validate()


def test_micro_run(tmp_path) -> None:
    report = run_micro(
        tmp_path, enable=["lora_ttt", "phased_ttt"],
        overrides=[
            "techniques.lora_ttt.rank=4", "techniques.lora_ttt.batch_docs=2", "techniques.lora_ttt.chunk_size=32",
            "techniques.phased_ttt.prefix_docs=4", "techniques.phased_ttt.num_phases=2", "techniques.phased_ttt.chunk_tokens=256",
        ],
    )
    adapted = report["adapted"]
    assert adapted["ledger"]["exactly_once"]
    assert [p["phase"] for p in adapted["adapters"]["phased_ttt"]["phases"]] == [1, 2]
