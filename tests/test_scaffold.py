"""``golf new``: every stage's scaffold passes its own test, loads through --plugins-dir and does what its hook says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cli import cli
from golf_core.catalog import load_catalog
from golf_core.context import RunContext
from golf_core.errors import GolfError
from golf_core.manager import make_plugin_manager
from golf_core.model.gpt import softcapped_cross_entropy
from golf_core.model.spec import ModelSpec
from golf_core.quant.int8 import quantize_state_dict_int8
from golf_core.scaffold import SCAFFOLD_STAGES, default_plugins_dir, register_distribution, scaffold
from golf_core.stack import resolve
from golf_core.testing import MICRO_OVERRIDES


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """One standalone distribution per stage, scaffolded outside the repository."""
    root = tmp_path_factory.mktemp("dists")
    return {stage: scaffold(f"my_{stage}", stage, root) for stage in SCAFFOLD_STAGES}


def _subprocess_env(pythonpath: list[Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GOLF_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _pytest(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


# ---------------------------------------------------------------------------------------------
# What is generated
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", SCAFFOLD_STAGES)
def test_a_distribution_outside_the_repo(dists, stage):
    result = dists[stage]
    name = f"my_{stage}"
    assert result.layout == "distribution" and result.path.name == f"golf-my-{stage}" and result.module == f"golf_{name}"
    names = {p.relative_to(result.path).as_posix() for p in result.files}
    assert names == {"pyproject.toml", "README.md", f"golf_{name}/__init__.py", f"tests/test_{name}.py"}
    pyproject = (result.path / "pyproject.toml").read_text()
    assert '[project.entry-points."golf.plugins"]' in pyproject
    assert f'{name} = "golf_{name}:{result.class_name}"' in pyproject
    readme = (result.path / "README.md").read_text()
    assert "| name | type | default | help |" in readme and f"[techniques.{name}]" in readme and "pip install -e ." in readme
    source = (result.path / f"golf_{name}" / "__init__.py").read_text()
    assert "@hookimpl" in source and "class Params" in source and f'stage = "{stage}"' in source
    assert not list(result.path.parent.glob(".*golf-new*")), "a temporary folder was left behind"


def test_the_readme_table_is_the_params(dists):
    readme = (dists["optim"].path / "README.md").read_text()
    assert "| warmup_frac | float | 0.02 | fraction of training progress over which the multiplier ramps up |" in readme
    assert "warmup_frac = 0.02\nstart = 0.1" in readme


# ---------------------------------------------------------------------------------------------
# The generated tests pass as generated
# ---------------------------------------------------------------------------------------------


def test_every_generated_test_passes_once_installed(dists, tmp_path):
    site = tmp_path / "site"
    pythonpath: list[Path] = []
    for result in dists.values():
        pythonpath += register_distribution(result.path, site)
    tests = [str(r.path / "tests") for r in dists.values()]
    run = _pytest(tests, tmp_path, _subprocess_env(list(dict.fromkeys(pythonpath))))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout and "error" not in run.stdout.lower()


def test_a_plugin_in_the_plugins_folder_passes_its_test(tmp_path):
    # A stand-in for the repository's plugins/ folder, first on the path: the catalog finds the new
    # plugin there as a built-in, exactly as it would in plugins/.
    plugins = tmp_path / "checkout" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "__init__.py").write_text('"""Built-in techniques."""\n')
    result = scaffold("my_warmup", "optim", plugins, layout="package")
    assert result.layout == "package" and result.module == "plugins.my_warmup" and result.path == plugins / "my_warmup"
    assert sorted(p.name for p in result.files) == ["README.md", "__init__.py", "test_my_warmup.py"]
    assert "python -m pytest plugins/my_warmup -q" in (result.path / "README.md").read_text()
    run = _pytest([str(result.path)], tmp_path, _subprocess_env([tmp_path / "checkout"]))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_the_default_destination_is_the_repositorys_plugins_folder():
    import plugins

    assert default_plugins_dir() == Path(plugins.__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# Loaded through --plugins-dir: listed, and enabling it changes the run as its hook says
# ---------------------------------------------------------------------------------------------


def _run_parts(result, overrides=()):
    catalog = load_catalog(plugins_dirs=[result.path])
    stack = resolve(None, catalog, overrides=[*MICRO_OVERRIDES, *overrides], enable=[result.name])
    pm = make_plugin_manager(stack, catalog)
    ctx = RunContext(stack=stack, device=torch.device("cpu"), pm=pm, log=lambda msg, console=True: None)
    return catalog, stack, pm, ctx


def _build(pm, ctx, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec.from_config(ctx.cfg.model)
    spec.loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
    pm.hook.golf_model_spec(spec=spec, ctx=ctx)
    model = pm.hook.golf_build_model(spec=spec, ctx=ctx)
    pm.hook.golf_patch_model(model=model, ctx=ctx)
    return model


@pytest.mark.parametrize("stage", SCAFFOLD_STAGES)
def test_found_through_plugins_dir_and_listed(dists, stage):
    result = dists[stage]
    entry = load_catalog(plugins_dirs=[result.path]).get(result.name)
    assert entry.source == "plugins-dir" and entry.cls.stage == stage and entry.cls.__name__ == result.class_name
    runner = CliRunner()
    listed = runner.invoke(cli, ["--plugins-dir", str(result.path), "list", "--stage", stage])
    assert listed.exit_code == 0, listed.output
    assert any(line.split()[:2] == [result.name, stage] for line in listed.output.splitlines())
    shown = runner.invoke(cli, ["--plugins-dir", str(result.path), "show", result.name])
    assert shown.exit_code == 0 and "PARAM" in shown.output


def test_model_scaffold_adds_its_scale_to_the_model(dists):
    _, _, pm, ctx = _run_parts(dists["model"], ["techniques.my_model.init=0.5"])
    model = _build(pm, ctx)
    (module,) = model.embed_transforms
    assert torch.equal(module.scale.detach(), torch.full((64,), 0.5))
    ids = torch.randint(0, 1024, (1, 8))
    x = model.tok_emb(ids)
    torch.testing.assert_close(module(x, ids), x * 0.5)
    assert [n for n, _ in model.named_parameters() if n.startswith("embed_transforms")] == ["embed_transforms.0.scale"]


def test_optim_scaffold_ramps_the_schedule(dists):
    overrides = ["techniques.my_optim.warmup_frac=0.1", "techniques.my_optim.start=0.25", "techniques.warmdown.warmdown_frac=0.5"]
    _, _, pm, ctx = _run_parts(dists["optim"], overrides)
    schedule = pm.hook.golf_lr_schedule(ctx=ctx)
    assert schedule(0.0) == pytest.approx(0.25) and schedule(0.05) == pytest.approx(0.625)
    assert schedule(0.1) == pytest.approx(1.0) and schedule(0.8) == pytest.approx(0.4)


def test_loss_scaffold_smooths_the_loss(dists):
    _, _, pm, ctx = _run_parts(dists["loss"], ["techniques.my_loss.eps=0.2"])
    loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
    logits, targets = torch.randn(4, 9) * 10, torch.randint(0, 9, (4,))
    capped = 30.0 * torch.tanh(logits / 30.0)
    expected = 0.8 * softcapped_cross_entropy(logits, targets, 30.0) + 0.2 * (-torch.log_softmax(capped, -1).mean())
    torch.testing.assert_close(loss_fn(logits, targets, 30.0), expected)


def test_quant_scaffold_refines_int8_rows(dists):
    _, _, pm, ctx = _run_parts(dists["quant"])
    model = nn.Linear(256, 300)
    qstate = quantize_state_dict_int8(model.state_dict())
    error = lambda: float(((model.weight.detach() - qstate.entries["weight"].dequantize()) ** 2).sum())  # noqa: E731
    before = error()
    pm.hook.golf_refine_quant(qstate=qstate, model=model, calib=None, ctx=ctx)
    assert qstate.entries["weight"].route == "int8 per-row + my_quant" and error() < before


def test_eval_scaffold_returns_its_adapter(dists):
    _, _, pm, ctx = _run_parts(dists["eval"], ["techniques.my_eval.temperature=0.5"])
    (adapter,) = [a for a in pm.hook.golf_eval_adapters(model=None, ctx=ctx) if a is not None]
    assert adapter.name == "my_eval" and adapter.changes_distribution
    logits = torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(adapter.adjust_logprobs(torch.log_softmax(logits, -1), None, None), torch.log_softmax(logits / 0.5, -1))


# ---------------------------------------------------------------------------------------------
# Names and failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("My-Gate", "not a valid technique name.*'my_gate'"),
        ("2fast", "not a valid technique name"),
        ("double__underscore", "not a valid technique name"),
        ("class", "Python keyword"),
        ("match", "Python keyword"),
        ("smear_gate", "already a technique \\(builtin: plugins/smear_gate\\)"),
        ("muon", "already a technique \\(core"),
        ("technique", "shadows golf's own"),
    ],
)
def test_bad_names_are_refused_with_one_line_and_nothing_written(tmp_path, name, message):
    with pytest.raises(GolfError, match=message) as err:
        scaffold(name, "model", tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_name_taken_in_a_plugins_dir_or_an_existing_folder_is_refused(dists, tmp_path):
    with pytest.raises(GolfError, match="already a technique \\(plugins-dir"):
        scaffold("my_loss", "loss", tmp_path, plugins_dirs=[dists["loss"].path])
    (tmp_path / "golf-taken").mkdir()
    with pytest.raises(GolfError, match="already exists"):
        scaffold("taken", "model", tmp_path)


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    import golf_core.scaffold as scaffold_module

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(scaffold_module.os, "rename", refuse)
    with pytest.raises(GolfError, match="cannot write .*Permission denied"):
        scaffold("doomed", "eval", tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []  # the folders it made are gone too


def test_golf_new_cli(tmp_path):
    runner = CliRunner()
    made = runner.invoke(cli, ["new", "cli_gate", "--stage", "quant", "--dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    assert f"created {tmp_path / 'golf-cli-gate'} (distribution: golf_cli_gate.CliGate, stage quant)" in made.output
    assert "pip install -e ." in made.output and (tmp_path / "golf-cli-gate" / "golf_cli_gate" / "__init__.py").is_file()
    refused = runner.invoke(cli, ["new", "Bad Name", "--dir", str(tmp_path)])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and refused.output.startswith("error: 'Bad Name'")
