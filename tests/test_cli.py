"""The command line: every command (text and --json), golf check, and every bad input of issue 2."""

from __future__ import annotations

import json
import math
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import technique_source

from cli import cli
from golf_core.config import describe_fields
from golf_core.data import find_shards
from golf_core.quant.int8 import quantize_state_dict_int8
from golf_core.stack import dumps_toml, resolve
from golf_core.testing import MICRO_OVERRIDES, build_model
from golf_core.testing import catalog as builtin_catalog

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "stacks" / "tiny.toml"
BASELINE = REPO / "stacks" / "baseline.toml"


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, f"golf {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
    return result


def as_json(*args: str):
    return json.loads(ok(*args).stdout)


def micro_sets(tmp_path: Path) -> list[str]:
    sets = []
    for override in [*MICRO_OVERRIDES, f"run.out_dir='{(tmp_path / 'runs').as_posix()}'"]:
        sets += ["--set", override]
    return sets


def assert_one_line_error(result, *fragments: str, code: int | None = None) -> str:
    """Non-zero exit, exactly one ``error: ...`` line on stderr, no traceback anywhere."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Every command
# ---------------------------------------------------------------------------------------------


def test_help_and_version() -> None:
    out = ok("--help").output
    for command in ("list", "show", "plugins", "stack", "check", "train", "data"):
        assert f"  {command} " in out
    assert "0.1.0" in ok("--version").output
    assert "--resolved" in ok("stack", "show", "--help").output


def test_list() -> None:
    out = ok("list").output
    assert "int8_rowwise*" in out and "core default" in out
    rows = as_json("list", "--json")
    names = {r["name"]: r for r in rows}
    assert names["int8_rowwise"]["core_default"] is True and names["int8_rowwise"]["stage"] == "quant"
    assert set(rows[0]) == {"name", "stage", "summary", "origin_pr", "core_default", "source"}
    assert {e.name for e in builtin_catalog()} == set(names)
    quant = as_json("list", "--stage", "quant", "--json")
    assert quant and all(r["stage"] == "quant" for r in quant)
    bad = run("list", "--stage", "magic")
    assert bad.exit_code == 2 and "Invalid value for '--stage'" in bad.output  # click's own usage error


def test_show() -> None:
    fields = describe_fields(builtin_catalog().get("muon").cls.Params)
    out = ok("show", "muon").output
    for f in fields:
        assert f["name"] in out and f["help"] in out
    assert "golf_build_optimizer" in out and "legality:" in out and "[techniques.muon]" in out
    assert "matrix_lr = " + json.dumps(next(f["default"] for f in fields if f["name"] == "matrix_lr")) in out
    info = as_json("show", "muon", "--json")
    assert info["params"] == json.loads(json.dumps(fields))
    assert info["hooks"] == ["golf_build_optimizer"] and info["legality"]["compliant"] is True
    assert info["source"] == "core" and info["file"].endswith("optim.py")
    assert {"requires", "conflicts", "doc", "origin_pr", "credits", "version", "location"} <= set(info)


def test_show_unknown_name_has_a_did_you_mean() -> None:
    assert_one_line_error(run("show", "muonn"), "unknown technique 'muonn'", "did you mean 'muon'", code=2)


def test_plugins() -> None:
    out = ok("plugins").output
    assert "SOURCE" in out and "golf_core.defaults.quant" in out
    rows = as_json("plugins", "--json")
    assert {"name", "source", "version", "location"} == set(rows[0])
    assert {r["source"] for r in rows} >= {"core"}


def test_plugins_dir_technique_is_listed_shown_and_usable(make_plugins_dir) -> None:
    d = make_plugins_dir({"extra_tech.py": technique_source("extra_tech", params='knob: int = param(3, "a knob")')})
    rows = {r["name"]: r for r in as_json("--plugins-dir", d, "plugins", "--json")}
    assert rows["extra_tech"]["source"] == "plugins-dir"
    assert as_json("--plugins-dir", d, "show", "extra_tech", "--json")["params"][0]["default"] == 3
    ok("--plugins-dir", d, "stack", "validate", TINY, "--enable", "extra_tech")
    assert_one_line_error(run("stack", "validate", TINY, "--enable", "extra_tech"), "unknown technique 'extra_tech'")


def test_stack_validate(tmp_path: Path) -> None:
    out = ok("stack", "validate", TINY, BASELINE).output
    assert f"ok: {TINY}" in out and f"ok: {BASELINE}" in out
    bad = write(tmp_path / "bad.toml", "[train]\niteratons = 3\n[model]\nnum_layers = 'x'\n")
    result = run("stack", "validate", TINY, bad, BASELINE)
    assert result.exit_code == 2
    assert f"ok: {TINY}" in result.stdout and f"ok: {BASELINE}" in result.stdout  # the others are still checked
    assert "2 problems in the stack" in result.stderr and "iteratons" in result.stderr and "num_layers" in result.stderr
    assert "Traceback" not in result.output


def test_stack_show(tmp_path: Path) -> None:
    merged = ok("stack", "show", TINY).stdout
    assert merged.startswith("# merged: tiny.toml\n")
    data = tomllib.loads(merged)
    assert data["stack"]["name"] == "tiny" and data["train"]["iterations"] == 60
    assert "artifact" not in data and "eval" not in data  # as written: defaults are not filled in
    resolved = ok("stack", "show", TINY, "--resolved", "--set", "train.iterations=7").stdout
    stack = resolve(TINY, builtin_catalog(), overrides=["train.iterations=7"])
    assert tomllib.loads(resolved) == stack.flat()
    assert resolved.split("\n", 1)[1] == dumps_toml(stack.flat())
    assert as_json("stack", "show", TINY, "--resolved", "--json") == resolve(TINY, builtin_catalog()).flat()
    child = write(tmp_path / "child.toml", f"extends = '{TINY.as_posix()}'\n[train]\niterations = 5\n")
    out = ok("stack", "show", child).stdout
    assert out.startswith("# merged: tiny.toml -> child.toml") and tomllib.loads(out)["train"]["iterations"] == 5


def test_stack_diff() -> None:
    rows = as_json("stack", "diff", TINY, BASELINE, "--json")
    by_key = {r["key"]: (r["a"], r["b"]) for r in rows}
    assert by_key["model.num_layers"] == (2, 9) and by_key["stack.name"] == ("tiny", "baseline")
    out = ok("stack", "diff", TINY, BASELINE).stdout
    assert "model.num_layers: 2 -> 9" in out
    assert "no differences" in ok("stack", "diff", TINY, TINY).stdout
    assert as_json("stack", "diff", TINY, TINY, "--set", "train.iterations=3", "--json") == []


def test_check_compliant_stack_and_estimate() -> None:
    out = ok("check", TINY, "--strict").stdout  # compliant and within budget: --strict exits 0
    assert "validation: ok" in out and "COMPLIANT" in out and "NON-COMPLIANT" not in out
    assert "16,000,000" in out and "headroom" in out and "uncompressed payload" in out
    report = as_json("check", TINY, "--json")
    art = report["artifact"]
    assert art["budget_bytes"] == 16_000_000 and art["within_budget"] and art["quantizer"] == "int8_rowwise"
    assert art["built_on"] == "meta" and art["estimated_per_tensor"]
    assert art["total_bytes"] == art["model_bytes"] + art["code_bytes"] and art["headroom_bytes"] == 16_000_000 - art["total_bytes"]
    # The estimate is the default quantizer's real payload, tensor by tensor.
    model, _, _ = build_model(resolve(TINY, builtin_catalog()))
    assert art["params"] == sum(p.numel() for p in model.parameters())
    real = quantize_state_dict_int8(model.state_dict())
    assert art["model_bytes"] == sum(qt.payload_bytes() for qt in real.entries.values())


def test_check_baseline_estimate() -> None:
    art = as_json("check", BASELINE, "--set", "model.vocab_size=1024", "--json")["artifact"]
    assert art["params"] == 17_059_912
    # 8.9M int8 matrices... plus the 1024 x 512 int8 embedding and fp16/fp32 small tensors.
    assert 17_000_000 < art["model_bytes"] < 17_300_000


def test_check_non_compliant_stack(make_plugins_dir) -> None:
    cheat = technique_source(
        "peek",
        """
        @hookimpl
        def golf_report_header(self, ctx):
            return []
        """,
        stage="eval",
        attrs='legality = Legality(reads=("validation",), breaks=("C3",), reason="trains on validation tokens before scoring them")',
    )
    d = make_plugins_dir({"peek.py": cheat})
    result = run("--plugins-dir", d, "check", TINY, "--enable", "peek")
    assert result.exit_code == 0  # reported, not refused: the stack stays reproducible
    assert "NON-COMPLIANT" in result.stdout
    assert "peek breaks C3 (score before update" in result.stdout and "trains on validation tokens" in result.stdout
    strict = run("--plugins-dir", d, "check", TINY, "--enable", "peek", "--strict", "--json")
    assert strict.exit_code == 1
    report = json.loads(strict.stdout)
    assert report["legality"]["compliant"] is False
    assert report["legality"]["broken"] == [
        {"technique": "peek", "condition": "C3", "description": "score before update: no adapter learns from a token before its score is fixed", "reason": "trains on validation tokens before scoring them"}
    ]


def test_check_strict_over_budget_and_fallback_estimate(make_plugins_dir) -> None:
    quant = technique_source(
        "noest",
        """
        @hookimpl
        def golf_quantize(self, model, calib, ctx):
            return None
        """,
        stage="quant",
    )
    d = make_plugins_dir({"noest.py": quant})
    result = run("--plugins-dir", d, "check", TINY, "--enable", "noest", "--set", "artifact.budget_bytes=1000", "--json", "--strict")
    assert result.exit_code == 1  # over the (tiny) budget
    art = json.loads(result.stdout)["artifact"]
    assert art["quantizer"] == "noest" and not art["estimated_per_tensor"]
    assert art["model_bytes"] == sum(t["bytes"] for t in art["tensor_bytes"]) == sum(math.prod(t["shape"]) for t in art["tensor_bytes"])
    assert any("1 byte per element" in n for n in art["notes"])
    assert not art["within_budget"] and art["headroom_bytes"] < 0


def test_train_default_stack_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "my_run"
    result = ok("train", *micro_sets(tmp_path), "--seed", "7", "--run-dir", run_dir)
    out = result.stdout
    assert "step:1/3" in out and "summary" in out and "val_bpb" in out and "pre-quant" in out
    assert "of 16,000,000 B" in out and str(run_dir) in out
    report = json.loads((run_dir / "report.json").read_text())
    assert report["seed"] == 7 and report["stack"] == "tiny" and report["stack_path"] == str(TINY)
    assert f"{report['val_bpb']:.4f}" in out


def test_python_dash_m_golf_core_runs_train(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from golf_core.__main__ import main

    monkeypatch.setattr(sys, "argv", ["golf_core", "--help"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    assert "Train STACK end to end" in capsys.readouterr().out


def test_data_prepare_and_verify(tmp_path: Path, sample_dataset) -> None:
    corpus = write(tmp_path / "corpus.txt", "\n\n".join(f"document number {i} says hello to the golf course {i * 7}" for i in range(30)))
    out_dir = tmp_path / "ds"
    result = ok("data", "prepare", "--input", corpus, "--tokenizer", sample_dataset / "tokenizer.model", "--val-docs", "5", "--out", out_dir)
    assert "val 5 docs" in result.stdout and "train 25 docs" in result.stdout
    assert (out_dir / "manifest.json").is_file()
    report = as_json("data", "verify", out_dir, "--json")
    assert report["ok"] and report["val_documents"] == 5 and report["table_bytes"] == report["decoded_bytes"]
    assert ok("data", "verify", out_dir).stdout.strip().endswith("ok")
    # An existing directory is not replaced without --overwrite ...
    assert_one_line_error(run("data", "prepare", "--input", corpus, "--vocab", "300", "--val-docs", "5", "--out", out_dir))
    # ... and --max-docs limits the documents read.
    ok("data", "prepare", "--input", corpus, "--tokenizer", sample_dataset / "tokenizer.model", "--val-docs", "5", "--max-docs", "10", "--out", out_dir, "--overwrite")
    assert as_json("data", "verify", out_dir, "--json")["train_tokens"] < report["train_tokens"]


def test_keyboard_interrupt_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import golf_core.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(golf_core.train, "train", interrupted)
    result = run("train", *micro_sets(tmp_path))
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted" and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# Bad input (issue 2): one clear line, non-zero exit, no traceback, no half-written files
# ---------------------------------------------------------------------------------------------


def test_bad_malformed_toml(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "schema = 1\n[train]\niterations = \n")
    for command in ("check", "train"):
        extra = micro_sets(tmp_path) if command == "train" else []
        assert_one_line_error(run(command, bad, *extra), str(bad), "line 3", code=2)
    assert not (tmp_path / "runs").exists()


def test_bad_unknown_technique_and_key(tmp_path: Path) -> None:
    assert_one_line_error(run("check", write(tmp_path / "t.toml", "[techniques.muonn]\n")), "unknown technique 'muonn'", "did you mean 'muon'")
    assert_one_line_error(run("check", write(tmp_path / "k.toml", "[train]\niteratons = 3\n")), "train.iteratons", "did you mean 'iterations'")
    assert_one_line_error(run("train", "--enable", "muonn", *micro_sets(tmp_path)), "did you mean 'muon'")
    assert not (tmp_path / "runs").exists()


def test_bad_wrong_type(tmp_path: Path) -> None:
    assert_one_line_error(run("check", TINY, "--set", "train.iterations='many'"), "train.iterations: expected int, got str 'many'", code=2)
    assert_one_line_error(run("train", *micro_sets(tmp_path), "--set", "model.tie_embeddings=1"), "expected bool", code=2)
    assert not (tmp_path / "runs").exists()


def test_bad_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "extends = 'b.toml'\n")
    write(tmp_path / "b.toml", "extends = 'a.toml'\n")
    assert_one_line_error(run("stack", "show", tmp_path / "a.toml"), "extends cycle: a.toml -> b.toml -> a.toml", code=2)


def test_bad_missing_stack_file(tmp_path: Path) -> None:
    assert_one_line_error(run("train", tmp_path / "nope.toml"), "stack file not found", "nope.toml", code=2)


def test_bad_missing_data_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    assert_one_line_error(run("train", *micro_sets(tmp_path), "--set", f"data.dataset='{missing.as_posix()}'"), "data.dataset", str(missing), code=2)
    assert not (tmp_path / "runs").exists()
    assert_one_line_error(run("data", "verify", missing), str(missing), code=2)


def test_bad_missing_tokenizer_path(tmp_path: Path) -> None:
    corpus = write(tmp_path / "c.txt", "a b c\n\nd e f\n\ng h i\n")
    missing = tmp_path / "nope.model"
    assert_one_line_error(run("data", "prepare", "--input", corpus, "--tokenizer", missing, "--val-docs", "1", "--out", tmp_path / "ds"), "nope.model")
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds*"))
    assert_one_line_error(run("train", *micro_sets(tmp_path), "--set", f"data.tokenizer='{missing.as_posix()}'"), "nope.model", code=2)
    assert not (tmp_path / "runs").exists()


def test_bad_missing_input_for_prepare(tmp_path: Path) -> None:
    assert_one_line_error(run("data", "prepare", "--input", tmp_path / "none.jsonl", "--vocab", "300", "--val-docs", "1", "--out", tmp_path / "ds"), "none.jsonl")
    assert not (tmp_path / "ds").exists()


def test_bad_corrupt_or_truncated_shard(tmp_path: Path, sample_dataset) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    shard = find_shards(data, "train")[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    assert_one_line_error(run("train", *micro_sets(tmp_path), "--set", f"data.dataset='{data.as_posix()}'"), str(shard), "truncated", code=2)
    assert not (tmp_path / "runs").exists()
    assert_one_line_error(run("data", "verify", data), str(shard), code=2)
    # A bad header names the file and what is wrong with it.
    raw = bytearray(shard.read_bytes())
    raw[0:4] = (12345).to_bytes(4, "little")
    shard.write_bytes(bytes(raw))
    assert_one_line_error(run("train", *micro_sets(tmp_path), "--set", f"data.dataset='{data.as_posix()}'"), str(shard), "bad magic 12345")


def test_bad_tokenizer_larger_than_model(tmp_path: Path, sample_dataset) -> None:
    result = run("train", *micro_sets(tmp_path), "--set", f"data.dataset='{sample_dataset.as_posix()}'", "--set", "model.vocab_size=512")
    assert_one_line_error(result, "1024 pieces but model.vocab_size is 512", code=2)
    assert not (tmp_path / "runs").exists()


def test_bad_artifact_over_budget(tmp_path: Path) -> None:
    run_dir = tmp_path / "over"
    result = run("train", *micro_sets(tmp_path), "--set", "artifact.budget_bytes=1000", "--run-dir", run_dir)
    assert_one_line_error(result, "over the 1,000-byte budget", str(run_dir), code=1)
    report = json.loads((run_dir / "report.json").read_text())  # the report is still written
    assert report["artifact"]["within_budget"] is False
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.golf", "report.json", "stack.resolved.toml", "train.log"]
