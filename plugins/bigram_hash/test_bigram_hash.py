"""BigramHash: hash against a hand computation, BOS masking, identity at init, no cross-document leak."""

from __future__ import annotations

import pytest
import torch

from golf_core.optim.roles import role_of
from golf_core.stack import StackError
from golf_core.testing import (
    assert_core_init_untouched,
    build_model,
    micro_stack,
    randomize_shared_parameters,
    run_micro,
)
from plugins.bigram_hash.module import BigramHashEmbedding

BOS = 1


def ids_with_docs(seed=0, batch=2, seq=24):
    ids = torch.randint(2, 1024, (batch, seq), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS
    ids[:, 9] = BOS  # documents [0, 9), [9, 17), [17, 24)
    ids[:, 17] = BOS
    return ids


def reference_buckets(ids, m, trigram=False):
    """Python-int loop: pair and (optionally) triple buckets, reserved bucket m-1 where the window leaves the document."""
    rows = []
    for row in ids.tolist():
        pair, triple = [], []
        for t, cur in enumerate(row):
            pair.append(m - 1 if t == 0 or cur == BOS else ((36313 * cur) ^ (27191 * row[t - 1])) % (m - 1))
            crosses = t < 2 or cur == BOS or row[t - 1] == BOS
            triple.append(m - 1 if crosses else ((36313 * cur) ^ (27191 * row[t - 1]) ^ (51497 * row[t - 2])) % (m - 1))
        rows.append((pair, triple))
    pair = torch.tensor([r[0] for r in rows])
    return (pair, torch.tensor([r[1] for r in rows])) if trigram else pair


def test_hash_matches_hand_computation():
    # Hand-worked: (36313*5) ^ (27191*7) = 181565 ^ 190337 = 8892; 8892 % 3071 = 2750.
    module = BigramHashEmbedding(3072, 8, 16, num_layers=2)
    assert module.bucket_ids(torch.tensor([[7, 5]])).tolist() == [[3071, 2750]]
    ids = ids_with_docs()
    assert torch.equal(module.bucket_ids(ids), reference_buckets(ids, 3072))
    tri = BigramHashEmbedding(3072, 8, 16, num_layers=2, trigram=True)
    pair, triple = tri.bucket_ids(ids)
    ref_pair, ref_triple = reference_buckets(ids, 3072, trigram=True)
    assert torch.equal(pair, ref_pair) and torch.equal(triple, ref_triple)


def test_large_vocabularies_do_not_overflow():
    module = BigramHashEmbedding(3072, 8, 16, num_layers=2)
    big = torch.tensor([[65535, 65534]])
    assert module.bucket_ids(big).tolist() == [[3071, ((36313 * 65534) ^ (27191 * 65535)) % 3071]]


def test_forward_matches_reference():
    module = BigramHashEmbedding(64, 8, 16, num_layers=2)
    with torch.no_grad():
        module.bigram_embed.weight.normal_(generator=torch.Generator().manual_seed(0))
    ids = ids_with_docs(seq=24)
    x = torch.randn(2, 24, 16)
    expected = x + 0.05 * (module.bigram_embed.weight[reference_buckets(ids, 64)] @ module.bigram_proj.weight.T)
    torch.testing.assert_close(module(x, ids), expected, rtol=1e-5, atol=1e-6)


def test_zero_table_at_init_equals_core_model_bit_for_bit():
    core, _, _ = build_model(micro_stack(), seed=0)
    hashed, _, _ = build_model(micro_stack(enable=["bigram_hash"]), seed=0)
    assert_core_init_untouched(core, hashed)
    bigram = hashed.embed_transforms[0]
    assert not bigram.bigram_embed.weight.any() and bigram.bigram_proj.weight.any()
    # Orthogonal [64, 112] (orthonormal rows) scaled by 1/sqrt(2L), L = 2: W W^T = I / 4.
    w = bigram.bigram_proj.weight.double()
    torch.testing.assert_close(w @ w.T, torch.eye(64, dtype=torch.float64) / 4, rtol=0, atol=1e-6)
    randomize_shared_parameters(core, hashed)
    ids = ids_with_docs()
    assert torch.equal(core.forward_logits(ids), hashed.forward_logits(ids))


def test_no_prediction_of_the_next_document_changes_when_a_document_is_edited():
    model, _, _ = build_model(micro_stack(enable=["bigram_hash"]), seed=0)
    randomize_shared_parameters(model)
    with torch.no_grad():
        model.embed_transforms[0].bigram_embed.weight.normal_()
        # The core attention is not document-isolated; silence it so the bigram is the only
        # cross-position channel left.
        for block in model.blocks:
            block.attn.proj.weight.zero_()
    ids = ids_with_docs()
    edited = ids.clone()
    edited[:, 1:9] = (edited[:, 1:9] * 5 + 3) % 1022 + 2  # all of document 1, BOS kept
    base, out = model.forward_logits(ids), model.forward_logits(edited)
    assert torch.equal(out[:, 9:], base[:, 9:])
    # Control: inside a document the previous token does reach the next position.
    inner = ids.clone()
    inner[:, 12] = (inner[:, 12] + 1) % 1022 + 2
    moved = model.forward_logits(inner)
    assert not torch.equal(moved[:, 13], base[:, 13]) and torch.equal(moved[:, 14:], base[:, 14:])


def test_parameter_names_and_roles():
    model, _, _ = build_model(micro_stack(enable=["bigram_hash"]), seed=0)
    roles = {n: role_of(n, p) for n, p in model.named_parameters() if n.startswith("embed_transforms.")}
    assert roles == {
        "embed_transforms.0.bigram_embed.weight": "embed",
        "embed_transforms.0.bigram_proj.weight": "matrix",
        "embed_transforms.0.bigram_scale": "scalar",
    }


def test_invalid_sizes_are_refused():
    with pytest.raises(StackError, match="buckets"):
        micro_stack(enable=["bigram_hash"], overrides=["techniques.bigram_hash.buckets=1"])


def test_trains_end_to_end(tmp_path):
    # The trigram path runs the pair path too.
    report = run_micro(tmp_path, enable=["bigram_hash"], overrides=["techniques.bigram_hash.trigram=true"])
    assert report["steps"] == 3 and report["val_bpb"] < 20
