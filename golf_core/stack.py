"""Stack files: load TOML, follow ``extends``, apply command-line overrides, validate strictly.

A stack file (schema 1)::

    schema = 1
    extends = "parent.toml"          # optional, one parent, relative to this file
    [stack]       name, summary, track            (free-form, not inherited)
    [provenance]  pr, author, based_on, expect... (free-form, not inherited)
    [run] [data] [model] [train] [eval] [artifact]  core tables (golf_core.config)
    [techniques.<name>]  enabled = true|false, plus that technique's Params fields

Techniques run in *stack order*: the order their tables first appear along the ``extends``
chain (parent first), then the order ``--enable`` names them. Validation collects every
problem (unknown table, technique or key with a did-you-mean, wrong type, unmet ``requires``,
``conflicts``) and raises one :class:`StackError` listing them all, each with the file that set
the offending key.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golf_core.catalog import Catalog
from golf_core.config import (
    CORE_SECTIONS,
    FREEFORM_SECTIONS,
    CoreConfig,
    coerce_value,
    field_default,
    resolved_field_types,
    type_name,
)
from golf_core.errors import GolfError, did_you_mean

SCHEMA_VERSION = 1
TOP_LEVEL_KEYS = ("schema", "extends", *FREEFORM_SECTIONS, *CORE_SECTIONS, "techniques")


class StackError(GolfError):
    """Every validation problem of a stack, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the stack:"
        super().__init__(problems[0] if len(problems) == 1 else "\n  ".join([head, *problems]))


@dataclass
class ResolvedStack:
    """A validated stack: core config, technique Params in stack order, and where values came from."""

    path: Path | None
    chain: list[Path]
    core: CoreConfig
    techniques: dict[str, Any]  # enabled non-default techniques, stack order -> Params
    default_params: dict[str, Any]  # core defaults -> Params
    meta: dict[str, Any]  # [stack] and [provenance] of the leaf file
    merged: dict[str, Any]  # the merged tables before defaults were filled in
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("stack", {}).get("name") or (self.path.stem if self.path else "default"))

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def flat(self) -> dict[str, Any]:
        """The fully resolved stack as TOML-ready tables: no ``extends``, every value explicit."""
        out: dict[str, Any] = {"schema": SCHEMA_VERSION}
        for section in FREEFORM_SECTIONS:
            if self.meta.get(section):
                out[section] = copy.deepcopy(self.meta[section])
        for section in CORE_SECTIONS:
            out[section] = _as_toml_values(dataclasses.asdict(getattr(self.core, section)))
        techniques: dict[str, Any] = {}
        for name, params in {**self.techniques, **self.default_params}.items():
            techniques[name] = _as_toml_values(dataclasses.asdict(params))
        out["techniques"] = techniques
        return out

    def technique_order(self) -> list[str]:
        return list(self.techniques)


