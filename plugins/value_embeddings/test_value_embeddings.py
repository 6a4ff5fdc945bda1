"""Value embeddings: added to the values of exactly the chosen layers, identity at scale 0, causal, names and roles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf_core.errors import GolfError
from golf_core.optim.roles import role_of
from golf_core.stack import StackError
from golf_core.testing import (
    assert_core_init_untouched,
    build_model,
    micro_stack,
    randomize_shared_parameters,
    run_micro,
)
from plugins.value_embeddings.module import ValueEmbeddingLayer, ValueEmbeddingSource


def ve_model(layers="[1]", seed=0):
    model, spec, _ = build_model(
        micro_stack(enable=["value_embeddings"], overrides=[f"techniques.value_embeddings.layers={layers}"]), seed=seed
    )
    return model, spec


def reference_attention_values(model, block_index, ids):
    """The values the chosen block's attention should use, computed by hand from the tables."""
    captured = {}
    attn = model.blocks[block_index].attn
    handle = attn.register_forward_hook(lambda m, args, out: captured.__setitem__("x", args[0]))
    model.forward_logits(ids)
    handle.remove()
    source = model.embed_transforms[0]
    scale = attn.value_transforms[0].ve_layer_scale.detach() if len(attn.value_transforms) else 0.0
    table = source.ve_embed.weight[ids] @ source.ve_proj.weight.T * source.ve_scale * scale
    v = attn.c_v(captured["x"]) + table
    return captured["x"], v.reshape(*ids.shape, attn.num_kv_heads, attn.head_dim)


def test_values_of_the_chosen_layer_get_the_scaled_projected_embedding():
    model, _ = ve_model("[1]")
    assert [len(b.attn.value_transforms) for b in model.blocks] == [0, 1]
    with torch.no_grad():
        model.blocks[1].attn.value_transforms[0].ve_layer_scale.fill_(0.7)
    ids = torch.randint(0, 1024, (2, 12), generator=torch.Generator().manual_seed(0))
    x, expected = reference_attention_values(model, 1, ids)
    layer = model.blocks[1].attn.value_transforms[0]
    v = model.blocks[1].attn.c_v(x).reshape(2, 12, 2, 16)
    model.embed_transforms[0](None, ids)  # records the ids, as the embedding stage does
    torch.testing.assert_close(layer(v, x), expected, rtol=1e-5, atol=1e-6)


def test_scale_zero_is_the_core_model_bit_for_bit_and_core_init_is_untouched():
    core, _, _ = build_model(micro_stack(), seed=0)
    model, _ = ve_model("[0, -1]")
    assert_core_init_untouched(core, model)
    randomize_shared_parameters(core, model)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.embed_transforms[0].ve_scale.zero_()
    assert torch.equal(core.forward_logits(ids), model.forward_logits(ids))
    with torch.no_grad():
        model.embed_transforms[0].ve_scale.fill_(0.1)
    assert not torch.equal(core.forward_logits(ids), model.forward_logits(ids))


def test_only_the_chosen_layers_change():
    """Layer 1 gets the embedding, layer 0 does not: block 0's output equals the core's."""
    core, _, _ = build_model(micro_stack(), seed=0)
    model, _ = ve_model("[1]")
    randomize_shared_parameters(core, model)
    outs = {}
    for tag, m in (("core", core), ("ve", model)):
        for i, block in enumerate(m.blocks):
            block.register_forward_hook(lambda mod, args, out, tag=tag, i=i: outs.__setitem__((tag, i), out))
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(1))
    core.forward_logits(ids)
    model.forward_logits(ids)
    assert torch.equal(outs[("core", 0)], outs[("ve", 0)])
    assert not torch.equal(outs[("core", 1)], outs[("ve", 1)])


def test_causal_a_later_token_never_changes_earlier_logits():
    model, _ = ve_model("[0, 1]")
    randomize_shared_parameters(model)
    ids = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(2))
    base = model.forward_logits(ids)
    edited = ids.clone()
    edited[:, 10] = (edited[:, 10] + 1) % 1024
    out = model.forward_logits(edited)
    torch.testing.assert_close(out[:, :10], base[:, :10], rtol=0, atol=1e-6)
    assert not torch.allclose(out[:, 10], base[:, 10])


def test_parameter_names_roles_and_inits():
    model, spec = ve_model("[0, 1]")
    roles = {n: role_of(n, p) for n, p in model.named_parameters() if "ve_" in n}
    assert roles == {
        "blocks.0.attn.value_transforms.0.ve_layer_scale": "scalar",
        "blocks.1.attn.value_transforms.0.ve_layer_scale": "scalar",
        "embed_transforms.0.ve_embed.weight": "embed",
        "embed_transforms.0.ve_proj.weight": "matrix",
        "embed_transforms.0.ve_scale": "scalar",
    }
    source = model.embed_transforms[0]
    assert isinstance(source, ValueEmbeddingSource)
    # Every layer reads the one registered table.
    assert all(layer._source[0] is source for layer in model.modules() if isinstance(layer, ValueEmbeddingLayer))
    assert source.ve_embed.weight.shape == (1024, 128) and 0.009 < source.ve_embed.weight.std() < 0.011
    w = source.ve_proj.weight.double()  # [kv_dim = 32, 128]: orthonormal rows scaled by 1/sqrt(2L) = 1/2
    torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64) / 4, rtol=0, atol=1e-6)
    assert float(source.ve_scale.detach()) == pytest.approx(0.1)


def test_two_models_from_one_spec_get_their_own_tables():
    from golf_core.model.gpt import GPT

    torch.manual_seed(0)
    _, spec = ve_model("[1]")
    a, b = GPT(spec), GPT(spec)
    assert a.embed_transforms[0] is not b.embed_transforms[0]
    assert b.blocks[1].attn.value_transforms[0]._source[0] is b.embed_transforms[0]


def test_bad_layers_are_refused():
    with pytest.raises(GolfError, match="techniques.value_embeddings.layers"):
        ve_model("[2]")
    with pytest.raises(GolfError, match="twice"):
        ve_model("[1, -1]")
    with pytest.raises(StackError, match="layers is empty"):
        micro_stack(enable=["value_embeddings"], overrides=["techniques.value_embeddings.layers=[]"])


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["value_embeddings"], overrides=["techniques.value_embeddings.layers=[-1]"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
