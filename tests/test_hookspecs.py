"""Meta-tests: every hook is documented in docs/hooks.md with its exact signature, and tested."""

from __future__ import annotations

import ast
import functools
import inspect
import re
import warnings
from pathlib import Path

import pluggy
import pytest

from golf_core import hookspecs

REPO = Path(__file__).resolve().parents[1]
HOOKS_MD = REPO / "docs" / "hooks.md"
HEADING = re.compile(r"^##\s+(golf_\w+)\((.*)\)\s*$")


def all_hookspecs() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {name: fn for name, fn in vars(hookspecs).items() if name.startswith("golf_") and hasattr(fn, marker)}


def spec_args(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


@functools.cache
def documented_hooks() -> dict[str, list[str]]:
    headings: dict[str, list[str]] = {}
    for line in HOOKS_MD.read_text(encoding="utf-8").splitlines():
        match = HEADING.match(line)
        if match:
            name, args = match.groups()
            assert name not in headings, f"docs/hooks.md has two headings for {name}"
            headings[name] = [a.strip() for a in args.split(",") if a.strip()]
    return headings


@functools.cache
def hook_test_names() -> frozenset[str]:
    """Names of every test function under tests/ and plugins/, read from the files' ASTs."""
    names: set[str] = set()
    for root in (REPO / "tests", REPO / "plugins"):
        for path in root.rglob("test_*.py"):
            with warnings.catch_warnings():  # another file's escape-sequence warnings are its own tests' business
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            names.update(
                node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_hook_")
            )
    return frozenset(names)


def test_hookspecs_module_declares_hooks() -> None:
    specs = all_hookspecs()
    assert len(specs) >= 15
    assert all(name.startswith("golf_") for name in specs)
    for name, fn in specs.items():
        assert inspect.getdoc(fn), f"{name} has no docstring"
        assert "Convention" in inspect.getdoc(fn), f"{name}'s docstring does not state its calling convention"


@pytest.mark.parametrize("name", sorted(all_hookspecs()))
def test_every_hook_has_a_heading_with_its_exact_signature(name: str) -> None:
    documented = documented_hooks()
    assert name in documented, f"docs/hooks.md has no '## {name}(...)' heading"
    assert documented[name] == spec_args(all_hookspecs()[name]), (
        f"docs/hooks.md documents {name}({', '.join(documented[name])}) but the spec is "
        f"{name}({', '.join(spec_args(all_hookspecs()[name]))})"
    )


def test_docs_have_no_headings_for_hooks_that_do_not_exist() -> None:
    assert set(documented_hooks()) <= set(all_hookspecs())


@pytest.mark.parametrize("name", sorted(all_hookspecs()))
def test_every_hook_has_a_test(name: str) -> None:
    short = name.removeprefix("golf_")
    tests = hook_test_names()
    assert f"test_hook_{short}" in tests or f"test_hook_{name}" in tests, (
        f"no test function named test_hook_{short} under tests/ or plugins/"
    )


def test_firstresult_hooks_list_matches_the_specs() -> None:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    declared = {name for name, fn in all_hookspecs().items() if getattr(fn, marker).get("firstresult")}
    assert set(hookspecs.FIRSTRESULT_HOOKS) == declared
    assert len(hookspecs.FIRSTRESULT_HOOKS) == len(set(hookspecs.FIRSTRESULT_HOOKS))


def test_specs_load_into_a_plugin_manager() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in all_hookspecs():
        caller = getattr(pm.hook, name)
        assert caller.spec is not None
        assert caller.spec.argnames == tuple(spec_args(all_hookspecs()[name]))


def test_every_firstresult_hook_has_a_trylast_core_default() -> None:
    from golf_core.testing import make_pm

    pm = make_pm()
    for name in hookspecs.FIRSTRESULT_HOOKS:
        impls = getattr(pm.hook, name).get_hookimpls()
        defaults = [i for i in impls if getattr(i.plugin, "core_default", False)]
        assert defaults, f"{name} has no core default"
        assert all(i.trylast for i in defaults), f"the core default of {name} is not trylast"
