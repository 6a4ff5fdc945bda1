"""lzma_compress: bit-exact round trip, its own tag only, and a micro run that reloads through it."""

from __future__ import annotations

import lzma

from golf_core.quant.artifact import pack_state, split_tag
from golf_core.quant.fixtures import example_state, reload_and_score
from golf_core.testing import make_ctx, micro_stack, run_micro


def _ctx(overrides=()):
    return make_ctx(micro_stack(enable=["lzma_compress"], overrides=list(overrides)))


def test_round_trip_is_bit_exact_and_is_plain_xz_of_the_container():
    ctx = _ctx()
    state = example_state()
    blob = ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx)
    tag, body = split_tag(blob)
    assert tag == "lzma"
    assert lzma.decompress(body) == pack_state(state)  # an independent decoder reads it
    assert ctx.pm.hook.golf_deserialize(blob=blob, ctx=ctx).same_as(state)


def test_extreme_preset_round_trips_and_other_tags_fall_through():
    ctx = _ctx(["techniques.lzma_compress.preset=6", "techniques.lzma_compress.extreme=true"])
    state = example_state(seed=1)
    blob = ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx)
    assert ctx.pm.hook.golf_deserialize(blob=blob, ctx=ctx).same_as(state)
    plugin = [p for p in ctx.pm.get_plugins() if getattr(p, "name", "") == "lzma_compress"][0]
    assert plugin.golf_deserialize(b"GOLF:brotli\n" + b"\x00" * 8, ctx) is None


def test_micro_run_with_lzma(tmp_path):
    report = run_micro(tmp_path, enable=["lzma_compress"])
    blob = (tmp_path / "run" / "model.golf").read_bytes()
    assert blob.startswith(b"GOLF:lzma\n") and len(blob) == report["artifact"]["model_bytes"]
    reloaded = reload_and_score(micro_stack(enable=["lzma_compress"]), tmp_path / "run")
    assert reloaded.val_bpb == report["post_quant"]["val_bpb"]
