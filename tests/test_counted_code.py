"""Counted code bytes: ``golf train``, ``golf check`` and ``golf bundle`` report the same figure for a stack.

A stack's code is the ``train_gpt.py`` that ``golf bundle`` writes for it (the modules a run
imports, CLI-only modules left out), counted as that file's own run counts it; the trainer's
report and ``golf check`` go through the same function (``golf_core.train.counted_stack_code``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli
from golf_core.bundle import EXCLUDED_AT_RUNTIME, render_train_gpt
from golf_core.errors import GolfError
from golf_core.quant.artifact import counted_code_bytes
from golf_core.stack import resolve
from golf_core.testing import catalog
from golf_core.train import counted_stack_code

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "stacks" / "tiny.toml"
FAST = ("train.iterations=3", "train.train_batch_tokens=2048", "data.val_tokens_limit=4096", "train.val_batch_tokens=4096")


def invoke(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("enable", [(), ("smear_gate", "min_lr")], ids=["tiny", "tiny+smear_gate+min_lr"])
def test_train_check_and_bundle_count_the_same_code_bytes(tmp_path, enable) -> None:
    sets = [a for o in (*FAST, f"run.out_dir='{(tmp_path / 'runs').as_posix()}'") for a in ("--set", o)]
    sets += [a for name in enable for a in ("--enable", name)]
    checked = json.loads(invoke("check", TINY, *sets, "--json"))["artifact"]
    bundled = json.loads(invoke("bundle", TINY, "-o", tmp_path / "record", *sets, "--json"))["code"]
    invoke("train", TINY, *sets, "--run-dir", tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["techniques"] == list(enable)
    trained = report["artifact"]
    assert checked["code_bytes"] == bundled["code_bytes"] == trained["code_bytes"] > 0
    # ... and that figure is the written train_gpt.py, as its own run counts itself.
    assert bundled["code_bytes"] == counted_code_bytes([tmp_path / "record" / "train_gpt.py"])["code_bytes"]
    assert trained["code_detail"]["modules"] == checked["code_modules"]


def test_the_count_holds_what_a_run_imports_and_no_cli_module() -> None:
    stack = resolve(TINY, catalog(), enable=["smear_gate"])
    _, amalgam = render_train_gpt(stack, catalog())
    modules = set(amalgam.modules)
    assert {"golf_core.train", "plugins.smear_gate"} <= modules
    assert not modules & EXCLUDED_AT_RUNTIME
    assert not {m for m in modules if m.startswith("golf_core.") and m.split(".")[1] in ("importer", "reproduce", "stackdiff")}
    code = counted_stack_code(stack, catalog())
    assert code["modules"] == len(amalgam.order)
    # Counting all of golf_core plus the technique (the old accounting) costs far more.
    everything = counted_code_bytes([ROOT / "golf_core", ROOT / "plugins" / "smear_gate"], root=ROOT)
    assert code["code_bytes"] < everything["code_bytes"] - 10_000


def test_an_explicit_code_files_list_is_counted_as_it_stands() -> None:
    stack = resolve(TINY, catalog(), overrides=["artifact.code_files=['golf_core/errors.py']"])
    assert counted_stack_code(stack, catalog()) == counted_code_bytes([ROOT / "golf_core" / "errors.py"], root=ROOT)
    mixed = resolve(TINY, catalog(), overrides=["artifact.code_files=['bundle', 'golf_core']"])
    with pytest.raises(GolfError, match="'bundle'.*cannot be combined"):
        counted_stack_code(mixed, catalog())
