"""The trainer end to end on a micro stack: run directory, report, log, reload, and bad input."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from golf_core.data import ByteTable, find_shards, load_tokenizer, load_validation_tokens
from golf_core.errors import BudgetError, GolfError
from golf_core.eval.scoring import evaluate
from golf_core.stack import dumps_toml
from golf_core.testing import build_model, micro_stack, run_micro

# What report.json promises (README, docs): the figures of every phase of a run.
REPORT_KEYS = {
    "stack", "seed", "code_version", "golf_version", "techniques", "device", "world_size", "model_params",
    "steps", "tokens_per_step", "tokens_per_second", "train_curve", "pre_quant", "post_quant", "artifact",
    "training_budget", "eval_budget", "val_loss", "val_bpb", "phases", "run_dir",
}
SCORE_KEYS = {"val_loss", "val_bpb", "tokens", "bytes", "seconds"}
ARTIFACT_KEYS = {"model_bytes", "code_bytes", "total_bytes", "budget_bytes", "headroom_bytes", "within_budget", "routes"}
PHASES = {"data_setup", "build", "train", "train_end", "eval_pre_quant", "quantize", "serialize", "reload", "eval_post_quant"}


def one_line(err: BaseException) -> str:
    message = str(err)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("micro")
    report = run_micro(tmp)
    return report, Path(report["run_dir"])


def test_report_json_has_the_documented_keys(micro_run) -> None:
    report, run_dir = micro_run
    on_disk = json.loads((run_dir / "report.json").read_text())
    assert REPORT_KEYS <= set(on_disk)
    assert SCORE_KEYS <= set(on_disk["pre_quant"]) and SCORE_KEYS <= set(on_disk["post_quant"])
    assert ARTIFACT_KEYS <= set(on_disk["artifact"])
    assert PHASES <= set(on_disk["phases"])
    assert on_disk["val_bpb"] == report["val_bpb"] == report["post_quant"]["val_bpb"]
    assert on_disk["steps"] == 3 and [row[0] for row in on_disk["train_curve"]] == [1, 2, 3]
    art = on_disk["artifact"]
    assert art["model_bytes"] == (run_dir / "model.golf").stat().st_size
    assert art["total_bytes"] == art["model_bytes"] + art["code_bytes"] and art["within_budget"]
    assert art["budget_bytes"] == 16_000_000 and art["headroom_bytes"] == 16_000_000 - art["total_bytes"]
    assert on_disk["pre_quant"]["tokens"] == 2048 and 0 < on_disk["val_bpb"] < 10
    assert on_disk["tokens_per_second"] > 0 and on_disk["model_params"] > 0
    # Only finished files: no temporaries left behind.
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.golf", "report.json", "stack.resolved.toml", "train.log"]


def test_reloaded_artifact_scores_what_the_report_says(micro_run, sample_dataset) -> None:
    report, run_dir = micro_run
    model, _, ctx = build_model(micro_stack())
    qstate = ctx.pm.hook.golf_deserialize(blob=(run_dir / "model.golf").read_bytes(), ctx=ctx)
    current = model.state_dict()
    model.load_state_dict({k: v.to(current[k].dtype) for k, v in qstate.dequantize().items()}, strict=True)
    ctx.byte_table = ByteTable.from_sentencepiece(load_tokenizer(sample_dataset / "tokenizer.model"), 1024)
    tokens = load_validation_tokens(find_shards(sample_dataset, "val"), 128)[: 2048 + 1]
    result = evaluate(model, tokens, ctx, seq_len=128, batch_tokens=2048)
    assert result.tokens == report["post_quant"]["tokens"]
    assert result.val_bpb == pytest.approx(report["post_quant"]["val_bpb"], rel=1e-6)
    assert result.val_bpb != pytest.approx(report["pre_quant"]["val_bpb"], rel=1e-9)  # it really is the quantized model


def test_log_opens_with_versions_and_the_resolved_stack(micro_run) -> None:
    report, run_dir = micro_run
    log = (run_dir / "train.log").read_text()
    lines = log.splitlines()
    assert lines[0].startswith("golf ") and f"code {report['code_version']}" in lines[0] and "torch " in lines[0]
    assert lines[1].startswith("plugins: ") and "int8_rowwise* 0.1.0" in lines[1]
    resolved = (run_dir / "stack.resolved.toml").read_text()
    stack = micro_stack(overrides=[f"run.out_dir='{run_dir.parent.as_posix()}'"])
    assert tomllib.loads(resolved) == stack.flat()
    assert resolved == dumps_toml(stack.flat())
    assert lines[2] == "resolved stack:"
    assert log.index(resolved) < log.index("model_params:") < log.index("step:1/3")
    assert "done: val_bpb" in lines[-1]


def test_over_budget_raises_after_the_report_is_written(tmp_path: Path) -> None:
    with pytest.raises(BudgetError) as info:
        run_micro(tmp_path, overrides=["artifact.budget_bytes=1000"])
    message = one_line(info.value)
    assert info.value.exit_code == 1
    assert "over the 1,000-byte budget" in message
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["artifact"]["within_budget"] is False and report["artifact"]["budget_bytes"] == 1000
    assert report["artifact"]["total_bytes"] > 1000 and "val_bpb" in report


def _assert_nothing_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert not run_dir.exists() or not any(run_dir.iterdir()), sorted(p.name for p in run_dir.iterdir())


def test_missing_dataset_directory(tmp_path: Path) -> None:
    with pytest.raises(GolfError) as info:
        run_micro(tmp_path, overrides=[f"data.dataset='{(tmp_path / 'no_such_data').as_posix()}'"])
    message = one_line(info.value)
    assert "data.dataset" in message and "no_such_data" in message and "golf data prepare" in message
    _assert_nothing_written(tmp_path)


def test_missing_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(GolfError) as info:
        run_micro(tmp_path, overrides=[f"data.tokenizer='{(tmp_path / 'nope.model').as_posix()}'"])
    assert "nope.model" in one_line(info.value)
    _assert_nothing_written(tmp_path)


def test_tokenizer_larger_than_the_model_vocabulary(tmp_path: Path, sample_dataset) -> None:
    with pytest.raises(GolfError) as info:
        run_micro(tmp_path, overrides=[f"data.dataset='{sample_dataset.as_posix()}'", "model.vocab_size=512"])
    message = one_line(info.value)
    assert "1024 pieces but model.vocab_size is 512" in message and "--set model.vocab_size=1024" in message
    _assert_nothing_written(tmp_path)


def test_truncated_shard_stops_the_run_before_it_starts(tmp_path: Path, sample_dataset) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    shard = find_shards(data, "val")[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(GolfError) as info:
        run_micro(tmp_path, overrides=[f"data.dataset='{data.as_posix()}'"])
    message = one_line(info.value)
    assert str(shard) in message and "truncated" in message
    _assert_nothing_written(tmp_path)

