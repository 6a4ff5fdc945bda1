"""Skip gates: the gated U-Net against a slow reference, the g = 1 limit, routing, micro run."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from golf_core.optim.roles import role_of
from golf_core.testing import build_model, micro_stack, run_micro

FOUR_LAYERS = ["model.num_layers=4"]


def reference_logits(model, ids):
    """The U-Net written out by hand: x <- g * x + (1 - g) * w * skip, g = sigmoid(gamma)."""
    x = F.rms_norm(model.tok_emb(ids), (model.tok_emb.embedding_dim,))
    x0, skips = x, []
    encoder, decoder = model.encoder_indices, model.decoder_indices
    for i in encoder:
        x = model.blocks[i](x, x0)
        skips.append(x)
    for j, i in enumerate(decoder):
        if skips:
            g = torch.sigmoid(model.skip_gates.weight[j])
            x = g * x + (1 - g) * model.skip_weights[j] * skips.pop()
        x = model.blocks[i](x, x0)
    logits = F.linear(model.final_norm(x), model.tok_emb.weight)
    return model.logit_softcap * torch.tanh(logits / model.logit_softcap)


def randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.skip_gates.weight.copy_(torch.randn(model.skip_gates.weight.shape, generator=g))
        model.skip_weights.copy_(torch.rand(model.skip_weights.shape, generator=g) + 0.5)
        for block in model.blocks:
            block.attn.proj.weight.normal_(0, 0.05, generator=g)
            block.mlp.proj.weight.normal_(0, 0.05, generator=g)


def test_matches_slow_reference():
    model, _, _ = build_model(micro_stack(["skip_gates"], FOUR_LAYERS))
    randomize(model)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_logits(ids), reference_logits(model, ids), rtol=1e-5, atol=1e-5)


def test_init_is_the_average_of_stream_and_skip():
    model, _, _ = build_model(micro_stack(["skip_gates"], FOUR_LAYERS))
    assert torch.equal(model.skip_gates.weight, torch.zeros(2, 64))
    x, skip = torch.randn(1, 3, 64), torch.randn(1, 3, 64)
    torch.testing.assert_close(model.skip_gates(x, skip, 0), 0.5 * (x + skip))


def test_saturated_gate_drops_the_skip_exactly():
    # sigmoid(30) == 1 in float32 and lerp(a, b, 1) == b: the same as the core model with zero skip weights.
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(2))
    gated, _, _ = build_model(micro_stack(["skip_gates"], FOUR_LAYERS), seed=4)
    core, _, _ = build_model(micro_stack([], FOUR_LAYERS), seed=4)
    with torch.no_grad():
        gated.skip_gates.weight.fill_(30.0)
        core.skip_weights.zero_()
        for m in (gated, core):
            for block in m.blocks:
                block.attn.proj.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))
        assert torch.equal(gated.forward_logits(ids), core.forward_logits(ids))


def test_gates_get_gradients_and_route_to_adam():
    model, _, _ = build_model(micro_stack(["skip_gates"], FOUR_LAYERS))
    randomize(model)
    ids = torch.randint(0, 1024, (2, 16))
    model(ids, ids).backward()
    assert model.skip_gates.weight.grad.abs().sum() > 0
    assert role_of("skip_gates.weight", model.skip_gates.weight) == "scalar"


def test_micro_run(tmp_path):
    report = run_micro(tmp_path, enable=["skip_gates"], overrides=FOUR_LAYERS)
    assert report["steps"] == 3 and report["val_bpb"] < 20
