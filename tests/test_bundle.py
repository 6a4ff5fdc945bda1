"""``golf bundle``: a self-contained train_gpt.py that trains exactly like golf, and costs bytes only for what is enabled."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli
from golf_core.bundle import BUNDLE_FILE, EXCLUDED_AT_RUNTIME, bundle, bundle_name, render_train_gpt
from golf_core.errors import GolfError
from golf_core.quant.artifact import counted_code_bytes
from golf_core.stack import resolve
from golf_core.testing import catalog
from golf_core.train import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "stacks" / "tiny.toml"
PR1855 = ROOT / "stacks" / "pr1855.toml"
RECORD_1855_CODE_BYTES = 31_999  # "Code size (compressed): 31999 bytes", records/pr1855/train_seed42.log
# tiny.toml, a few seconds on CPU.
FAST = (
    "train.iterations=3",
    "train.train_batch_tokens=2048",
    "data.val_tokens_limit=4096",
    "train.val_batch_tokens=4096",
)


def tiny(*overrides: str, enable=(), disable=()):
    return resolve(TINY, catalog(), overrides=[*FAST, *overrides], enable=list(enable), disable=list(disable))


def embedded_sources(text: str) -> dict[str, str]:
    """``SOURCES[name] = '...'`` of a bundled file, without running it."""
    out = {}
    for node in ast.parse(text).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Subscript)
            and isinstance(node.targets[0].value, ast.Name)
            and node.targets[0].value.id == "SOURCES"
        ):
            out[node.targets[0].slice.value] = node.value.value
    return out


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "record"
    summary = bundle(tiny(), catalog(), out)
    return out, summary


# ---------------------------------------------------------------------------------------------
# It trains exactly like golf
# ---------------------------------------------------------------------------------------------


def test_bundled_tiny_reaches_golfs_final_loss_exactly(tiny_bundle, tmp_path):
    out, summary = tiny_bundle
    # The reference: golf_core.train.train on the same resolved stack and seed, in this process.
    (tmp_path / "ref").mkdir()
    reference = train(tiny(), catalog(), run_dir=tmp_path / "ref", quiet=True)
    # The bundle: plain `python train_gpt.py` from elsewhere, with one thread like this process,
    # where importing golf fails: poisoned golf_core, plugins and cli come first on the path.
    poison = tmp_path / "poison"
    for package in ("golf_core", "plugins"):
        (poison / package).mkdir(parents=True)
        (poison / package / "__init__.py").write_text(f"raise ImportError('the bundle imported {package}')\n")
    (poison / "cli.py").write_text("raise ImportError('the bundle imported cli')\n")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(poison)}
    blocked = subprocess.run([sys.executable, "-c", "import golf_core"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "the bundle imported golf_core" in blocked.stderr
    run = subprocess.run(
        [sys.executable, str(out / BUNDLE_FILE), "--run-dir", str(tmp_path / "bundled")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    bundled = json.loads((tmp_path / "bundled" / "report.json").read_text())
    for key in ("val_loss", "val_bpb", "train_curve", "steps", "model_params"):
        value = bundled[key]
        if key == "train_curve":  # [step, loss, elapsed seconds]: the seconds differ
            value, expected = [row[:2] for row in value], [row[:2] for row in reference[key]]
        else:
            expected = reference[key]
        assert value == expected, key
    assert bundled["pre_quant"]["val_bpb"] == reference["pre_quant"]["val_bpb"]
    assert bundled["artifact"]["model_bytes"] == reference["artifact"]["model_bytes"]
    # The run counts its own file as the shipped code, the way the bundle reported it.
    assert bundled["artifact"]["code_bytes"] == summary["code"]["code_bytes"]
    assert f"final val_loss:{reference['val_loss']:.8f} val_bpb:{reference['val_bpb']:.8f}" in run.stdout

    # The record folder can then be filled in from that run.
    filled = bundle(tiny(), catalog(), tmp_path / "filled", reports=[tmp_path / "bundled"], author="A. Golfer", github_id="agolfer")
    submission = json.loads((tmp_path / "filled" / "submission.json").read_text())
    assert submission["val_bpb"] == reference["val_bpb"] and submission["val_loss"] == reference["val_loss"]
    assert submission["seed_results"]["1337"]["artifact_bytes"] == reference["artifact"]["model_bytes"] + filled["code"]["code_bytes"]
    assert (submission["author"], submission["github_id"]) == ("A. Golfer", "agolfer")
    # The budget verdict then uses the run's compressed model instead of the payload estimate.
    assert filled["measured_model_bytes"] == reference["artifact"]["model_bytes"]
    assert filled["total_bytes"] == reference["artifact"]["model_bytes"] + filled["code"]["code_bytes"]


def test_settings_can_be_overridden_at_run_time(tiny_bundle, tmp_path):
    out, _ = tiny_bundle
    run = subprocess.run(
        [sys.executable, str(out / BUNDLE_FILE), "--set", "train.iterations=oops"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2 and "error: " in run.stderr and "train.iterations: expected int" in run.stderr


# ---------------------------------------------------------------------------------------------
# What it holds
# ---------------------------------------------------------------------------------------------


def test_it_imports_nothing_of_golf_and_leaves_out_what_a_run_never_needs(tiny_bundle):
    out, summary = tiny_bundle
    text = (out / BUNDLE_FILE).read_text()
    sources = embedded_sources(text)
    assert list(sources) == summary["modules"] and "_golf.train" in sources
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) else []
            for module in modules:
                assert module.split(".")[0] not in ("golf_core", "plugins", "cli"), f"{name} imports {module}"
    assert not re.search(r"^\s*(from|import)\s+(golf_core|plugins|cli)\b", text, re.M)
    for excluded in EXCLUDED_AT_RUNTIME:
        assert bundle_name(excluded) not in sources
    assert not [m for m in sources if m.startswith("_golf.plugins.")]  # tiny enables no technique


def test_an_enabled_technique_ships_its_code_and_a_disabled_one_does_not():
    with_it, _ = render_train_gpt(tiny(enable=["smear_gate"]), catalog())
    without, _ = render_train_gpt(tiny(), catalog())
    switched_off, _ = render_train_gpt(tiny(enable=["smear_gate"], disable=["smear_gate"]), catalog())
    assert {"_golf.plugins.smear_gate", "_golf.plugins.smear_gate.module"} <= set(embedded_sources(with_it))
    assert not [m for m in embedded_sources(without) if "smear_gate" in m]
    assert switched_off == without

    def counted(text: str, tmp: Path) -> int:
        tmp.write_text(text)
        return counted_code_bytes([tmp])["code_bytes"]

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        assert counted(with_it, Path(d) / "a.py") > counted(without, Path(d) / "b.py") + 500


def test_record_folder_files(tiny_bundle):
    out, summary = tiny_bundle
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "requirements.txt", "submission.json", "train_gpt.py"]
    submission = json.loads((out / "submission.json").read_text())
    for key in ("author", "github_id", "name", "blurb", "date", "val_loss", "val_bpb", "bytes_total", "bytes_code"):
        assert key in submission
    assert submission["bytes_code"] == summary["code"]["code_bytes"] and submission["val_bpb"] is None
    requirements = (out / "requirements.txt").read_text()
    for package in ("torch", "numpy", "sentencepiece", "brotli", "pluggy"):
        assert re.search(rf"^{package}\b", requirements, re.M)
    readme = (out / "README.md").read_text()
    assert "torchrun --standalone --nproc_per_node=" in readme and "[train]\niterations = 3" in readme
    assert f"{summary['code']['code_bytes']:,}" in readme
    assert summary["code"]["code_bytes"] == counted_code_bytes([out / BUNDLE_FILE])["code_bytes"]
    assert summary["code"]["raw_bytes"] == len((out / BUNDLE_FILE).read_bytes())


def test_readme_credits_the_enabled_techniques(tmp_path):
    bundle(tiny(enable=["smear_gate", "min_lr"]), catalog(), tmp_path / "rec")
    readme = (tmp_path / "rec" / "README.md").read_text()
    smear = catalog().get("smear_gate").cls
    row = next(line for line in readme.splitlines() if line.startswith("| smear_gate |"))
    assert f"#{smear.origin_pr}" in row and smear.credits in row and smear.summary() in row
    assert "| min_lr | optim |" in readme and "[techniques.smear_gate]" in readme


# ---------------------------------------------------------------------------------------------
# Budget, CLI, failures
# ---------------------------------------------------------------------------------------------


def test_over_budget_is_reported(tmp_path):
    summary = bundle(tiny("artifact.budget_bytes=10000"), catalog(), tmp_path / "small")
    assert not summary["within_budget"] and summary["headroom_bytes"] < 0
    assert summary["total_bytes"] == summary["estimate"]["model_bytes"] + summary["code"]["code_bytes"]
    result = CliRunner().invoke(cli, ["bundle", str(TINY), "-o", str(tmp_path / "cli"), *[a for o in FAST for a in ("--set", o)], "--set", "artifact.budget_bytes=10000"])
    assert result.exit_code == 1, result.output
    assert "OVER BUDGET" in result.output and "code counted" in result.output and (tmp_path / "cli" / BUNDLE_FILE).is_file()


def test_cli_bundle_fits(tmp_path):
    result = CliRunner().invoke(cli, ["bundle", str(TINY), "-o", str(tmp_path / "ok"), "--set", "train.iterations=3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["within_budget"] and summary["code"]["code_bytes"] < summary["code"]["raw_bytes"]


def test_refuses_an_existing_folder_unless_overwrite(tiny_bundle, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(GolfError, match="already exists.*--overwrite"):
        bundle(tiny(), catalog(), tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").exists()
    bundle(tiny(), catalog(), tmp_path / "taken", overwrite=True)
    assert not (tmp_path / "taken" / "keep.txt").exists() and (tmp_path / "taken" / BUNDLE_FILE).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(GolfError, match="not found"):
        bundle(tiny(), catalog(), tmp_path / "x", reports=[tmp_path / "no-such-run"])


@pytest.mark.skipif(not PR1855.is_file(), reason="stacks/pr1855.toml not written yet")
def test_pr1855_bundle_bytes_next_to_the_records(tmp_path):
    stack = resolve(PR1855, catalog())
    text, _ = render_train_gpt(stack, catalog())
    (tmp_path / BUNDLE_FILE).write_text(text)
    code = counted_code_bytes([tmp_path / BUNDLE_FILE])
    print(f"\npr1855 bundle: counted code {code['code_bytes']:,} B (raw {code['raw_bytes']:,} B); record #1855: {RECORD_1855_CODE_BYTES:,} B")
    sources = embedded_sources(text)
    for name in stack.techniques:
        assert bundle_name(catalog().get(name).cls.__module__) in sources, name
