"""The default post-train path: int8 per-row, the container, brotli, counted code bytes, size estimate."""

from __future__ import annotations

import base64
from pathlib import Path

import brotli
import pytest
import torch

import golf_core
from golf_core.defaults.quant import BrotliSerializer, Int8RowQuant
from golf_core.quant.artifact import CONTAINER_MAGIC, counted_code_bytes, pack_state, shipped_sources, split_tag, tag_blob, unpack_state
from golf_core.quant.int8 import CLIP_Q, KEEP_FLOAT_MAX_NUMEL, quantize_state_dict_int8
from golf_core.quant.state import QuantizedTensor, QuantState

CORE = Path(golf_core.__file__).resolve().parent


def sample_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "blocks.0.mlp.fc.weight": torch.randn(300, 260, generator=g) * 2.0,  # 78,000 > 65,536: int8 per row
        "big_vector": torch.randn(70_000, generator=g),  # large 1-D: int8 per tensor
        "blocks.0.attn.c_q.weight": torch.randn(64, 64, generator=g),  # small matrix: fp16 passthrough
        "blocks.0.attn_scale": torch.rand(64, generator=g),  # control tensor: fp32 passthrough
        "step_counter": torch.tensor([3, 4], dtype=torch.int64),  # non-float: unchanged
        "empty": torch.zeros(0, 5),
    }


def assert_states_equal(a: QuantState, b: QuantState) -> None:
    assert a.meta == b.meta and list(a.entries) == list(b.entries)
    for name, qa in a.entries.items():
        qb = b.entries[name]
        assert (qa.scheme, qa.shape, qa.dtype, qa.route, qa.meta) == (qb.scheme, qb.shape, qb.dtype, qb.route, qb.meta)
        assert qa.tensors.keys() == qb.tensors.keys()
        for key, t in qa.tensors.items():
            u = qb.tensors[key]
            assert t.dtype == u.dtype and t.shape == u.shape
            assert t.reshape(-1).view(torch.uint8).numpy().tobytes() == u.reshape(-1).view(torch.uint8).numpy().tobytes(), f"{name}.{key} differs"


def test_routes_by_size_and_kind() -> None:
    state = quantize_state_dict_int8(sample_state_dict())
    schemes = {name: (qt.scheme, qt.route) for name, qt in state.entries.items()}
    assert schemes["blocks.0.mlp.fc.weight"] == ("int8_row", "int8 per-row")
    assert schemes["big_vector"] == ("int8_tensor", "int8 per-tensor")
    assert schemes["blocks.0.attn.c_q.weight"] == ("raw", "passthrough (float16)")
    assert schemes["blocks.0.attn_scale"] == ("raw", "passthrough (float32)")
    assert schemes["step_counter"] == ("raw", "passthrough (int64)")
    deq = state.dequantize()
    assert torch.equal(deq["step_counter"], torch.tensor([3, 4]))
    assert torch.equal(deq["blocks.0.attn_scale"], sample_state_dict()["blocks.0.attn_scale"])
    assert all(deq[k].dtype == v.dtype and deq[k].shape == v.shape for k, v in sample_state_dict().items())


def test_container_pack_unpack_is_bit_exact() -> None:
    state = quantize_state_dict_int8(sample_state_dict())
    state.meta["note"] = {"nested": [1, 2.5, "x"]}
    state.entries["blocks.0.mlp.fc.weight"].meta["bits"] = 8
    blob = pack_state(state)
    assert blob.startswith(CONTAINER_MAGIC)
    back = unpack_state(blob)
    assert_states_equal(state, back)
    assert pack_state(back) == blob  # deterministic
    for name, t in state.dequantize().items():
        assert torch.equal(back.dequantize()[name], t)
    with pytest.raises(ValueError, match="bad magic"):
        unpack_state(b"NOTGOLF" + blob[7:])


def test_brotli_serializer_round_trip() -> None:
    state = quantize_state_dict_int8(sample_state_dict())
    serializer = BrotliSerializer()
    blob = serializer.golf_serialize(state, None)
    tag, body = split_tag(blob)
    assert tag == "brotli"
    assert brotli.decompress(body) == pack_state(state)
    assert_states_equal(state, serializer.golf_deserialize(blob, None))
    assert serializer.golf_deserialize(tag_blob("other", body), None) is None
    assert len(blob) < len(pack_state(state))  # it compresses


