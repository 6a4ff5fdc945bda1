"""byteshuffle_brotli: the shuffle by hand, bit-exact round trips in both modes, a micro run."""

from __future__ import annotations

import brotli
import pytest

from golf_core.quant.artifact import pack_state, split_tag
from golf_core.quant.fixtures import example_state, reload_and_score
from golf_core.testing import make_ctx, micro_stack, run_micro
from plugins.byteshuffle_brotli import shuffle_bytes, unshuffle_bytes


def test_shuffle_by_hand():
    assert shuffle_bytes(b"\x01\x02\x03\x04\x05", 2) == b"\x01\x03\x05\x02\x04"
    assert shuffle_bytes(b"abcdefgh", 4) == b"aebfcgdh"
    for stride in (1, 2, 3, 4):
        data = bytes(range(251)) * 3 + b"xy"
        assert unshuffle_bytes(shuffle_bytes(data, stride), stride) == data


@pytest.mark.parametrize("per_tensor", [True, False])
def test_round_trip_is_bit_exact(per_tensor):
    ctx = make_ctx(micro_stack(enable=["byteshuffle_brotli"], overrides=[f"techniques.byteshuffle_brotli.per_tensor={str(per_tensor).lower()}"]))
    state = example_state(seed=2)
    blob = ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx)
    tag, body = split_tag(blob)
    assert tag == "bshf-brotli"
    raw = brotli.decompress(body[1:])
    assert raw != pack_state(state)  # the payload really is shuffled
    assert len(raw) == len(pack_state(state))
    assert ctx.pm.hook.golf_deserialize(blob=blob, ctx=ctx).same_as(state)


def test_records_mode_is_the_stride_two_shuffle_of_the_whole_container():
    ctx = make_ctx(micro_stack(enable=["byteshuffle_brotli"], overrides=["techniques.byteshuffle_brotli.per_tensor=false"]))
    state = example_state(seed=3)
    _, body = split_tag(ctx.pm.hook.golf_serialize(qstate=state, ctx=ctx))
    raw = pack_state(state)
    assert brotli.decompress(body[1:]) == raw[0::2] + raw[1::2]


def test_micro_run_with_byteshuffle(tmp_path):
    report = run_micro(tmp_path, enable=["byteshuffle_brotli"])
    assert (tmp_path / "run" / "model.golf").read_bytes().startswith(b"GOLF:bshf-brotli\n")
    reloaded = reload_and_score(micro_stack(enable=["byteshuffle_brotli"]), tmp_path / "run")
    assert reloaded.val_bpb == report["post_quant"]["val_bpb"]
