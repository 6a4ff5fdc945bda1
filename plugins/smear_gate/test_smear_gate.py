"""SmearGate: reference math, identity at lambda=0, BOS row, causality, no cross-document leak."""

from __future__ import annotations

import pytest
import torch

from golf_core.errors import GolfError
from golf_core.model.gpt import is_control_tensor
from golf_core.optim.roles import role_of
from golf_core.testing import (
    assert_core_init_untouched,
    build_model,
    micro_stack,
    randomize_shared_parameters,
    run_micro,
)
from plugins.smear_gate.module import SmearGateModule

BOS = 1


def reference_smear(x, ids, weight, lam, window, mask_bos):
    """Slow per-position loop of e'_t = e_t + lam * sigmoid(W e_t[:window]) * e_{t-1} [* 1(ids_t != BOS)]."""
    out = x.clone()
    for b in range(x.size(0)):
        for t in range(1, x.size(1)):
            if mask_bos and int(ids[b, t]) == BOS:
                continue
            gate = lam * torch.sigmoid(torch.dot(weight, x[b, t, :window]))
            out[b, t] = x[b, t] + gate * x[b, t - 1]
    return out


def randomized(module: SmearGateModule, seed: int = 0) -> SmearGateModule:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.smear_gate.weight.copy_(torch.randn(module.smear_gate.weight.shape, generator=g))
        module.smear_lambda.fill_(0.7)
    return module


def ids_with_docs(seed: int = 0, batch: int = 2, seq: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 1024, (batch, seq), generator=g)
    ids[:, 0] = BOS
    ids[:, 9] = BOS  # document 1 = [0, 9), document 2 = [9, 17), document 3 = [17, 24)
    ids[:, 17] = BOS
    return ids


@pytest.mark.parametrize("mask_bos", [True, False])
def test_matches_slow_reference(mask_bos):
    module = randomized(SmearGateModule(window=12, mask_bos=mask_bos))
    ids = ids_with_docs()
    x = torch.randn(2, 24, 32, generator=torch.Generator().manual_seed(1))
    expected = reference_smear(x, ids, module.smear_gate.weight[0], 0.7, 12, mask_bos)
    torch.testing.assert_close(module(x, ids), expected, rtol=1e-6, atol=1e-6)


def test_lambda_zero_is_identity_for_any_gate_weight():
    module = randomized(SmearGateModule(window=12))
    with torch.no_grad():
        module.smear_lambda.zero_()
    x = torch.randn(2, 24, 32)
    assert torch.equal(module(x, ids_with_docs()), x)


def test_bos_rows_unchanged_for_any_gate_and_unmasked_form_changes_them():
    ids = ids_with_docs()
    x = torch.randn(2, 24, 32)
    masked = randomized(SmearGateModule(window=12, mask_bos=True))(x, ids)
    unmasked = randomized(SmearGateModule(window=12, mask_bos=False))(x, ids)
    bos = ids == BOS
    assert torch.equal(masked[bos], x[bos])
    # The original PR #1667 form smears the previous document into the BOS row (positions 9, 17).
    assert not torch.equal(unmasked[:, 9], x[:, 9]) and not torch.equal(unmasked[:, 17], x[:, 17])
    assert torch.equal(masked[~bos], unmasked[~bos])


def test_causal_changing_a_later_token_never_changes_earlier_rows():
    module = randomized(SmearGateModule(window=12))
    table = torch.randn(1024, 32, generator=torch.Generator().manual_seed(2))
    ids = ids_with_docs()
    base = module(table[ids], ids)
    for t in (3, 12, 23):
        edited = ids.clone()
        edited[:, t] = (edited[:, t] + 7) % 1024
        out = module(table[edited], edited)
        assert torch.equal(out[:, :t], base[:, :t])
        assert not torch.equal(out[:, t], base[:, t])


def test_identity_setting_equals_core_model_bit_for_bit():
    core, _, _ = build_model(micro_stack(), seed=0)
    smeared, _, _ = build_model(micro_stack(enable=["smear_gate"]), seed=0)
    # The module draws from a private RNG stream: every core parameter is initialised identically.
    assert_core_init_untouched(core, smeared)
    assert len(list(smeared.parameters())) > len(list(core.parameters()))
    randomize_shared_parameters(core, smeared)
    gate = smeared.embed_transforms[0]
    with torch.no_grad():
        gate.smear_gate.weight.normal_()  # any W: lambda = 0 alone is the identity
        gate.smear_lambda.zero_()
    ids = ids_with_docs()
    assert torch.equal(core.forward_logits(ids), smeared.forward_logits(ids))
    with torch.no_grad():
        gate.smear_lambda.fill_(0.5)
    assert not torch.equal(core.forward_logits(ids), smeared.forward_logits(ids))


@pytest.mark.parametrize("mask_bos", [True, False])
def test_no_prediction_of_the_next_document_changes_when_a_document_is_edited(mask_bos):
    model, _, _ = build_model(micro_stack(enable=["smear_gate"], overrides=[f"techniques.smear_gate.mask_bos={str(mask_bos).lower()}"]), seed=0)
    randomize_shared_parameters(model)
    randomized(model.embed_transforms[0])
    with torch.no_grad():
        # The core attention is not document-isolated (that is the attention's job, not this
        # technique's): silence it so the only cross-position channel left is the SmearGate.
        for block in model.blocks:
            block.attn.proj.weight.zero_()
    ids = ids_with_docs()
    edited = ids.clone()
    edited[:, 1:9] = (edited[:, 1:9] * 5 + 3) % 1022 + 2  # rewrite all of document 1, BOS kept
    base, out = model.forward_logits(ids), model.forward_logits(edited)
    assert not torch.equal(out[:, :9], base[:, :9])
    if mask_bos:
        assert torch.equal(out[:, 9:], base[:, 9:])
    else:  # control: the unmasked form leaks the last token of document 1 into document 2's BOS
        assert not torch.equal(out[:, 9], base[:, 9])
        assert torch.equal(out[:, 10:], base[:, 10:])


def test_parameter_names_and_roles():
    model, _, _ = build_model(micro_stack(enable=["smear_gate"]), seed=0)
    added = {n: p for n, p in model.named_parameters() if n.startswith("embed_transforms.")}
    assert set(added) == {"embed_transforms.0.smear_gate.weight", "embed_transforms.0.smear_lambda"}
    assert all(role_of(n, p) == "scalar" and is_control_tensor(n) for n, p in added.items())


def test_window_wider_than_model_is_refused():
    with pytest.raises(GolfError, match="techniques.smear_gate.window"):
        build_model(micro_stack(enable=["smear_gate"], overrides=["techniques.smear_gate.window=65"]), seed=0)


def test_trains_end_to_end(tmp_path):
    report = run_micro(tmp_path, enable=["smear_gate"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