def test_int8_dequantization_error_is_at_most_half_a_step() -> None:
    w = sample_state_dict()["blocks.0.mlp.fc.weight"]
    w[:10] *= 0.01  # rows whose step hits the reference's floor of 1/127
    qt = quantize_state_dict_int8({"w": w}).entries["w"]
    q, stored_scale = qt.tensors["q"], qt.tensors["scale"]
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and stored_scale.dtype == torch.float16
    # An independent recomputation of the clip and the step from the rule: 99.99984th percentile
    # of |w| per row, step clip / 127 but never below 1/127 (as in the reference script).
    clip = torch.quantile(w.abs(), CLIP_Q, dim=1)
    step = (clip / 127.0).clamp_min(1.0 / 127.0)
    deq = qt.dequantize()
    within = w.abs() <= clip[:, None]
    # The step is stored in fp16: its rounding error is multiplied by |q| <= 127.
    bound = step[:, None] / 2 + q.abs().float() * (stored_scale.float() - step).abs()[:, None] + 1e-7
    err = (deq - w).abs()
    assert torch.all(err[within] <= bound[within])
    assert within.float().mean() > 0.99  # clipping touches almost nothing
    assert err.max() < w.abs().max() * 0.02


def test_int8_per_tensor_error_is_at_most_half_a_step() -> None:
    v = sample_state_dict()["big_vector"]
    qt = quantize_state_dict_int8({"v": v}).entries["v"]
    clip = torch.quantile(v.abs(), CLIP_Q).item()
    step = qt.tensors["scale"].item()
    assert step == pytest.approx(clip / 127.0, rel=1e-6)
    within = v.abs() <= clip
    assert torch.all((qt.dequantize() - v).abs()[within] <= step / 2 + 1e-6)


def test_estimate_tensor_bytes_matches_the_payload_of_the_default() -> None:
    estimator = Int8RowQuant()
    state = quantize_state_dict_int8({k: v for k, v in sample_state_dict().items() if v.is_floating_point()})
    for name, qt in state.entries.items():
        assert estimator.estimate_tensor_bytes(name, qt.shape) == qt.payload_bytes(), name
    assert estimator.estimate_tensor_bytes("w", (1000, 100)) == 100_000 + 2_000
    assert estimator.estimate_tensor_bytes("w", (KEEP_FLOAT_MAX_NUMEL,)) == 2 * KEEP_FLOAT_MAX_NUMEL
    assert estimator.estimate_tensor_bytes("blocks.3.resid_mix", (2, 512)) == 4 * 1024


def test_counted_code_bytes_is_deterministic_and_smaller_than_raw() -> None:
    paths = [CORE / "quant", CORE / "eval"]
    first = counted_code_bytes(paths, root=CORE.parent)
    assert first == counted_code_bytes(paths, root=CORE.parent)
    assert 0 < first["code_bytes"] < first["stripped_bytes"] < first["raw_bytes"]
    assert first["files"] == len(shipped_sources(paths)) > 3


def test_counted_code_is_a_working_self_extracting_wrapper(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text('"""Module docstring that ships nowhere."""\n\n# a comment\ndef f(x):\n    """Doc."""\n    return x + 1  # trailing\n\nRESULT = f(41)\n')
    (tmp_path / "test_mod.py").write_text("raise SystemExit('tests do not ship')\n")
    counted = counted_code_bytes([tmp_path], root=tmp_path)
    assert counted["files"] == 1
    assert counted["stripped_bytes"] < counted["raw_bytes"]
    # Rebuild the wrapper from the same recipe and run it: it must define what the source defines.
    from golf_core.quant.artifact import _strip_source

    stripped = f"# mod.py\n{_strip_source(source.read_text())}\n"
    assert "docstring" not in stripped and "comment" not in stripped
    packed = base64.b85encode(brotli.compress(stripped.encode(), quality=11)).decode()
    wrapper = f'import brotli as B,base64 as b\nexec(B.decompress(b.b85decode("{packed}")))\n'
    assert len(wrapper.encode()) == counted["code_bytes"]
    namespace: dict = {}
    exec(wrapper, namespace)
    assert namespace["RESULT"] == 42


def test_quantized_tensor_reports_unknown_schemes() -> None:
    qt = QuantizedTensor("no_such_scheme", (2,), "float32", {"q": torch.zeros(2)})
    with pytest.raises(KeyError, match="no dequantizer registered for scheme 'no_such_scheme'"):
        qt.dequantize()
    assert qt.payload_bytes() == 8  # two float32 values
