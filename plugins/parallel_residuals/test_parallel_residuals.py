"""Parallel residuals: section-J lane invariants, each form against a written-out reference, identity, layout check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf_core.errors import GolfError
from golf_core.testing import build_model, micro_stack, run_micro
from plugins.parallel_residuals import ParallelResiduals

SIX = ["model.num_layers=6", "techniques.parallel_residuals.start_layer=4"]


def stack(*overrides):
    return micro_stack(["parallel_residuals"], [*SIX, *overrides])


def attn_update(block, h):
    """attn_scale * Attn(RMSNorm(h)), from the raw sublayer modules."""
    return block.attn_scale * block.attn(F.rms_norm(h, (h.size(-1),)))


def mlp_update(block, h):
    return block.mlp_scale * block.mlp(F.rms_norm(h, (h.size(-1),)))


def mixed(block, x, x0):
    return block.resid_mix[0] * x + block.resid_mix[1] * x0


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.skip_weights.copy_(torch.rand(model.skip_weights.shape, generator=g) + 0.5)
        for block in model.blocks:
            block.attn.proj.weight.normal_(0, 0.05, generator=g)
            block.mlp.proj.weight.normal_(0, 0.05, generator=g)
            block.resid_mix[1].uniform_(-0.5, 0.5, generator=g)
        for p in model.lanes.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def logits_from(model, h):
    logits = F.linear(model.final_norm(h), model.tok_emb.weight)
    return model.logit_softcap * torch.tanh(logits / model.logit_softcap)


def embed(model, ids):
    x = F.rms_norm(model.tok_emb(ids), (model.tok_emb.embedding_dim,))
    return x, x


IDS = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(3))


# ---- section J: the two-lane update -------------------------------------------------------------


def test_identity_lambdas_keep_attention_and_mlp_in_their_own_lanes():
    model, _, _ = build_model(stack())
    randomize(model)
    lanes, block, i = model.lanes, model.blocks[5], 5
    with torch.no_grad():
        lanes.parallel_resid_lambdas.fill_(1.0)
        lanes.parallel_post_lambdas.copy_(torch.eye(2).expand(6, 2, 2))
        g = torch.Generator().manual_seed(1)
        lane0, lane1, x0 = (torch.randn(2, 8, 64, generator=g) for _ in range(3))
        a = attn_update(block, mixed(block, lane0, x0))
        f = mlp_update(block, lane1)
        new0, new1 = lanes(block, i, (lane0, lane1), x0, None, None, None)
        torch.testing.assert_close(new0, lane0 + a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new1, lane1 + f, rtol=1e-5, atol=1e-6)
        lanes.parallel_post_lambdas.fill_(1.0)
        new0, new1 = lanes(block, i, (lane0, lane1), x0, None, None, None)
        torch.testing.assert_close(new0, lane0 + a + f, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new1, lane1 + a + f, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lanes.readout((new0, new1)), 0.5 * (new0 + new1))


def test_two_lane_model_matches_written_out_reference():
    model, _, _ = build_model(stack())
    randomize(model)
    lam, post = model.lanes.parallel_resid_lambdas, model.lanes.parallel_post_lambdas
    with torch.no_grad():
        x, x0 = embed(model, IDS)
        skips = []
        for i in (0, 1, 2):
            x = model.blocks[i](x, x0)
            skips.append(x)
        lane0 = lane1 = None
        for k, i in enumerate((3, 4, 5)):
            b = model.blocks[i]
            if i < 4:
                x = x + model.skip_weights[k] * skips.pop()
                x = b(x, x0)
                continue
            if lane0 is None:
                lane0 = lane1 = x
            lane0 = lane0 + model.skip_weights[k] * skips.pop()  # the skip enters lane 0 only
            a, f = attn_update(b, mixed(b, lane0, x0)), mlp_update(b, lane1)
            lane0, lane1 = (lam[i, 0] * lane0 + post[i, 0, 0] * a + post[i, 1, 0] * f,
                            lam[i, 1] * lane1 + post[i, 0, 1] * a + post[i, 1, 1] * f)
        expected = logits_from(model, 0.5 * (lane0 + lane1))
        torch.testing.assert_close(model.forward_logits(IDS), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("final_lane", ["attn", "mlp"])
def test_single_lane_readouts(final_lane):
    model, _, _ = build_model(stack(f"techniques.parallel_residuals.final_lane='{final_lane}'"))
    lane0, lane1 = torch.randn(1, 2, 64), torch.randn(1, 2, 64)
    assert model.lanes.readout((lane0, lane1)) is (lane0 if final_lane == "attn" else lane1)


# ---- the older forms -----------------------------------------------------------------------------


def test_sequential_form_pr1204():
    model, _, _ = build_model(stack("techniques.parallel_residuals.form='sequential'", "techniques.parallel_residuals.start_layer=2"))
    assert torch.allclose(model.lanes.parallel_resid_lambdas, torch.full((6, 2), 1.1**0.5))
    randomize(model)
    lam, post = model.lanes.parallel_resid_lambdas, model.lanes.parallel_post_lambdas

    def block_pair(i, lane0, lane1, x0):
        b = model.blocks[i]
        a = attn_update(b, mixed(b, lane0, x0))
        lane0, lane1 = lam[i, 0] * lane0 + post[i, 0, 0] * a, lam[i, 0] * lane1 + post[i, 0, 1] * a
        f = mlp_update(b, mixed(b, lane1, x0))
        return lam[i, 1] * lane0 + post[i, 1, 0] * f, lam[i, 1] * lane1 + post[i, 1, 1] * f

    with torch.no_grad():
        x, x0 = embed(model, IDS)
        x = model.blocks[0](x, x0)
        skips = [x]
        x = model.blocks[1](x, x0)
        skips.append(x)
        lanes = block_pair(2, x, x, x0)  # encoder position 2 is already parallel: a lane pair is pushed
        skips.append(lanes)
        for k, i in enumerate((3, 4, 5)):
            s = skips.pop()
            s0, s1 = s if isinstance(s, tuple) else (s, s)
            w = model.skip_weights[k]
            lanes = block_pair(i, lanes[0] + w * s0, lanes[1] + w * s1, x0)
        expected = logits_from(model, 0.5 * (lanes[0] + lanes[1]))
        torch.testing.assert_close(model.forward_logits(IDS), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("late_skips", ["lane0", "drop"])
def test_isolated_form_pr1334_1477(late_skips):
    model, _, _ = build_model(stack("techniques.parallel_residuals.form='isolated'", f"techniques.parallel_residuals.late_skips='{late_skips}'",
                                    "techniques.parallel_residuals.start_layer=3"))
    assert float(model.lanes.lane_merge.detach()) == 0.5
    randomize(model)
    with torch.no_grad():
        x, x0 = embed(model, IDS)
        skips = []
        for i in (0, 1, 2):
            x = model.blocks[i](x, x0)
            skips.append(x)
        x = x + model.skip_weights[0] * skips.pop()  # before the split: into both lanes
        lane0 = lane1 = x
        for k, i in enumerate((3, 4, 5)):
            if k > 0 and late_skips == "lane0":
                lane0 = lane0 + model.skip_weights[k] * skips.pop()
            b = model.blocks[i]
            x_in = mixed(b, lane0, x0)
            lane0 = x_in + attn_update(b, x_in)
            lane1 = lane1 + mlp_update(b, lane1)
        m = model.lanes.lane_merge
        expected = logits_from(model, m * lane0 + (1 - m) * lane1)
        torch.testing.assert_close(model.forward_logits(IDS), expected, rtol=1e-5, atol=1e-5)


def test_gptj_form_pr1493_includes_encoder_blocks():
    model, _, _ = build_model(stack("techniques.parallel_residuals.form='gptj'", "techniques.parallel_residuals.start_layer=2"))
    assert list(model.lanes.parameters()) == []
    randomize(model)

    def parallel(i, x, x0):
        b = model.blocks[i]
        x_in = mixed(b, x, x0)
        return x_in + attn_update(b, x_in) + mlp_update(b, x_in)

    with torch.no_grad():
        x, x0 = embed(model, IDS)
        skips = []
        for i in (0, 1, 2):
            x = model.blocks[i](x, x0) if i < 2 else parallel(i, x, x0)
            skips.append(x)
        for k, i in enumerate((3, 4, 5)):
            x = parallel(i, x + model.skip_weights[k] * skips.pop(), x0)
        torch.testing.assert_close(model.forward_logits(IDS), logits_from(model, x), rtol=1e-5, atol=1e-5)


# ---- identity, validation, training ---------------------------------------------------------------


def test_start_beyond_the_last_layer_is_the_core_model_bit_for_bit():
    core, _, _ = build_model(micro_stack([], ["model.num_layers=6"]), seed=9)
    off, _, _ = build_model(stack("techniques.parallel_residuals.start_layer=6"), seed=9)
    assert off.lanes is None
    assert core.state_dict().keys() == off.state_dict().keys()
    with torch.no_grad():
        for m in (core, off):
            for block in m.blocks:
                block.mlp.proj.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
        assert torch.equal(core.forward_logits(IDS), off.forward_logits(IDS))
        assert torch.equal(core(IDS, IDS), off(IDS, IDS))


def test_a_split_stream_may_not_reach_an_unclaimed_block():
    # The looped decoder of depth recurrence [3, 1, 2, 3, 4, 5] returns to layers below start 3.
    looped = ["techniques.depth_recurrence.loop_start=1", "techniques.depth_recurrence.loop_end=3"]
    with pytest.raises(GolfError, match="split the stream at block 3"):
        build_model(micro_stack(["depth_recurrence", "parallel_residuals"], [*SIX, *looped, "techniques.parallel_residuals.start_layer=3"]))
    # The single-stream form has nothing to split, so the same layout is fine.
    build_model(micro_stack(["depth_recurrence", "parallel_residuals"],
                            [*SIX, *looped, "techniques.parallel_residuals.start_layer=3", "techniques.parallel_residuals.form='gptj'"]))


def test_params_validation():
    with pytest.raises(ValueError, match="final_lane"):
        ParallelResiduals.Params(form="gptj", final_lane="attn").validate()
    with pytest.raises(ValueError, match="late_skips"):
        ParallelResiduals.Params(late_skips="drop").validate()
    with pytest.raises(ValueError, match="start_layer"):
        ParallelResiduals.Params(start_layer=-1).validate()


def test_lambdas_train_and_are_control_tensors():
    model, _, _ = build_model(stack())
    model(IDS, IDS).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("lanes.")}
    assert set(grads) == {"lanes.parallel_post_lambdas", "lanes.parallel_resid_lambdas"}
    assert grads["lanes.parallel_resid_lambdas"][4:].abs().sum() > 0
    assert grads["lanes.parallel_resid_lambdas"][:4].abs().sum() == 0  # layers below start are not parallel


def test_micro_run(tmp_path):
    report = run_micro(tmp_path, enable=["parallel_residuals"], overrides=SIX)
    assert report["steps"] == 3 and report["val_bpb"] < 20
