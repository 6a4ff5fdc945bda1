"""Stack files: loading, extends, overrides, strict validation, TOML output and diffs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from golf_core.catalog import load_catalog
from golf_core.config import CORE_SECTIONS
from golf_core.errors import GolfError
from golf_core.manager import make_plugin_manager
from golf_core.stack import MISSING, StackError, diff_stacks, dumps_toml, parse_override, resolve
from golf_core.testing import catalog as builtin_catalog

REPO = Path(__file__).resolve().parents[1]
STACKS = sorted((REPO / "stacks").glob("*.toml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def catalog():
    return builtin_catalog()


@pytest.mark.parametrize("path", STACKS, ids=[p.name for p in STACKS])
def test_every_shipped_stack_resolves_and_builds_a_plugin_manager(path: Path, catalog) -> None:
    stack = resolve(path, catalog)
    make_plugin_manager(stack, catalog)  # firstresult clashes, requires/conflicts, typos
    assert stack.name
    assert stack.meta.get("stack", {}).get("summary"), f"{path.name}: [stack] summary is missing"


def test_shipped_stacks_include_tiny_and_baseline() -> None:
    assert {"tiny.toml", "baseline.toml"} <= {p.name for p in STACKS}


def test_empty_stack_is_the_baseline_defaults(catalog) -> None:
    stack = resolve(None, catalog)
    assert stack.techniques == {}
    assert stack.core.model.num_layers == 9 and stack.core.model.model_dim == 512
    assert stack.core.artifact.budget_bytes == 16_000_000
    assert set(stack.default_params) == {e.name for e in catalog.defaults()}


def test_extends_chain_and_child_overrides(tmp_path: Path, catalog) -> None:
    write(tmp_path / "grand.toml", "schema = 1\n[stack]\nname = 'grand'\n[model]\nnum_layers = 4\nmodel_dim = 64\n[train]\niterations = 7\n[techniques.muon]\nmatrix_lr = 0.01\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "parent.toml", "extends = '../grand.toml'\n[model]\nnum_layers = 6\n[techniques.muon]\nmomentum = 0.9\n")
    child = write(tmp_path / "sub" / "child.toml", "extends = 'parent.toml'\n[stack]\nname = 'child'\n[train]\niterations = 9\n")
    stack = resolve(child, catalog)
    assert [p.name for p in stack.chain] == ["grand.toml", "parent.toml", "child.toml"]
    assert stack.core.model.num_layers == 6  # parent beats grandparent
    assert stack.core.model.model_dim == 64  # inherited
    assert stack.core.train.iterations == 9  # child beats both
    assert stack.default_params["muon"].matrix_lr == 0.01 and stack.default_params["muon"].momentum == 0.9
    assert stack.name == "child"  # [stack] is not inherited
    assert stack.origins["train.iterations"] == str(child.resolve())


def test_enabled_false_drops_an_inherited_technique(tmp_path: Path, make_plugins_dir) -> None:
    from conftest import technique_source

    extra = load_catalog([make_plugins_dir({"alpha.py": technique_source("alpha"), "beta.py": technique_source("beta")})])
    write(tmp_path / "parent.toml", "[techniques.alpha]\n[techniques.beta]\n")
    child = write(tmp_path / "child.toml", "extends = 'parent.toml'\n[techniques.alpha]\nenabled = false\n")
    assert list(resolve(tmp_path / "parent.toml", extra).techniques) == ["alpha", "beta"]
    assert list(resolve(child, extra).techniques) == ["beta"]
    assert list(resolve(child, extra, enable=["alpha"]).techniques) == ["alpha", "beta"]
    assert list(resolve(tmp_path / "parent.toml", extra, disable=["beta"]).techniques) == ["alpha"]
    # --enable appends in the order given
    assert list(resolve(None, extra, enable=["beta", "alpha"]).techniques) == ["beta", "alpha"]


def test_extends_cycle_is_an_error(tmp_path: Path, catalog) -> None:
    write(tmp_path / "a.toml", "extends = 'b.toml'\n")
    write(tmp_path / "b.toml", "extends = 'a.toml'\n")
    with pytest.raises(GolfError, match=r"extends cycle: a\.toml -> b\.toml -> a\.toml"):
        resolve(tmp_path / "a.toml", catalog)
    write(tmp_path / "self.toml", "extends = 'self.toml'\n")
    with pytest.raises(GolfError, match="extends cycle"):
        resolve(tmp_path / "self.toml", catalog)


def test_missing_parent_and_missing_file(tmp_path: Path, catalog) -> None:
    child = write(tmp_path / "child.toml", "extends = 'nope.toml'\n")
    with pytest.raises(GolfError, match=r"child\.toml: extends: parent stack not found: .*nope\.toml"):
        resolve(child, catalog)
    with pytest.raises(GolfError, match="stack file not found"):
        resolve(tmp_path / "absent.toml", catalog)


def test_malformed_toml_names_file_and_line(tmp_path: Path, catalog) -> None:
    bad = write(tmp_path / "bad.toml", "schema = 1\n[train]\niterations = \n")
    with pytest.raises(GolfError) as info:
        resolve(bad, catalog)
    message = str(info.value)
    assert str(bad) in message and "line 3" in message and "\n" not in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[trian]\niterations = 3\n", "unknown table or key 'trian' (did you mean 'train'?)"),
        ("[train]\niteratons = 3\n", "train.iteratons: unknown key (did you mean 'iterations'?)"),
        ("[techniques.muonn]\n", "unknown technique 'muonn' (did you mean 'muon'?)"),
        ("[techniques.muon]\nmatrix_lrr = 0.1\n", "techniques.muon.matrix_lrr: unknown key (did you mean 'matrix_lr'?)"),
        ("[train]\niterations = 'many'\n", "train.iterations: expected int, got str 'many'"),
        ("[train]\niterations = 2.5\n", "train.iterations: expected int, got float 2.5"),
        ("[model]\ntie_embeddings = 1\n", "model.tie_embeddings: expected bool, got int 1"),
        ("[run]\ndevice = 'tpu'\n", "run.device: 'tpu' is not one of auto, cpu, cuda"),
        ("schema = 2\n", "this golf reads schema 1"),
        ("[techniques.muon]\nenabled = false\n", "'muon' is a core default and cannot be disabled"),
        ("[techniques.warmdown]\nwarmdown_frac = 1.5\n", "techniques.warmdown: warmdown_frac = 1.5 must lie in [0, 1]"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path: Path, catalog, text: str, expected: str) -> None:
    path = write(tmp_path / "s.toml", text)
    with pytest.raises(StackError) as info:
        resolve(path, catalog)
    assert len(info.value.problems) == 1
    assert expected in info.value.problems[0]
    assert str(path.resolve()) in info.value.problems[0]


def test_ints_are_accepted_for_floats(tmp_path: Path, catalog) -> None:
    stack = resolve(write(tmp_path / "s.toml", "[techniques.muon]\nmatrix_lr = 1\n"), catalog)
    assert stack.default_params["muon"].matrix_lr == 1.0 and isinstance(stack.default_params["muon"].matrix_lr, float)


def test_all_errors_are_reported_at_once(tmp_path: Path, catalog) -> None:
    path = write(
        tmp_path / "s.toml",
        "[trian]\n[train]\niteratons = 3\ntrain_seq_len = 'long'\n[techniques.muonn]\n[techniques.muon]\nmomentun = 0.9\n",
    )
    with pytest.raises(StackError) as info:
        resolve(path, catalog, overrides=["model.num_layerz=3"])
    problems = info.value.problems
    assert len(problems) == 6
    text = str(info.value)
    assert text.startswith("6 problems in the stack:")
    for fragment in ("'trian'", "iteratons", "train_seq_len", "'muonn'", "momentun", "num_layerz"):
        assert fragment in text
    assert any("--set model.num_layerz=3" in p for p in problems)  # an override names itself as the origin


@pytest.mark.parametrize(
    "assignment, key, value",
    [
        ("train.iterations=200", ["train", "iterations"], 200),
        ("techniques.muon.matrix_lr=3e-4", ["techniques", "muon", "matrix_lr"], 3e-4),
        ("model.tie_embeddings=false", ["model", "tie_embeddings"], False),
        ("artifact.code_files=['golf_core']", ["artifact", "code_files"], ["golf_core"]),
        ("run.device='cpu'", ["run", "device"], "cpu"),
        ("run.device=cpu", ["run", "device"], "cpu"),  # not TOML: taken as a string
        ("data.dataset = /tmp/x y", ["data", "dataset"], "/tmp/x y"),
        ("run.out_dir=", ["run", "out_dir"], ""),
    ],
)
def test_set_values_are_parsed_as_toml(assignment: str, key: list[str], value) -> None:
    assert parse_override(assignment) == (key, value)


@pytest.mark.parametrize("bad", ["train.iterations", "=3", "train..iterations=3"])
def test_malformed_set_is_an_error(bad: str) -> None:
    with pytest.raises(GolfError, match="--set"):
        parse_override(bad)


def test_set_applies_after_the_file_and_before_validation(tmp_path: Path, catalog) -> None:
    path = write(tmp_path / "s.toml", "[train]\niterations = 5\n")
    stack = resolve(path, catalog, overrides=["train.iterations=11", "techniques.brotli.quality=5"])
    assert stack.core.train.iterations == 11
    assert stack.default_params["brotli"].quality == 5
    with pytest.raises(StackError, match="expected int"):
        resolve(path, catalog, overrides=["train.iterations=eleven"])
    with pytest.raises(GolfError, match="'iterations' is a value, not a table"):
        resolve(path, catalog, overrides=["train.iterations.x=1"])


def test_enable_unknown_and_disable_core_default(catalog) -> None:
    with pytest.raises(StackError, match="unknown technique 'muonn'"):
        resolve(None, catalog, enable=["muonn"])
    with pytest.raises(StackError, match="core default and cannot be disabled"):
        resolve(None, catalog, disable=["int8_rowwise"])


def test_flat_is_explicit_and_round_trips_through_toml(tmp_path: Path, catalog) -> None:
    stack = resolve(REPO / "stacks" / "tiny.toml", catalog, overrides=["artifact.code_files=['golf_core']"])
    flat = stack.flat()
    assert set(CORE_SECTIONS) <= set(flat)
    for section, cls in CORE_SECTIONS.items():  # every value explicit
        assert set(flat[section]) == set(cls.__dataclass_fields__)
    text = dumps_toml(flat)
    assert tomllib.loads(text) == flat
    # The flattened file is itself a stack that resolves to the same thing.
    again = resolve(write(tmp_path / "flat.toml", text), catalog)
    assert again.flat() == flat
    assert diff_stacks(stack, again) == []


def test_dumps_toml_handles_awkward_values() -> None:
    data = {"a": {"s": 'quote " and \\ back', "f": 1e-8, "i": -3, "b": True, "l": [1.5, 2.0], "weird key": 1, "nested": {"x": []}}}
    assert tomllib.loads(dumps_toml(data)) == data
    with pytest.raises(GolfError, match="no null"):
        dumps_toml({"a": None})


def test_diff_lists_every_changed_key(tmp_path: Path, catalog) -> None:
    a = resolve(write(tmp_path / "a.toml", "[train]\niterations = 5\n[stack]\nname = 'a'\n"), catalog)
    b = resolve(write(tmp_path / "b.toml", "[train]\niterations = 6\n[techniques.muon]\nmomentum = 0.9\n"), catalog)
    rows = {key: (va, vb) for key, va, vb in diff_stacks(a, b)}
    assert rows == {
        "stack.name": ("a", MISSING),
        "train.iterations": (5, 6),
        "techniques.muon.momentum": (0.95, 0.9),
    }
    assert diff_stacks(a, a) == []
