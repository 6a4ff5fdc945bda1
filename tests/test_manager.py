"""The plugin manager: stack order, trylast defaults, firstresult clashes, wrappers, typos, relations."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import technique_source

from golf_core.catalog import load_catalog
from golf_core.errors import GolfError
from golf_core.manager import enabled_plugins, make_plugin_manager
from golf_core.stack import StackError, resolve
from golf_core.testing import MICRO_OVERRIDES, make_ctx

HEADER = """
@hookimpl
def golf_report_header(self, ctx):
    return [self.name]
"""

SCHEDULE = """
@hookimpl
def golf_lr_schedule(self, ctx):
    return lambda progress: {value}
"""


def _setup(make_plugins_dir, sources: dict[str, str], enable: list[str], path: Path | None = None):
    catalog = load_catalog([make_plugins_dir(sources)])
    # A warm-down over the second half of training, so the default's shape is known here.
    overrides = [*MICRO_OVERRIDES, "techniques.warmdown.warmdown_frac=0.5"]
    stack = resolve(path, catalog, overrides=overrides, enable=enable)
    pm = make_plugin_manager(stack, catalog)
    return stack, catalog, pm


def test_every_plugin_hooks_run_in_stack_order(make_plugins_dir) -> None:
    sources = {f"{n}.py": technique_source(n, HEADER) for n in ("alpha", "beta", "gamma")}
    stack, _, pm = _setup(make_plugins_dir, sources, enable=["gamma", "alpha", "beta"])
    assert list(stack.techniques) == ["gamma", "alpha", "beta"]
    assert pm.hook.golf_report_header(ctx=make_ctx(stack, pm=pm)) == [["gamma"], ["alpha"], ["beta"]]
    names = [p.name for p in enabled_plugins(pm)]
    assert names[:3] == ["gamma", "alpha", "beta"]
    assert all(p.core_default for p in enabled_plugins(pm)[3:])


def test_stack_order_follows_the_extends_chain(make_plugins_dir, tmp_path: Path) -> None:
    sources = {f"{n}.py": technique_source(n, HEADER) for n in ("alpha", "beta")}
    (tmp_path / "parent.toml").write_text("schema = 1\n[techniques.beta]\n")
    (tmp_path / "child.toml").write_text('schema = 1\nextends = "parent.toml"\n[techniques.alpha]\n')
    stack, _, pm = _setup(make_plugins_dir, sources, enable=[], path=tmp_path / "child.toml")
    assert pm.hook.golf_report_header(ctx=make_ctx(stack, pm=pm)) == [["beta"], ["alpha"]]


def test_trylast_default_is_overridden_by_an_enabled_technique(make_plugins_dir) -> None:
    sources = {"half.py": technique_source("half", SCHEDULE.format(value=0.5), stage="optim")}
    stack, _, pm = _setup(make_plugins_dir, sources, enable=["half"])
    schedule = pm.hook.golf_lr_schedule(ctx=make_ctx(stack, pm=pm))
    assert schedule(0.0) == 0.5 and schedule(0.99) == 0.5
    # Without it, the core default answers (warm-down reaches 0 at the end).
    stack_default, catalog, _ = _setup(make_plugins_dir, sources, enable=[])
    pm_default = make_plugin_manager(stack_default, catalog)
    default = pm_default.hook.golf_lr_schedule(ctx=make_ctx(stack_default, pm=pm_default))
    assert default(0.0) == 1.0 and default(0.75) == 0.5 and default(1.0) == 0.0


def test_two_techniques_replacing_one_firstresult_hook_is_an_error(make_plugins_dir) -> None:
    sources = {
        "one.py": technique_source("one", SCHEDULE.format(value=0.1), stage="optim"),
        "two.py": technique_source("two", SCHEDULE.format(value=0.2), stage="optim"),
    }
    catalog = load_catalog([make_plugins_dir(sources)])
    stack = resolve(None, catalog, overrides=list(MICRO_OVERRIDES), enable=["one", "two"])
    with pytest.raises(GolfError) as info:
        make_plugin_manager(stack, catalog)
    message = str(info.value)
    assert "golf_lr_schedule" in message and "one" in message and "two" in message
    assert "\n" not in message


def test_wrapper_implementations_are_allowed_and_decorate(make_plugins_dir) -> None:
    floor = """
    @hookimpl(wrapper=True)
    def golf_lr_schedule(self, ctx):
        inner = yield
        return lambda progress: max(inner(progress), 0.25)
    """
    sources = {
        "half.py": technique_source("half", SCHEDULE.format(value=0.5), stage="optim"),
        "floor.py": technique_source("floor", floor, stage="optim"),
    }
    stack, _, pm = _setup(make_plugins_dir, sources, enable=["half", "floor"])
    ctx = make_ctx(stack, pm=pm)
    assert pm.hook.golf_lr_schedule(ctx=ctx)(0.3) == 0.5
    # The wrapper alone decorates the core default: warm-down to 0 is floored at 0.25.
    stack2, catalog2, _ = _setup(make_plugins_dir, sources, enable=["floor"])
    pm2 = make_plugin_manager(stack2, catalog2)
    assert pm2.hook.golf_lr_schedule(ctx=make_ctx(stack2, pm=pm2))(1.0) == 0.25


def test_check_pending_catches_a_misspelled_hook(make_plugins_dir) -> None:
    typo = """
    @hookimpl
    def golf_model_specs(self, spec, ctx):
        pass
    """
    catalog = load_catalog([make_plugins_dir({"typo.py": technique_source("typo", typo)})])
    stack = resolve(None, catalog, overrides=list(MICRO_OVERRIDES), enable=["typo"])
    with pytest.raises(GolfError, match="golf_model_specs"):
        make_plugin_manager(stack, catalog)


def test_a_hook_method_without_hookimpl_is_an_error(make_plugins_dir) -> None:
    unmarked = """
    def golf_model_spec(self, spec, ctx):
        spec.rope_dims = 2
    """
    catalog = load_catalog([make_plugins_dir({"bare.py": technique_source("bare", unmarked)})])
    stack = resolve(None, catalog, overrides=list(MICRO_OVERRIDES), enable=["bare"])
    with pytest.raises(GolfError, match="golf_model_spec is not marked @hookimpl"):
        make_plugin_manager(stack, catalog)


def test_requires_and_conflicts(make_plugins_dir) -> None:
    sources = {
        "base.py": technique_source("base", HEADER),
        "needy.py": technique_source("needy", HEADER, attrs='requires = ("base",)'),
        "rival.py": technique_source("rival", HEADER, attrs='conflicts = ("base",)'),
    }
    catalog = load_catalog([make_plugins_dir(sources)])
    with pytest.raises(StackError, match="requires 'base'"):
        resolve(None, catalog, enable=["needy"])
    resolve(None, catalog, enable=["needy", "base"])  # satisfied
    with pytest.raises(StackError) as info:
        resolve(None, catalog, enable=["rival", "base"])
    assert len(info.value.problems) == 1  # a conflict is reported once, not once per side
    assert "conflicts with 'base'" in str(info.value)


def test_each_run_gets_a_fresh_manager_with_its_own_params(make_plugins_dir) -> None:
    body = """
    @hookimpl
    def golf_report_header(self, ctx):
        return [f"level={self.params.level}"]
    """
    catalog = load_catalog([make_plugins_dir({"knob.py": technique_source("knob", body, params='level: int = param(1, "a level")')})])
    stacks = [resolve(None, catalog, overrides=[f"techniques.knob.level={n}"], enable=["knob"]) for n in (3, 4)]
    pms = [make_plugin_manager(s, catalog) for s in stacks]
    assert pms[0] is not pms[1]
    assert pms[0].hook.golf_report_header(ctx=make_ctx(stacks[0], pm=pms[0])) == [["level=3"]]
    assert pms[1].hook.golf_report_header(ctx=make_ctx(stacks[1], pm=pms[1])) == [["level=4"]]
