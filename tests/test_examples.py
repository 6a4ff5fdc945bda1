"""examples/golf-zloss: a third-party technique found through its ``golf.plugins`` entry point.

The distribution is "installed" without pip or a network: a ``.dist-info`` folder with its
entry points in a temporary directory on ``sys.path`` (golf_core.scaffold.register_distribution).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from golf_core.bundle import bundle
from golf_core.catalog import load_catalog
from golf_core.context import RunContext
from golf_core.manager import make_plugin_manager
from golf_core.model.gpt import softcapped_cross_entropy
from golf_core.scaffold import register_distribution
from golf_core.stack import resolve
from golf_core.testing import MICRO_OVERRIDES
from golf_core.train import train

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "golf-zloss"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """golf-zloss registered on sys.path, entry-point loading switched back on (conftest turns it off)."""
    paths = register_distribution(EXAMPLE, tmp_path / "site")
    for path in reversed(paths):
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv("GOLF_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    return paths


def test_the_distribution_declares_its_entry_point():
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["golf.plugins"] == {"zloss": "golf_zloss:ZLoss"}
    assert (EXAMPLE / "golf_zloss" / "__init__.py").is_file() and (EXAMPLE / "README.md").is_file()


def test_not_listed_without_its_entry_point():
    assert "zloss" not in load_catalog()


def test_listed_by_golf_list_and_golf_plugins(installed):
    catalog = load_catalog()
    entry = catalog.get("zloss")
    assert (entry.source, entry.location, entry.version) == ("entry point", "golf-zloss", "0.1.0")
    runner = CliRunner()
    listed = runner.invoke(cli, ["list", "--stage", "loss"])
    assert listed.exit_code == 0, listed.output
    assert any(line.split()[:2] == ["zloss", "loss"] for line in listed.output.splitlines())
    plugins = runner.invoke(cli, ["plugins"])
    assert plugins.exit_code == 0, plugins.output
    row = next(line for line in plugins.output.splitlines() if line.startswith("zloss "))
    assert "entry point" in row and "golf-zloss" in row and "0.1.0" in row
    shown = runner.invoke(cli, ["show", "zloss"])
    assert shown.exit_code == 0 and "Chowdhery" in shown.output and "weight" in shown.output


def test_usable_from_a_stack(installed, tmp_path):
    catalog = load_catalog()
    stack = resolve(
        None, catalog, overrides=[*MICRO_OVERRIDES, f"run.out_dir='{tmp_path.as_posix()}'", "techniques.zloss.weight=0.01"],
        enable=["zloss"],
    )
    assert list(stack.techniques) == ["zloss"] and stack.techniques["zloss"].weight == 0.01
    pm = make_plugin_manager(stack, catalog)
    ctx = RunContext(stack=stack, device=torch.device("cpu"), pm=pm, log=lambda msg, console=True: None)
    loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
    logits, targets = torch.randn(6, 10) * 5, torch.randint(0, 10, (6,))
    capped = 30.0 * torch.tanh(logits / 30.0)
    expected = softcapped_cross_entropy(logits, targets, 30.0) + 0.01 * torch.logsumexp(capped, -1).square().mean()
    torch.testing.assert_close(loss_fn(logits, targets, 30.0), expected)
    (tmp_path / "run").mkdir()
    report = train(stack, catalog, run_dir=tmp_path / "run", quiet=True)
    assert report["steps"] == 3 and report["techniques"] == ["zloss"] and math.isfinite(report["val_bpb"])


def test_its_own_tests_pass_once_installed(tmp_path):
    paths = register_distribution(EXAMPLE, tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k != "GOLF_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5 passed" in result.stdout


def test_bundled_into_a_record_without_being_installed_there(installed, tmp_path):
    catalog = load_catalog()
    fast = ["train.iterations=2", "train.train_batch_tokens=2048", "data.val_tokens_limit=2048", "train.val_batch_tokens=2048"]
    stack = resolve(ROOT / "stacks" / "tiny.toml", catalog, overrides=fast, enable=["zloss"])
    bundle(stack, catalog, tmp_path / "record")
    text = (tmp_path / "record" / "train_gpt.py").read_text()
    assert "SOURCES['_golf.ext'] = ''" in text and "SOURCES['_golf.ext.golf_zloss'] = " in text
    assert "| zloss | loss | - | Chowdhery et al." in (tmp_path / "record" / "README.md").read_text()
    # The subprocess has no path to examples/: the technique it runs is the bundled copy.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    run = subprocess.run(
        [sys.executable, str(tmp_path / "record" / "train_gpt.py"), "--run-dir", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "zloss 0.1.0" in run.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["techniques"] == ["zloss"] and report["steps"] == 2 and math.isfinite(report["val_bpb"])
