"""The catalog: plugin anatomy of every built-in technique, --plugins-dir, entry points, name clashes."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest
from conftest import technique_source

from golf_core.catalog import ENTRY_POINT_GROUP, load_catalog, technique_classes_in
from golf_core.config import describe_fields
from golf_core.errors import GolfError
from golf_core.technique import STAGES, Technique

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").is_file())


def _technique(name: str) -> type[Technique]:
    module = importlib.import_module(f"plugins.{name}")
    classes = technique_classes_in(module)
    assert len(classes) == 1, f"plugins/{name} defines {len(classes)} Technique subclasses, must be exactly one"
    return classes[0]


def _check_params(cls: type[Technique], where: str) -> None:
    params = cls.Params
    assert dataclasses.is_dataclass(params), f"{where}: Params is not a dataclass"
    assert params.__dataclass_params__.frozen, f"{where}: Params must be @dataclass(frozen=True, kw_only=True)"
    for f in dataclasses.fields(params):
        assert f.metadata.get("help"), f"{where}: Params.{f.name} has no help text; use param(default, 'help')"
    instance = params()  # every field has a default
    hash(instance)  # frozen and hashable: sequences must be tuples
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate()  # the defaults are valid


def _hookimpls(cls: type[Technique]) -> list[str]:
    return [n for n in cls.hook_names() if hasattr(getattr(cls, n), "golf_impl")]


@pytest.mark.parametrize("name", PLUGIN_DIRS)
def test_plugin_package_anatomy(name: str) -> None:
    folder = REPO / "plugins" / name
    cls = _technique(name)
    where = f"plugins/{name}"
    assert cls.name == name, f"{where}: name '{cls.name}' must equal the folder name"
    assert cls.stage in STAGES, f"{where}: stage '{cls.stage}' is not one of {STAGES}"
    assert not cls.core_default
    doc = (cls.__doc__ or "").strip()
    assert doc and cls.summary(), f"{where}: the class needs a docstring whose first line says what it computes"
    assert isinstance(cls.origin_pr, int) and cls.origin_pr > 0, f"{where}: origin_pr must be the PR number"
    assert cls.credits.strip(), f"{where}: credits must name the authors"
    for other in (*cls.requires, *cls.conflicts):
        assert isinstance(other, str) and other != name
    assert isinstance(cls.requires, tuple) and isinstance(cls.conflicts, tuple)
    _check_params(cls, where)
    assert _hookimpls(cls), f"{where}: no @hookimpl golf_* method"
    assert (folder / f"test_{name}.py").is_file(), f"{where}: test_{name}.py is missing"
    readme = folder / "README.md"
    assert readme.is_file(), f"{where}: README.md is missing"
    rows = [
        {cell.strip().strip("`").strip() for cell in line.strip().strip("|").split("|")}
        for line in readme.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith("|")
    ]
    for field in describe_fields(cls.Params):
        assert any(field["name"] in row for row in rows), f"{where}/README.md has no parameter-table row for '{field['name']}'"


@pytest.mark.parametrize("name", PLUGIN_DIRS)
def test_plugin_test_file_has_a_micro_run(name: str) -> None:
    path = REPO / "plugins" / name / f"test_{name}.py"
    if not path.is_file():
        pytest.fail(f"plugins/{name}/test_{name}.py is missing")
    with warnings.catch_warnings():  # the plugin's own warnings surface in its own tests
        warnings.simplefilter("ignore")
        tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "") for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "run_micro" in calls, f"plugins/{name}/test_{name}.py has no end-to-end run_micro(...) test"


def test_core_defaults_follow_the_same_anatomy() -> None:
    catalog = load_catalog()
    defaults = catalog.defaults()
    assert {e.name for e in defaults} >= {"sequential_loader", "gpt", "muon", "newton_schulz", "warmdown", "softcap_ce", "int8_rowwise", "brotli"}
    for entry in defaults:
        cls = entry.cls
        assert entry.source == "core" and cls.core_default
        assert cls.summary() and cls.stage in STAGES
        _check_params(cls, entry.location)
        impls = [getattr(cls, n) for n in _hookimpls(cls)]
        assert impls and all(f.golf_impl.get("trylast") for f in impls), f"{cls.name}: core defaults must be trylast"


def test_builtin_plugins_are_all_in_the_catalog() -> None:
    catalog = load_catalog()
    builtins = {e.name: e for e in catalog if e.source == "builtin"}
    assert set(builtins) == set(PLUGIN_DIRS)
    for name, entry in builtins.items():
        assert entry.location == f"plugins/{name}" and entry.version


def test_plugins_dir_packages_and_files(make_plugins_dir) -> None:
    directory = make_plugins_dir(
        {
            "one_file.py": technique_source("one_file"),
            "a_package/__init__.py": "from .impl import APackage\n",
            "a_package/impl.py": technique_source("a_package"),
            "_private.py": "raise RuntimeError('helpers are not imported')\n",
            "test_one_file.py": "raise RuntimeError('tests are not imported')\n",
            "notes.txt": "not python\n",
        }
    )
    # The class must be defined in the package's __init__.py; one re-exported from a submodule
    # is not found (the rule that keeps "one package, one technique" checkable).
    with pytest.raises(GolfError, match="exactly one Technique subclass"):
        load_catalog([directory])
    (directory / "a_package" / "__init__.py").write_text(technique_source("a_package"))
    catalog = load_catalog([directory])
    extra = {e.name: e for e in catalog if e.source == "plugins-dir"}
    assert set(extra) == {"one_file", "a_package"}
    assert extra["one_file"].location == str(directory / "one_file.py")
    assert extra["a_package"].location == str(directory / "a_package")


def test_plugins_dir_errors(make_plugins_dir, tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="not a directory"):
        load_catalog([tmp_path / "nope"])
    broken = make_plugins_dir({"broken.py": "import not_a_module_anywhere\n"})
    with pytest.raises(GolfError, match=r"broken\.py: failed to import: ModuleNotFoundError"):
        load_catalog([broken])
    bad_stage = make_plugins_dir({"staged.py": technique_source("staged", stage="magic")})
    with pytest.raises(GolfError, match="stage 'magic' is not one of"):
        load_catalog([bad_stage])


def test_duplicate_technique_names_are_an_error(make_plugins_dir) -> None:
    twice = make_plugins_dir({"first.py": technique_source("same"), "second.py": technique_source("same")})
    with pytest.raises(GolfError, match=r"technique name 'same' is defined twice: .*first\.py and .*second\.py"):
        load_catalog([twice])
    shadow = make_plugins_dir({"muon.py": technique_source("muon")})
    with pytest.raises(GolfError, match="'muon' is defined twice"):
        load_catalog([shadow])


def test_unknown_name_has_a_did_you_mean() -> None:
    with pytest.raises(GolfError, match=r"unknown technique 'int8_rowise' \(did you mean 'int8_rowwise'\?\)"):
        load_catalog().get("int8_rowise")


def _fake_distribution(root: Path, module_source: str, target: str = "fakegolf_pkg:FakeTech") -> None:
    (root / "fakegolf_pkg").mkdir(parents=True)
    (root / "fakegolf_pkg" / "__init__.py").write_text(module_source)
    info = root / "fakegolf-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakegolf\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nfake_tech = {target}\n")


def test_entry_point_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, technique_source("fake_tech"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fakegolf_pkg", raising=False)
    assert "fake_tech" not in load_catalog()  # autoload is off in tests by default
    monkeypatch.delenv("GOLF_DISABLE_PLUGIN_AUTOLOAD")
    catalog = load_catalog()
    entry = catalog.get("fake_tech")
    assert (entry.source, entry.version, entry.location) == ("entry point", "1.2.3", "fakegolf")

    from click.testing import CliRunner

    from cli import cli

    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    assert re.search(r"fake_tech\s+entry point\s+1\.2\.3\s+fakegolf", result.output)


def test_broken_entry_point_names_its_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "raise ImportError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fakegolf_pkg", raising=False)
    monkeypatch.delenv("GOLF_DISABLE_PLUGIN_AUTOLOAD")
    with pytest.raises(GolfError, match=r"entry point 'fake_tech' \(fakegolf_pkg:FakeTech\) of fakegolf failed to import: boom"):
        load_catalog()
