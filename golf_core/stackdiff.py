"""Stack differences at the level a reviewer reads them.

:func:`golf_core.stack.diff_stacks` lists every flattened key that differs; that is exact but
hard to read when a technique appears (every one of its parameters shows up as ``(absent) -> v``).
:func:`diff` groups the same information the way a PR description talks about it:

* techniques **added** (with the parameters they run with) and **removed**;
* **parameters changed** of techniques both stacks run, core defaults (``muon``, ``warmdown``,
  ``brotli`` ...) included, as ``old -> new``;
* **core settings changed** (``[run]``, ``[data]``, ``[model]``, ``[train]``, ``[eval]``,
  ``[artifact]``);
* a change of the **order** of the techniques both run, within a stage (stack order is hook
  order; techniques of different stages never share an ordered hook list, so their relative
  order is not a difference).

``[stack]`` and ``[provenance]`` describe a file rather than configure a run; they are compared
only with ``include_meta=True``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from golf_core.config import CORE_SECTIONS, FREEFORM_SECTIONS
from golf_core.stack import ResolvedStack, flatten_keys


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _params(params: Any) -> dict[str, Any]:
    return {k: _plain(v) for k, v in dataclasses.asdict(params).items()}


@dataclass
class StackDiff:
    """The grouped difference from stack ``a`` to stack ``b``."""

    a: str
    b: str
    added: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    core: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    order: tuple[list[str], list[str]] | None = None
    meta: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """No setting differs ([stack]/[provenance] are documentation and do not count)."""
        return not (self.added or self.removed or self.changed or self.core or self.order)

    def count(self) -> int:
        """How many reviewer-level settings differ (a technique added counts once; meta does not count)."""
        return (
            len(self.added) + len(self.removed) + sum(len(v) for v in self.changed.values())
            + len(self.core) + (1 if self.order else 0)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "empty": self.empty,
            "count": self.count(),
            "techniques_added": self.added,
            "techniques_removed": self.removed,
            "parameters_changed": {t: {k: {"old": o, "new": n} for k, (o, n) in ch.items()} for t, ch in self.changed.items()},
            "core_changed": {k: {"old": o, "new": n} for k, (o, n) in self.core.items()},
            "order_changed": {"old": self.order[0], "new": self.order[1]} if self.order else None,
            "meta_changed": {k: {"old": o, "new": n} for k, (o, n) in self.meta.items()},
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per difference: ``key``, ``a``, ``b`` (None where absent) and the kind of ``change``."""

        def v(x: Any) -> Any:
            return None if x is ABSENT else x

        out: list[dict[str, Any]] = []
        out += [{"key": f"techniques.{n}", "a": None, "b": p, "change": "technique added"} for n, p in self.added.items()]
        out += [{"key": f"techniques.{n}", "a": p, "b": None, "change": "technique removed"} for n, p in self.removed.items()]
        for n, ch in self.changed.items():
            out += [{"key": f"techniques.{n}.{k}", "a": v(o), "b": v(nv), "change": "parameter"} for k, (o, nv) in ch.items()]
        out += [{"key": k, "a": v(o), "b": v(n), "change": "core"} for k, (o, n) in self.core.items()]
        if self.order:
            out.append({"key": "techniques (order)", "a": self.order[0], "b": self.order[1], "change": "order"})
        out += [{"key": k, "a": v(o), "b": v(n), "change": "meta"} for k, (o, n) in self.meta.items()]
        return out

    def format(self) -> str:
        if self.empty and not self.meta:
            return f"no differences between {self.a} and {self.b}"
        if self.empty:
            lines = [f"no setting differs between {self.a} and {self.b}"]
            lines.append("[stack]/[provenance] differ (documentation, not settings):")
            lines += [f"  {key}: {_fmt(old)} -> {_fmt(new)}" for key, (old, new) in self.meta.items()]
            return "\n".join(lines)
        lines = [f"--- {self.a}", f"+++ {self.b}"]
        if self.added:
            lines.append("techniques added:")
            for name, params in self.added.items():
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
                lines.append(f"  + {name}" + (f" ({shown})" if shown else ""))
        if self.removed:
            lines.append("techniques removed:")
            lines += [f"  - {name}" for name in self.removed]
        if self.changed:
            lines.append("parameters changed:")
            for name, changes in self.changed.items():
                for key, (old, new) in changes.items():
                    lines.append(f"  {name}.{key}: {_fmt(old)} -> {_fmt(new)}")
        if self.core:
            lines.append("core settings changed:")
            for key, (old, new) in self.core.items():
                lines.append(f"  {key}: {_fmt(old)} -> {_fmt(new)}")
        if self.order:
            lines.append("technique order changed (stack order is hook order):")
            lines.append(f"  {', '.join(self.order[0])}")
            lines.append(f"  -> {', '.join(self.order[1])}")
        if self.meta:
            lines.append("[stack]/[provenance] changed (documentation, not settings):")
            for key, (old, new) in self.meta.items():
                lines.append(f"  {key}: {_fmt(old)} -> {_fmt(new)}")
        return "\n".join(lines)


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def _fmt(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def diff(
    a: ResolvedStack, b: ResolvedStack, *, catalog: Any = None, include_meta: bool = False, label_a: str = "", label_b: str = ""
) -> StackDiff:
    """Group the differences between two resolved stacks (see the module docstring).

    ``catalog`` gives each technique's stage for the order comparison; without it the whole
    order of the common techniques is compared.
    """
    out = StackDiff(label_a or str(a.path or a.name), label_b or str(b.path or b.name))
    tech_a = {**{k: _params(v) for k, v in a.techniques.items()}, **{k: _params(v) for k, v in a.default_params.items()}}
    tech_b = {**{k: _params(v) for k, v in b.techniques.items()}, **{k: _params(v) for k, v in b.default_params.items()}}
    for name in tech_b:
        if name not in tech_a:
            out.added[name] = tech_b[name]
    for name in tech_a:
        if name not in tech_b:
            out.removed[name] = tech_a[name]
    for name in tech_a:
        if name in tech_b:
            changes = {k: (tech_a[name].get(k, ABSENT), v) for k, v in tech_b[name].items() if tech_a[name].get(k, ABSENT) != v}
            changes.update({k: (v, ABSENT) for k, v in tech_a[name].items() if k not in tech_b[name]})
            if changes:
                out.changed[name] = changes
    for section in CORE_SECTIONS:
        va = {k: _plain(v) for k, v in dataclasses.asdict(getattr(a.core, section)).items()}
        vb = {k: _plain(v) for k, v in dataclasses.asdict(getattr(b.core, section)).items()}
        for key in va:
            if va[key] != vb.get(key, ABSENT):
                out.core[f"{section}.{key}"] = (va[key], vb.get(key, ABSENT))
    def stage(name: str) -> str:
        return catalog.get(name).cls.stage if catalog is not None and name in catalog else ""

    common_a = [n for n in a.techniques if n in b.techniques]
    common_b = [n for n in b.techniques if n in a.techniques]
    stages = dict.fromkeys(stage(n) for n in common_a)
    if any([n for n in common_a if stage(n) == s] != [n for n in common_b if stage(n) == s] for s in stages):
        out.order = (common_a, common_b)
    if include_meta:
        meta_a = flatten_keys({k: a.meta[k] for k in FREEFORM_SECTIONS if k in a.meta})
        meta_b = flatten_keys({k: b.meta[k] for k in FREEFORM_SECTIONS if k in b.meta})
        for key in dict.fromkeys([*meta_a, *meta_b]):
            old, new = _plain(meta_a.get(key, ABSENT)), _plain(meta_b.get(key, ABSENT))
            if old != new:
                out.meta[key] = (old, new)
    return out


__all__ = ["ABSENT", "StackDiff", "diff"]