def _as_toml_values(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ---------------------------------------------------------------------------------------------
# Loading and merging
# ---------------------------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GolfError(f"stack file not found: {path}") from None
    except OSError as exc:
        raise GolfError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GolfError(f"{path}: invalid TOML: {exc}") from None


def _load_chain(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The ``extends`` chain, root ancestor first."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    seen: list[Path] = []
    current: Path | None = path.resolve()
    while current is not None:
        if current in seen:
            cycle = " -> ".join(p.name for p in [*seen, current])
            raise GolfError(f"{seen[-1]}: extends cycle: {cycle}")
        seen.append(current)
        data = read_toml(current)
        chain.append((current, data))
        parent = data.get("extends")
        if parent is None:
            current = None
        elif not isinstance(parent, str):
            raise GolfError(f"{current}: extends: expected a file name (string), got {parent!r}")
        else:
            candidate = (current.parent / parent).resolve()
            if not candidate.is_file():
                raise GolfError(f"{current}: extends: parent stack not found: {candidate}")
            current = candidate
    chain.reverse()
    return chain


def _merge_into(target: dict[str, Any], source: Mapping[str, Any], origins: dict[str, str], origin: str, prefix: str = "") -> None:
    for key, value in source.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value, origins, origin, dotted + ".")
        else:
            target[key] = copy.deepcopy(value)
            _record_origins(value, origins, origin, dotted)


def _record_origins(value: Any, origins: dict[str, str], origin: str, dotted: str) -> None:
    origins[dotted] = origin
    if isinstance(value, dict):
        for k, v in value.items():
            _record_origins(v, origins, origin, f"{dotted}.{k}")


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``"a.b=V"`` -> (["a", "b"], V parsed as TOML; an unparseable V is taken as a string)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise GolfError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set train.iterations=200")
    parts = key.split(".")
    if any(not p for p in parts):
        raise GolfError(f"--set {assignment!r}: malformed key '{key}'")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def merge_chain(
    path: Path | None,
    overrides: Iterable[str] = (),
    enable: Iterable[str] = (),
    disable: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, Any], list[Path], dict[str, str]]:
    """Merge the ``extends`` chain and command-line changes. Returns (merged, meta, chain, origins)."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    meta: dict[str, Any] = {}
    chain: list[Path] = []
    if path is not None:
        for file, data in _load_chain(Path(path)):
            chain.append(file)
            body = {k: v for k, v in data.items() if k not in ("extends", *FREEFORM_SECTIONS)}
            _merge_into(merged, body, origins, str(file))
            # [stack] and [provenance] describe one file, so a child's replace its parent's.
            meta = {k: copy.deepcopy(data[k]) for k in FREEFORM_SECTIONS if k in data}
            for key in FREEFORM_SECTIONS:
                if key in data and not isinstance(data[key], dict):
                    raise StackError([f"{file}: {key}: expected a table, got {type(data[key]).__name__}"])
    for name in enable:
        table = merged.setdefault("techniques", {}).setdefault(name, {})
        if isinstance(table, dict):
            table["enabled"] = True
            origins[f"techniques.{name}.enabled"] = f"--enable {name}"
    for name in disable:
        table = merged.setdefault("techniques", {}).setdefault(name, {})
        if isinstance(table, dict):
            table["enabled"] = False
            origins[f"techniques.{name}.enabled"] = f"--disable {name}"
    for assignment in overrides:
        parts, value = parse_override(assignment)
        node = merged
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise GolfError(f"--set {assignment}: '{part}' is a value, not a table")
            node = child
        node[parts[-1]] = value
        origins[".".join(parts)] = f"--set {assignment}"
    return merged, meta, chain, origins


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _build_dataclass(
    cls: type, table: Mapping[str, Any], where: str, origins: dict[str, str], problems: list[str], skip: tuple[str, ...] = ()
) -> Any:
    types_by_name = resolved_field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key in skip:
            continue
        origin = origins.get(f"{where}.{key}", "stack")
        if key not in types_by_name:
            problems.append(f"{origin}: {where}.{key}: unknown key{did_you_mean(key, types_by_name)}")
            continue
        tp = types_by_name[key]
        ok, converted = coerce_value(value, tp)
        if not ok:
            problems.append(f"{origin}: {where}.{key}: expected {type_name(tp)}, got {type(value).__name__} {value!r}")
            continue
        choices = next(f for f in dataclasses.fields(cls) if f.name == key).metadata.get("choices")
        if choices and converted not in choices:
            problems.append(f"{origin}: {where}.{key}: {converted!r} is not one of {', '.join(map(str, choices))}")
            continue
        kwargs[key] = converted
    # A cross-field problem belongs to no single key: name the file that set the table's values.
    table_origin = next((origins[f"{where}.{k}"] for k in table if f"{where}.{k}" in origins), origins.get(where, "stack"))
    try:
        instance = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{table_origin}: {where}: {exc}")
        return None
    validate = getattr(instance, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:  # a Params cross-field check
            problems.append(f"{table_origin}: {where}: {exc}")
    return instance


def check_relations(enabled: list[str], catalog: Catalog) -> list[str]:
    """``requires`` and ``conflicts`` problems among the enabled techniques."""
    problems = []
    enabled_set = set(enabled)
    reported: set[frozenset[str]] = set()
    for name in enabled:
        cls = catalog.get(name).cls
        for required in cls.requires:
            if required not in enabled_set:
                problems.append(f"techniques.{name}: requires '{required}'; enable it (--enable {required})")
        for other in cls.conflicts:
            pair = frozenset((name, other))
            if other in enabled_set and pair not in reported:
                reported.add(pair)
                problems.append(f"techniques.{name}: conflicts with '{other}'; disable one of them")
    return problems


def resolve(
    path: Path | str | None,
    catalog: Catalog,
    overrides: Iterable[str] = (),
    enable: Iterable[str] = (),
    disable: Iterable[str] = (),
) -> ResolvedStack:
    """Load, merge and validate a stack; ``path=None`` means the empty stack (all defaults)."""
    merged, meta, chain, origins = merge_chain(Path(path) if path is not None else None, overrides, enable, disable)
    problems: list[str] = []
    leaf = str(chain[-1]) if chain else "stack"

    for key in merged:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"{origins.get(key, leaf)}: unknown table or key '{key}'{did_you_mean(key, TOP_LEVEL_KEYS)}")
    schema = merged.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        problems.append(f"{origins.get('schema', leaf)}: schema = {schema!r}: this golf reads schema {SCHEMA_VERSION}")

    sections: dict[str, Any] = {}
    for section, cls in CORE_SECTIONS.items():
        table = merged.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{origins.get(section, leaf)}: [{section}] must be a table")
            table = {}
        sections[section] = _build_dataclass(cls, table, section, origins, problems)

    techniques_table = merged.get("techniques", {})
    if not isinstance(techniques_table, dict):
        problems.append(f"{origins.get('techniques', leaf)}: [techniques] must hold [techniques.<name>] tables")
        techniques_table = {}
    enabled_params: dict[str, Any] = {}
    for name, table in techniques_table.items():
        where = f"techniques.{name}"
        origin = origins.get(where, origins.get(f"{where}.enabled", leaf))
        if name not in catalog:
            problems.append(f"{origin}: unknown technique '{name}'{did_you_mean(name, catalog.names())}")
            continue
        if not isinstance(table, dict):
            problems.append(f"{origin}: {where} must be a table")
            continue
        cls = catalog.get(name).cls
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            problems.append(f"{origins.get(where + '.enabled', origin)}: {where}.enabled: expected bool, got {enabled!r}")
            continue
        if cls.core_default and not enabled:
            problems.append(f"{origin}: {where}: '{name}' is a core default and cannot be disabled; enable a technique that replaces it")
            continue
        params = _build_dataclass(cls.Params, table, where, origins, problems, skip=("enabled",))
        if enabled and not cls.core_default and params is not None:
            enabled_params[name] = params

    default_params: dict[str, Any] = {}
    for entry in catalog.defaults():
        table = techniques_table.get(entry.name, {}) if isinstance(techniques_table.get(entry.name), dict) else {}
        params = _build_dataclass(entry.cls.Params, table, f"techniques.{entry.name}", origins, [], skip=("enabled",))
        default_params[entry.name] = params if params is not None else entry.cls.Params()

    problems += check_relations([n for n in enabled_params], catalog)
    if problems:
        raise StackError(problems)
    return ResolvedStack(
        path=Path(path).resolve() if path is not None else None,
        chain=chain,
        core=CoreConfig(**sections),
        techniques=enabled_params,
        default_params=default_params,
        meta=meta,
        merged=merged,
        origins=origins,
    )


# ---------------------------------------------------------------------------------------------
# Output: TOML text and differences
# ---------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        raise GolfError("TOML has no null value; use an empty string or remove the key")
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Write nested tables as TOML (enough for stacks: scalars, arrays, inline tables in arrays)."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"\n[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in tables.items():
            emit(value, f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key))

    emit(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def flatten_keys(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_keys(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def diff_stacks(a: ResolvedStack, b: ResolvedStack) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every resolved key that differs; ``MISSING`` marks absence."""
    flat_a, flat_b = flatten_keys(a.flat()), flatten_keys(b.flat())
    rows = []
    for key in list(dict.fromkeys([*flat_a, *flat_b])):
        va, vb = flat_a.get(key, MISSING), flat_b.get(key, MISSING)
        if va != vb:
            rows.append((key, va, vb))
    return rows


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING = _Missing()

__all__ = ["MISSING", "ResolvedStack", "StackError", "diff_stacks", "dumps_toml", "field_default", "resolve"]
