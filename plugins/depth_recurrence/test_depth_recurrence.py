"""Depth recurrence: section-J index lists, identity before the switch, looped math, switch step, compiled switch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from golf_core.errors import GolfError
from golf_core.testing import build_model, micro_stack, run_micro
from plugins.depth_recurrence import LOOPED, DepthRecurrence, looped_layout

SIX = ["model.num_layers=6", "techniques.depth_recurrence.loop_start=1", "techniques.depth_recurrence.loop_end=3"]


def test_section_j_index_lists():
    assert looped_layout(11, 3, 5, 2) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])
    # Loop45 x2 (PR #1394): layers 4-5 three times.
    assert looped_layout(11, 4, 5, 2) == ([0, 1, 2, 3, 4, 5, 4], [5, 4, 5, 6, 7, 8, 9, 10])
    # PR #1204: layers 4-5 once more, 13 virtual blocks.
    assert looped_layout(11, 4, 5, 1) == ([0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9, 10])


def test_eleven_layer_model_has_eight_skip_weights_and_seventeen_slots():
    model, _, _ = build_model(micro_stack(["depth_recurrence"], ["model.num_layers=11"]))
    assert model.skip_weights.shape == (8, 64)
    assert model.num_slots() == 11 and model.num_slots(LOOPED) == 17
    assert (model.encoder_indices, model.decoder_indices) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    model.set_layout(LOOPED)
    assert (model.encoder_indices, model.decoder_indices) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])


def randomize(model):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.skip_weights.copy_(torch.rand(model.skip_weights.shape, generator=g) + 0.5)
        for block in model.blocks:
            block.attn.proj.weight.normal_(0, 0.05, generator=g)
            block.mlp.proj.weight.normal_(0, 0.05, generator=g)


def test_before_enable_at_equals_the_core_model_bit_for_bit():
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    core, _, _ = build_model(micro_stack([], ["model.num_layers=6"]), seed=5)
    looped, _, _ = build_model(micro_stack(["depth_recurrence"], SIX), seed=5)
    shared = {k: v for k, v in core.state_dict().items() if k != "skip_weights"}
    assert set(looped.state_dict()) == set(core.state_dict())
    assert all(torch.equal(looped.state_dict()[k], v) for k, v in shared.items())
    assert looped.skip_weights.shape == (6, 64) and core.skip_weights.shape == (3, 64)  # 12 virtual blocks -> 6 skips
    randomize(core)
    with torch.no_grad():
        looped.load_state_dict({**core.state_dict(), "skip_weights": torch.cat([core.skip_weights, torch.ones(3, 64)])})
        assert torch.equal(core.forward_logits(ids), looped.forward_logits(ids))
        assert torch.equal(core(ids, ids), looped(ids, ids))


def reference_looped_logits(model, ids, order):
    """Blocks in the looped order written out; first half encoder, skips LIFO with weight k."""
    x = F.rms_norm(model.tok_emb(ids), (model.tok_emb.embedding_dim,))
    x0, skips = x, []
    n_enc = len(order) // 2
    for i in order[:n_enc]:
        x = model.blocks[i](x, x0)
        skips.append(x)
    for k, i in enumerate(order[n_enc:]):
        if skips:
            x = x + model.skip_weights[k] * skips.pop()
        x = model.blocks[i](x, x0)
    logits = F.linear(model.final_norm(x), model.tok_emb.weight)
    return model.logit_softcap * torch.tanh(logits / model.logit_softcap)


def test_looped_forward_matches_a_written_out_loop():
    model, _, _ = build_model(micro_stack(["depth_recurrence"], SIX))
    randomize(model)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(1))
    model.set_layout(LOOPED)
    order = [0, 1, 2, 3, 1, 2, 3, 1, 2, 3, 4, 5]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_logits(ids), reference_looped_logits(model, ids, order), rtol=1e-5, atol=1e-5)


def test_switches_after_the_step_whose_successor_reaches_enable_at():
    model, _, ctx = build_model(micro_stack(["depth_recurrence"], [*SIX, "train.iterations=10"]))
    plugin = ctx.pm.get_plugin("depth_recurrence")
    for step in range(1, 4):  # next progress 0.1, 0.2, 0.3 < 0.35
        plugin.golf_after_optimizer_step(step=step, model=model, optimizer=None, ctx=ctx)
        assert model.active_layout == ""
    plugin.golf_after_optimizer_step(step=4, model=model, optimizer=None, ctx=ctx)  # step index 4 runs at 0.4
    assert model.active_layout == LOOPED


def test_train_end_leaves_the_model_looped_and_enable_at_zero_starts_looped():
    model, _, ctx = build_model(micro_stack(["depth_recurrence"], SIX))
    ctx.pm.get_plugin("depth_recurrence").golf_train_end(model=model, ctx=ctx)
    assert model.active_layout == LOOPED
    model, _, _ = build_model(micro_stack(["depth_recurrence"], [*SIX, "techniques.depth_recurrence.enable_at=0.0"]))
    assert model.active_layout == LOOPED


def test_compiled_switch_reuses_the_warmed_graph():
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model, spec, _ = build_model(micro_stack(["depth_recurrence"], SIX))
    compiled = torch.compile(model, backend=counting_backend, fullgraph=True, dynamic=False)
    ids = torch.randint(0, 1024, (2, 16))
    compiled(ids, ids)
    with spec.warmup_variants["depth_recurrence"](model):  # the trainer's warm-up variant
        compiled(ids, ids)
    assert model.active_layout == ""
    warmed = len(graphs)
    assert warmed == 2
    compiled(ids, ids)
    model.set_layout(LOOPED)  # what golf_after_optimizer_step does mid-training
    compiled(ids, ids)
    assert len(graphs) == warmed


def test_bad_parameters():
    with pytest.raises(ValueError, match="num_loops"):
        DepthRecurrence.Params(num_loops=0).validate()
    with pytest.raises(ValueError, match="loop_start"):
        DepthRecurrence.Params(loop_start=4, loop_end=3).validate()
    with pytest.raises(GolfError, match="loop_end=5"):
        build_model(micro_stack(["depth_recurrence"]))  # 2-layer micro model


def test_micro_run_switches_on(tmp_path):
    report = run_micro(tmp_path, enable=["depth_recurrence"], overrides=SIX)
    log = (Path(tmp_path) / "run" / "train.log").read_text()
    assert "depth_recurrence: loop on after step 2 (progress 0.667)" in log
    assert report["steps"] == 3 and report["val_bpb"] < 20
