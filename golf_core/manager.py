"""A fresh plugin manager per run: core defaults plus the stack's techniques, checked.

Registration order matters: pluggy calls the *last* registered implementation first. The core
defaults are registered first (and their firstresult implementations are ``trylast``), then the
enabled techniques in *reverse* stack order, so that "every plugin" hooks run in stack order
with the defaults last. Checks, each a :class:`~golf_core.errors.GolfError`:

1. ``check_pending()``: a ``golf_*`` method that matches no hook (a typo) fails loudly;
2. at most one non-default implementation of each firstresult hook (pluggy would silently pick
   one); wrappers (``wrapper=True``) decorate rather than replace and are exempt;
3. ``requires`` / ``conflicts`` between the enabled techniques hold.

``GOLF_TRACE_HOOKS=1`` prints every hook call and result (pluggy's tracing), for debugging.
"""

from __future__ import annotations

import os
import sys

import pluggy

from golf_core import hookspecs
from golf_core.catalog import Catalog
from golf_core.errors import GolfError
from golf_core.stack import ResolvedStack, check_relations
from golf_core.technique import Technique


def _firstresult_conflicts(pm: pluggy.PluginManager) -> list[str]:
    problems = []
    for hook_name in hookspecs.FIRSTRESULT_HOOKS:
        caller = getattr(pm.hook, hook_name)
        owners = [
            pm.get_name(impl.plugin)
            for impl in caller.get_hookimpls()
            if not impl.wrapper and not impl.hookwrapper and not getattr(impl.plugin, "core_default", False)
        ]
        if len(owners) > 1:
            problems.append(
                f"{hook_name} is provided by {', '.join(sorted(owners))}; only one technique may replace it, disable the others"
            )
    return problems


def _unmarked_hook_methods(pm: pluggy.PluginManager) -> list[str]:
    # check_pending() only sees methods marked @hookimpl; a golf_* method without the marker
    # would silently never run.
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    return [
        f"technique '{pm.get_name(plugin)}': {name} is not marked @hookimpl, so it would never be called; "
        "decorate it with @hookimpl (from golf_core import hookimpl)"
        for plugin in pm.get_plugins()
        if isinstance(plugin, Technique)
        for name in type(plugin).hook_names()
        if not hasattr(getattr(type(plugin), name), marker)
    ]


def make_plugin_manager(
    stack: ResolvedStack,
    catalog: Catalog,
    extra_plugins: list[Technique] = (),  # type: ignore[assignment]
) -> pluggy.PluginManager:
    """Build and check the plugin manager for one run of ``stack``.

    ``extra_plugins`` are instances registered after the stack's techniques (they run first);
    tests use it to register a throwaway plugin.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for entry in catalog.defaults():
        pm.register(entry.cls(stack.default_params[entry.name]), name=entry.name)
    for name in reversed(list(stack.techniques)):
        cls = catalog.get(name).cls
        pm.register(cls(stack.techniques[name]), name=name)
    for plugin in extra_plugins:
        pm.register(plugin, name=getattr(plugin, "name", None) or None)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise GolfError(f"plugin {exc.plugin!r}: {exc}; see docs/hooks.md for the hook names") from None
    problems = _unmarked_hook_methods(pm) + _firstresult_conflicts(pm) + check_relations(list(stack.techniques), catalog)
    if problems:
        raise GolfError("; ".join(problems))
    if os.environ.get("GOLF_TRACE_HOOKS") == "1":
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[golf hooks] {msg}"))
        pm.enable_tracing()
    return pm


def enabled_plugins(pm: pluggy.PluginManager) -> list[Technique]:
    """Registered technique instances in stack order, core defaults last."""
    registered = [p for _, p in pm.list_name_plugin() if isinstance(p, Technique)]
    techniques = [p for p in reversed(registered) if not p.core_default]
    return techniques + [p for p in registered if p.core_default]
