"""``golf check`` labels its model figure with what the quantizer's estimate is (``estimate_kind``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from golf_core.check import ESTIMATE_KINDS, check_stack, estimate_kind, format_check
from golf_core.errors import GolfError
from golf_core.stack import resolve
from golf_core.testing import catalog

TINY = Path(__file__).resolve().parent.parent / "stacks" / "tiny.toml"


def test_default_quantizer_is_a_payload_estimate() -> None:
    report = check_stack(resolve(TINY, catalog()), catalog())
    assert report["artifact"]["kind"] == ESTIMATE_KINDS["payload"] == "uncompressed payload estimate"
    text = format_check(report)
    assert "artifact (uncompressed payload estimate; quantizer int8_rowwise" in text
    assert "the model figure is uncompressed payload" in text


def test_gptq_estimate_is_labelled_compressed() -> None:
    report = check_stack(resolve(TINY, catalog(), enable=["gptq"]), catalog())
    art = report["artifact"]
    assert art["quantizer"] == "gptq" and art["kind"] == ESTIMATE_KINDS["compressed"] == "expected compressed size"
    text = format_check(report)
    assert "artifact (expected compressed size; quantizer gptq" in text
    assert "gptq's expected compressed size" in text and "uncompressed payload" not in text


def test_an_unknown_estimate_kind_names_the_quantizer() -> None:
    class Odd:
        name = "odd_quant"
        estimate_kind = "zipped"

    with pytest.raises(GolfError, match=r"odd_quant\.estimate_kind = 'zipped'.*'payload', 'compressed'"):
        estimate_kind(Odd())
    assert estimate_kind(object()) == ESTIMATE_KINDS["payload"]  # no attribute: the default
