"""Multi-process training: the torchrun launcher, and 2 gloo ranks on CPU against one process.

Same global batch: 2 ranks x 1 micro-batch read exactly the tokens of 1 process x 2 micro-batches
(both loaders hand rank r the r-th span of each global span), DDP averages what accumulation
sums, and Muon's round-robin orthogonalization + all-reduce rebuilds the single-process update.
So the two runs must agree to float32 noise, and the ranks must end bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from golf_core.errors import GolfError
from golf_core.launch import Nodes, torchrun_command, torchrun_options, train_arguments
from golf_core.testing import MICRO_OVERRIDES, run_micro

REPO = Path(__file__).resolve().parent.parent


def test_single_node_command_is_torchrun_standalone():
    args = train_arguments("stacks/tiny.toml", overrides=["train.iterations=5"], enable=["doc_packing"], seed=3, run_dir="runs/x")
    cmd = torchrun_command(4, args, python="python")
    assert cmd == [
        "python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
        "-m", "golf_core", "stacks/tiny.toml", "--set", "train.iterations=5", "--enable", "doc_packing",
        "--seed", "3", "--run-dir", "runs/x",
    ]


def test_multi_node_options_replace_standalone():
    opts = torchrun_options(8, Nodes(nnodes="2", node_rank=1, rdzv_endpoint="10.0.0.1:29500", rdzv_id="job7"))
    assert "--standalone" not in opts
    assert opts == [
        "--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d", "--rdzv_endpoint=10.0.0.1:29500",
        "--node_rank=1", "--rdzv_id=job7",
    ]
    with pytest.raises(GolfError, match="rdzv-endpoint"):
        torchrun_options(8, Nodes(nnodes="2", node_rank=0))
    with pytest.raises(GolfError, match="nproc"):
        torchrun_options(0)


def test_plugins_dirs_go_through_the_cli_module():
    cmd = torchrun_command(2, ["s.toml"], plugins_dirs=["/p"], python="python")
    assert cmd[-6:] == ["-m", "cli", "--plugins-dir", "/p", "train", "s.toml"]


def test_cli_launches_torchrun_and_forwards_its_exit_status(monkeypatch, tmp_path):
    import golf_core.launch
    from cli import cli

    seen = []
    monkeypatch.setattr(golf_core.launch, "launch", lambda cmd, env=None: seen.append(cmd) or 7)
    stack = REPO / "stacks" / "tiny.toml"
    result = CliRunner().invoke(
        cli, ["train", str(stack), "--nproc", "2", "--set", "train.iterations=2", "--nnodes", "2", "--node-rank", "0",
              "--rdzv-endpoint", "host:29400", "--rdzv-id", "r1"],
    )
    assert result.exit_code == 7, result.output
    (cmd,) = seen
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" not in cmd
    assert "--rdzv_endpoint=host:29400" in cmd and "--node_rank=0" in cmd
    assert cmd[cmd.index("golf_core") + 1 :] == [str(stack), "--set", "train.iterations=2"]
    # multi-node flags without --nproc are a usage error, not a silent single-process run
    result = CliRunner().invoke(cli, ["train", str(stack), "--nnodes", "2"])
    assert result.exit_code == 2 and "--nproc" in result.output


def _micro_stack_file(tmp_path: Path) -> Path:
    path = tmp_path / "micro.toml"
    path.write_text('schema = 1\n\n[stack]\nname = "micro"\nsummary = "micro stack for the distributed test"\n')
    return path


@pytest.mark.parametrize("enable", [[], ["doc_packing"]], ids=["sequential_loader", "doc_packing"])
def test_two_gloo_ranks_match_one_process(tmp_path, enable):
    stack = _micro_stack_file(tmp_path)
    common = [*MICRO_OVERRIDES, "train.iterations=4", f"run.out_dir='{tmp_path.as_posix()}'"]
    run_dir = tmp_path / "ddp"
    args = [sys.executable, "-m", "cli", "train", str(stack), "--nproc", "2", "--run-dir", str(run_dir)]
    for item in [*common, "train.grad_accum_steps=1"]:
        args += ["--set", item]
    for name in enable:
        args += ["--enable", name]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["world_size"] == 2 and report["ranks_in_sync"] is True
    assert "world_size 2" in (run_dir / "train.log").read_text()
    assert proc.stdout.count("summary") == 1  # rank 0 alone reports

    single = run_micro(tmp_path / "single", enable=enable, overrides=[*common, "train.grad_accum_steps=2"], path=stack)
    assert single["world_size"] == 1 and single["tokens_per_step"] == report["tokens_per_step"]
    for (s1, l1, _), (s2, l2, _) in zip(single["train_curve"], report["train_curve"], strict=True):
        assert s1 == s2 and l2 == pytest.approx(l1, rel=1e-5)
    assert report["pre_quant"]["val_bpb"] == pytest.approx(single["pre_quant"]["val_bpb"], rel=1e-5)
    assert report["val_bpb"] == pytest.approx(single["val_bpb"], rel=1e-5)
