"""pergroup_compress: similarity sort against a slow reference, bit-exact round trips, lrzip handling, a micro run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golf_core.errors import GolfError
from golf_core.quant.artifact import split_tag
from golf_core.quant.fixtures import example_state, reload_and_score
from golf_core.testing import make_ctx, micro_stack, run_micro
from plugins.pergroup_compress import pergroup
from plugins.pergroup_compress.pergroup import Codec, group_key, similarity_order, unpack_streams

SMALL = "techniques.pergroup_compress.min_group_numel=1000"


def _reference_order(m: np.ndarray) -> list[int]:
    """The record's greedy walk, written plainly: from row 0, always the nearest (L1) unused row."""
    n = m.shape[0]
    order, used = [0], {0}
    for _ in range(n - 1):
        cur = m[order[-1]].astype(np.int64)
        best = min((i for i in range(n) if i not in used), key=lambda i: (int(np.abs(m[i].astype(np.int64) - cur).sum()), i))
        order.append(best)
        used.add(best)
    return order


@pytest.mark.parametrize("compact_every", [1024, 3])
def test_similarity_order_matches_the_greedy_reference(compact_every):
    g = torch.Generator().manual_seed(0)
    m = torch.randint(-31, 32, (40, 16), generator=g, dtype=torch.int8)
    order = similarity_order(m, compact_every=compact_every)
    assert sorted(order.tolist()) == list(range(40))
    assert order.tolist() == _reference_order(m.numpy())


def test_group_key_folds_layer_indices():
    assert group_key("blocks.10.attn.c_q.weight") == "blocks.attn.c_q.weight"
    assert group_key("tok_emb.weight") == "tok_emb.weight"
    assert group_key("blocks.2.attn.proj.weight") == group_key("blocks.7.attn.proj.weight")


def _ctx(*overrides):
    return make_ctx(micro_stack(enable=["pergroup_compress"], overrides=[SMALL, *overrides]))


def test_brotli_back_end_round_trip_is_bit_exact_and_groups_by_role():
    ctx = _ctx("techniques.pergroup_compress.backend='brotli'")
    state = example_state(seed=4)
    blob = ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx)
    tag, body = split_tag(blob)
    assert tag == "pergroup"
    streams = unpack_streams(body)
    # manifest, remainder, permutations, then tok_emb, blocks.mlp.fc, blocks.attn.c_q groups
    assert len(streams) == 6 and all(codec == pergroup.CODEC_BROTLI for codec, _ in streams)
    assert ctx.pm.hook.golf_deserialize(blob=blob, ctx=ctx).same_as(state)


@pytest.mark.parametrize("transpose", [True, False])
def test_round_trip_without_sorting_or_transposing(transpose):
    ctx = _ctx("techniques.pergroup_compress.backend='brotli'", "techniques.pergroup_compress.simsort=[]",
               f"techniques.pergroup_compress.transpose={str(transpose).lower()}")
    state = example_state(seed=5)
    assert ctx.pm.hook.golf_deserialize(blob=ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx), ctx=ctx).same_as(state)


def test_similarity_sort_makes_the_grouped_stream_smaller():
    # Rows drawn from a few prototypes with sparse edits, shuffled: sorting brings look-alikes
    # together, so every column of the transposed matrix becomes long runs.
    g = torch.Generator().manual_seed(6)
    state = example_state(seed=6, layers=4, dim=64, hidden=256)
    protos = torch.randint(-31, 32, (8, 64), generator=g, dtype=torch.int8)
    for i in range(4):
        rows = protos[torch.randint(0, 8, (256,), generator=g)].clone()
        edits = torch.rand(256, 64, generator=g) < 0.03
        rows[edits] = torch.randint(-31, 32, (int(edits.sum()),), generator=g, dtype=torch.int8)
        state.entries[f"blocks.{i}.mlp.fc.weight"].tensors["q"] = rows
    sizes = {}
    for sort in (True, False):
        simsort = '["mlp.fc.weight"]' if sort else "[]"
        ctx = _ctx("techniques.pergroup_compress.backend='brotli'", f"techniques.pergroup_compress.simsort={simsort}")
        blob = ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx)
        sizes[sort] = sum(len(data) for _, data in unpack_streams(split_tag(blob)[1])[2:])  # perms + groups
    assert sizes[True] < sizes[False]


@pytest.mark.skipif(not pergroup.lrzip_available(), reason="the lrzip program is not installed")
def test_lrzip_back_end_round_trip_is_bit_exact():
    ctx = _ctx("techniques.pergroup_compress.backend='lrzip'")
    state = example_state(seed=7)
    blob = ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx)
    assert any(codec == pergroup.CODEC_LRZIP for codec, _ in unpack_streams(split_tag(blob)[1]))
    assert ctx.pm.hook.golf_deserialize(blob=blob, ctx=ctx).same_as(state)


def test_missing_lrzip_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pergroup.shutil, "which", lambda name: None)
    ctx = _ctx("techniques.pergroup_compress.backend='lrzip'")
    with pytest.raises(GolfError, match=r"Debian package `lrzip`.*backend = 'brotli'"):
        ctx.pm.hook.golf_configure(ctx=ctx)
    auto = _ctx()
    auto.pm.hook.golf_configure(ctx=auto)  # auto falls back to brotli
    blob = auto.pm.hook.golf_serialize(qstate=example_state(), ctx=auto)
    assert all(codec != pergroup.CODEC_LRZIP for codec, _ in unpack_streams(split_tag(blob)[1]))
    # An artifact whose streams need lrzip cannot be read without it, and says why.
    fake = pergroup.pack_streams([(pergroup.CODEC_LRZIP, b"xx")])
    with pytest.raises(GolfError, match="Debian package `lrzip`"):
        pergroup.decompress(*unpack_streams(fake)[0])


def test_codec_leaves_empty_streams_empty():
    assert Codec("brotli").compress(b"") == (pergroup.CODEC_EMPTY, b"")


def test_micro_run_with_pergroup(tmp_path):
    # backend auto: lrzip where the program is installed, brotli elsewhere.
    overrides = ["techniques.gptq.passthrough_max_numel=1024", "techniques.gptq.calibration_batches=2",
                 "techniques.pergroup_compress.min_group_numel=1024"]
    report = run_micro(tmp_path, enable=["gptq", "pergroup_compress"], overrides=overrides)
    assert (tmp_path / "run" / "model.golf").read_bytes().startswith(b"GOLF:pergroup\n")
    reloaded = reload_and_score(micro_stack(enable=["gptq", "pergroup_compress"], overrides=overrides), tmp_path / "run")
    assert reloaded.val_bpb == report["post_quant"]["val_bpb"]
    assert "pergroup_compress: back end" in (tmp_path / "run" / "train.log").read_text()
