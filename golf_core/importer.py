"""Record -> stack: turn a parameter-golf record's settings into a golf stack file.

A record states its settings in up to three places, which this module reads:

* the training log's ``Hyperparameters:`` dump (every setting the run used, lower-case names,
  one ``  name: value`` line each) -- *complete*: a setting it does not print does not exist in
  that script;
* the README's run command (``NAME=VALUE`` assignments before ``torchrun``, continuation lines
  joined, ``export NAME=VALUE`` lines of the same block) and ``--nproc_per_node``;
* an environment-variable list (a file of ``NAME=VALUE`` lines, or a log's ``Extra args:`` line)
  -- *partial*: it only names what differs from the script's defaults, so the rest must come from
  a parent stack;
* the record's ``train_gpt.py`` itself (LZMA wrappers decoded): the defaults of its
  ``class Hyperparameters``, read without executing anything -- complete, lowest priority (for
  records whose logs print no dump, such as PR #1019).

:data:`ROWS` is the mapping table, one row per record setting: the golf key or technique it sets
(with its value conversion), or why it maps to nothing (``environment``: paths, ranks, run ids;
``ignored``: defined but unused, debug knobs, values equal to what golf does anyway; ``unmapped``:
golf has no parameter for it; ``pending``: the technique it belongs to is not in the catalog yet).
:data:`IMPLIED` lists techniques the record scripts hard-wire without a setting, recognised by
settings that only scripts of that generation print; :data:`GAPS` the hard-wired parts golf cannot
express (reported). A setting of a technique that is not in the catalog (``pending``) is mapped as
soon as it is: onto the one Params field whose help names its env var, golf's help-text convention.
Nothing is dropped silently: every setting of the source is reported in one of those categories,
and README/log disagreements are reported too.

``import_record()`` returns an :class:`ImportResult`: the stack tables, the notes, and ``text()``,
the TOML to write. With a parent (``--parent FILE`` or ``auto``: the ``stacks/*.toml`` with the
smallest reviewer-level diff), the file ``extends`` it and holds only what differs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golf_core.catalog import Catalog
from golf_core.errors import GolfError
from golf_core.stack import ResolvedStack, dumps_toml, resolve
from golf_core.stackdiff import diff as stack_diff

# ---------------------------------------------------------------------------------------------
# Reading the sources
# ---------------------------------------------------------------------------------------------


def parse_value(text: Any) -> Any:
    """A setting's printed or assigned text as a Python value: bool, int, float or str."""
    if not isinstance(text, str):
        return text
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        s = s[1:-1]
    if s in ("True", "true"):
        return True
    if s in ("False", "false"):
        return False
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        return s


def parse_hyperparameter_dump(text: str) -> dict[str, str] | None:
    """The ``Hyperparameters:`` block of a record log as raw strings, or None when absent."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Hyperparameters:":
            out: dict[str, str] = {}
            for body in lines[i + 1:]:
                m = re.match(r"^\s{2,}([A-Za-z_][A-Za-z0-9_]*):(.*)$", body)
                if not m:
                    break
                out[m.group(1)] = m.group(2).strip()
            return out
    return None


_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def parse_assignments(words: Iterable[str]) -> dict[str, str]:
    """``NAME=VALUE`` words (upper-case names) -> {NAME: VALUE}, later ones winning."""
    out: dict[str, str] = {}
    for word in words:
        m = _ASSIGN.match(word)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def parse_env_list(text: str) -> dict[str, str]:
    """An environment-variable list: ``NAME=VALUE`` lines (``export`` allowed, ``#`` comments)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        words = _split(line)
        if words and words[0] == "export":
            words = words[1:]
        out.update(parse_assignments(words))
    return out


def parse_readme_command(text: str) -> tuple[dict[str, str], int | None, list[str]]:
    """The run command of a record README: (assignments, --nproc_per_node, unresolved names).

    Every fenced code block is read; continuation lines are joined; a command line that runs
    ``torchrun`` (or ``python ... train_gpt.py``) contributes the assignments before it, and the
    block's ``export NAME=VALUE`` lines count too. Values that reference shell variables
    (``SEED=$SEED``) cannot be resolved and are returned by name.
    """
    env: dict[str, str] = {}
    nproc: int | None = None
    unresolved: list[str] = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\s*\n", " ", block)
        exports: dict[str, str] = {}
        found = False
        for line in joined.splitlines():
            words = _split(line)
            if not words:
                continue
            if words[0] == "export":
                exports.update(parse_assignments(words[1:]))
                continue
            for j, word in enumerate(words):
                base = os.path.basename(word)
                runs = base == "torchrun" or (base.startswith("python") and any(w.endswith("train_gpt.py") for w in words[j + 1:]))
                if runs:
                    found = True
                    assigned = parse_assignments(words[:j])
                    for name, value in assigned.items():
                        if "$" in value:
                            unresolved.append(name)
                        else:
                            env[name] = value
                    for w in words[j + 1:]:
                        m = re.match(r"--nproc_per_node[= ](\d+)", w)
                        if m:
                            nproc = int(m.group(1))
                    if "--nproc_per_node" in words:
                        k = words.index("--nproc_per_node")
                        if k + 1 < len(words) and words[k + 1].isdigit():
                            nproc = int(words[k + 1])
                    break
        if found:
            for name, value in exports.items():
                env.setdefault(name, value)
    return env, nproc, sorted(set(unresolved) - set(env))


def unwrap_script(text: str) -> str:
    """A record ``train_gpt.py``'s source; the self-extracting LZMA wrappers are decoded.

    The wrapper (PR #1285 to #1514) is ``exec(lzma.decompress(base64.b85decode("..."), ...))``:
    the string literal(s) are base85, the payload raw LZMA2 or xz.
    """
    import ast
    import base64
    import lzma

    if "b85decode" not in text or len(text) > 200_000:
        return text
    try:
        literals = [n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) > 64]
        payload = base64.b85decode("".join(literals))
    except (SyntaxError, ValueError):
        return text
    for kwargs in ({"format": lzma.FORMAT_RAW, "filters": [{"id": lzma.FILTER_LZMA2}]}, {}):
        try:
            return lzma.LZMADecompressor(**kwargs).decompress(payload).decode("utf-8")
        except (lzma.LZMAError, UnicodeDecodeError):
            continue
    return text


def parse_script_defaults(text: str) -> dict[str, Any]:
    """``class Hyperparameters`` of a record script -> {attribute: default the env var falls back to}.

    Only ``name = conv(os.environ.get("NAME", literal))`` assignments (conv among int, float,
    bool, str, nested) are read; derived attributes are skipped. Nothing is executed.
    """
    import ast

    try:
        tree = ast.parse(unwrap_script(text))
    except SyntaxError as exc:
        raise GolfError(f"record script does not parse on this Python ({exc.msg}); decode it with Python >= 3.12") from None

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and len(node.args) == 2:
            return evaluate(node.args[1])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("int", "float", "bool", "str") and len(node.args) == 1:
            inner = evaluate(node.args[0])
            return {"int": lambda v: int(float(v)) if isinstance(v, str) and "." in v else int(v), "float": float, "bool": bool, "str": str}[node.func.id](inner)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand)
        raise ValueError("not a literal default")

    out: dict[str, Any] = {}
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Hyperparameters"):
        for stmt in cls.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
                continue
            if "environ" not in ast.dump(stmt.value):
                continue
            try:
                out[stmt.targets[0].id] = evaluate(stmt.value)
            except (ValueError, TypeError):
                continue
    if not out:
        raise GolfError("record script: no `class Hyperparameters` with os.environ.get(...) defaults found")
    return out


def parse_timeline(text: str) -> dict[int, float]:
    """Training step -> training seconds, from a record log's loss lines (both log formats)."""
    out: dict[int, float] = {}
    for m in re.finditer(r"^(\d+)/\d+ train_loss: [0-9.]+ train_time: ([0-9.]+)m", text, re.M):
        out[int(m.group(1))] = float(m.group(2)) * 60.0
    for m in re.finditer(r"^step:(\d+)/\d+ train_loss:[0-9.]+ train_time:(\d+)ms", text, re.M):
        out[int(m.group(1))] = float(m.group(2)) / 1000.0
    return out


def parse_train_losses(text: str) -> dict[int, float]:
    """Training step -> logged training loss, from a record log (both formats)."""
    out: dict[int, float] = {}
    for m in re.finditer(r"^(\d+)/\d+ train_loss: ([0-9.]+)", text, re.M):
        out[int(m.group(1))] = float(m.group(2))
    for m in re.finditer(r"^step:(\d+)/\d+ train_loss:([0-9.]+)", text, re.M):
        out[int(m.group(1))] = float(m.group(2))
    return out


@dataclass
class RecordSource:
    """Everything read from one record: settings by lower-case name, and where they came from."""

    paths: list[Path]
    settings: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # name -> "script" | "readme" | "env" | "log"
    complete: bool = False  # a Hyperparameters dump (or a script's Hyperparameters class) was read
    readme: dict[str, Any] = field(default_factory=dict)  # README assignments (lower-case)
    env: dict[str, Any] = field(default_factory=dict)  # env-list assignments (lower-case)
    script: dict[str, Any] = field(default_factory=dict)  # a record script's defaults
    log: dict[str, Any] = field(default_factory=dict)  # dump values
    readme_unresolved: list[str] = field(default_factory=list)
    nproc: int | None = None
    timeline: dict[int, float] = field(default_factory=dict)
    submission: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    pr: int | None = None
    record_dir: Path | None = None


def _pr_from_path(path: Path) -> int | None:
    for part in reversed(path.resolve().parts):
        m = re.fullmatch(r"pr[-_]?(\d+)", part, re.I)
        if m:
            return int(m.group(1))
    return None


def read_record(paths: Iterable[Path | str]) -> RecordSource:
    """Read one record from its files (a log, a README, an env list, or the record folder).

    A folder means its README.md and its first ``*.log``. Beside a log or README, the folder's
    README.md and submission.json are read for the run command, seeds and reported results.
    Later sources win over earlier ones; a Hyperparameters dump wins over everything.
    """
    items = [Path(p) for p in paths]
    if not items:
        raise GolfError("stack import: give at least one SOURCE (a record log, README.md or env-var list)")
    files: list[Path] = []
    for item in items:
        if item.is_dir():
            readme = item / "README.md"
            logs = sorted(item.glob("*.log"))
            files += ([readme] if readme.is_file() else []) + logs[:1]
            if not logs and not readme.is_file():
                raise GolfError(f"{item}: no README.md or *.log in this record folder")
        elif item.is_file():
            files.append(item)
        else:
            raise GolfError(f"stack import: source not found: {item}")
    src = RecordSource(paths=files)
    src.record_dir = files[0].parent
    src.pr = next((p for p in (_pr_from_path(f) for f in files) if p is not None), None)
    siblings = {f.name for f in files}
    if "README.md" not in siblings and (src.record_dir / "README.md").is_file():
        files = [src.record_dir / "README.md", *files]
    sub = src.record_dir / "submission.json"
    if sub.is_file():
        try:
            src.submission = json.loads(sub.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise GolfError(f"{sub}: invalid JSON: {exc}") from None

    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() == ".py":
            src.script.update(parse_script_defaults(text))
            src.complete = True  # the script's Hyperparameters list every setting it has
            continue
        if path.suffix.lower() == ".md":
            env, nproc, unresolved = parse_readme_command(text)
            src.readme.update({k.lower(): parse_value(v) for k, v in env.items()})
            src.readme_unresolved += unresolved
            src.nproc = nproc if nproc is not None else src.nproc
            title = re.search(r"^#\s+(.+)$", text, re.M)
            if title and not src.title:
                src.title = title.group(1).strip()
            continue
        dump = parse_hyperparameter_dump(text)
        if dump is not None:
            src.log.update({k: parse_value(v) for k, v in dump.items()})
            src.complete = True
            src.timeline = parse_timeline(text)
            continue
        extra = re.search(r"^Extra args:(.*)$", text, re.M)
        if extra:  # PR #1430-style logs print the run's env overrides instead of a dump
            src.env.update({k.lower(): parse_value(v) for k, v in parse_assignments(_split(extra.group(1))).items()})
            src.timeline = parse_timeline(text)
            continue
        env = parse_env_list(text)
        if not env:
            raise GolfError(f"{path}: neither a Hyperparameters dump, a README run command nor NAME=VALUE lines")
        src.env.update({k.lower(): parse_value(v) for k, v in env.items()})
    for layer, name in ((src.script, "script"), (src.readme, "readme"), (src.env, "env"), (src.log, "log")):
        for key, value in layer.items():
            src.settings[key] = value
            src.origin[key] = name
    return src


# ---------------------------------------------------------------------------------------------
# Value conversions
# ---------------------------------------------------------------------------------------------


def as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    raise ValueError(f"expected a boolean (True/False/1/0), got {v!r}")


def as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def as_str(v: Any) -> str:
    return "" if v is None else str(v)


def int_list(v: Any) -> list[int]:
    """``"9,10"`` (or a single int) -> [9, 10]."""
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    parts = [p.strip() for p in str(v).split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of integers, got {v!r}") from None


# ---------------------------------------------------------------------------------------------
# The plan a source is mapped into
# ---------------------------------------------------------------------------------------------

CATEGORIES = ("mapped", "environment", "ignored", "unused", "unmapped", "pending", "approximated")


@dataclass(frozen=True)
class Note:
    setting: str
    value: Any
    category: str  # one of CATEGORIES
    message: str


class Plan:
    """Golf keys and technique flags collected while the rows are applied."""

    def __init__(self, source: RecordSource, catalog: Catalog) -> None:
        self.source = source
        self.settings = source.settings
        self.catalog = catalog
        self.core: dict[str, Any] = {}  # "model.num_layers" -> value
        self.core_setting: dict[str, str] = {}
        self.params: dict[str, dict[str, Any]] = {}  # technique -> {field: value}
        self.param_setting: dict[tuple[str, str], str] = {}  # (technique, field) -> setting name
        self.flags: dict[str, bool] = {}  # technique -> on/off, explicit or implied
        self.flag_setting: dict[str, str] = {}
        self.notes: list[Note] = []

    # -- what rows call ------------------------------------------------------------------------
    def set(self, key: str, value: Any, setting: str) -> None:
        self.core[key] = value
        self.core_setting[key] = setting

    def param(self, technique: str, name: str, value: Any, setting: str) -> None:
        self.params.setdefault(technique, {})[name] = value
        self.param_setting[(technique, name)] = setting

    def enable(self, technique: str, on: bool, setting: str) -> None:
        self.flags[technique] = on
        self.flag_setting[technique] = setting

    def note(self, setting: str, category: str, message: str) -> None:
        self.notes.append(Note(setting, self.settings.get(setting), category, message))

    def has(self, *names: str) -> bool:
        return any(n in self.settings for n in names)

    def value(self, name: str, default: Any = None) -> Any:
        return self.settings.get(name, default)


# ---------------------------------------------------------------------------------------------
# The mapping table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """How one record setting maps onto golf."""

    setting: str  # the dump's lower-case name (the env var is its upper-case form)
    kind: str  # core | param | flag | custom | environment | ignored | unmapped | pending
    target: str  # what it sets, for the table ("model.num_layers", "techniques.xsa.last_n (on if > 0)")
    apply: Callable[[Any, Plan, str], None]
    note: str = ""
    env: tuple[str, ...] = ()  # other env-var names for the same setting
    compare: Callable[[Any], Any] | None = None  # normalizer for README/log comparison


def core(setting: str, key: str, conv: Callable[[Any], Any] = lambda v: v, note: str = "", env: tuple[str, ...] = ()) -> Row:
    def apply(value: Any, plan: Plan, name: str) -> None:
        plan.set(key, conv(value), name)
        plan.note(name, "mapped", key)

    return Row(setting, "core", key, apply, note, env)


def tparam(setting: str, technique: str, name: str, conv: Callable[[Any], Any] = lambda v: v, *,
           on_if: Callable[[Any], bool] | None = None, note: str = "", env: tuple[str, ...] = ()) -> Row:
    """A technique parameter; ``on_if(value)`` also switches the technique on or off."""

    def apply(value: Any, plan: Plan, setting_name: str) -> None:
        converted = conv(value)
        plan.param(technique, name, converted, setting_name)
        if on_if is not None:
            plan.enable(technique, bool(on_if(converted)), setting_name)
        plan.note(setting_name, "mapped", f"techniques.{technique}.{name}")

    target = f"techniques.{technique}.{name}" + (" (and switches it on/off)" if on_if else "")
    return Row(setting, "param", target, apply, note, env)


def flag(setting: str, technique: str, note: str = "") -> Row:
    def apply(value: Any, plan: Plan, name: str) -> None:
        plan.enable(technique, as_bool(value), name)
        plan.note(name, "mapped", f"technique {technique} {'on' if as_bool(value) else 'off'}")

    return Row(setting, "flag", f"technique {technique} on/off", apply, note)


def custom(setting: str, target: str, fn: Callable[[Any, Plan, str], None], note: str = "", env: tuple[str, ...] = (),
           compare: Callable[[Any], Any] | None = None) -> Row:
    return Row(setting, "custom", target, fn, note, env, compare)


def environment(setting: str, note: str = "run environment (paths, ranks, ids)", env: tuple[str, ...] = ()) -> Row:
    def apply(value: Any, plan: Plan, name: str) -> None:
        plan.note(name, "environment", note)

    return Row(setting, "environment", "ignored: environment", apply, note, env)


def ignored(setting: str, why: str) -> Row:
    def apply(value: Any, plan: Plan, name: str) -> None:
        plan.note(name, "ignored", why)

    return Row(setting, "ignored", "ignored", apply, why)


def unmapped(setting: str, why: str, neutral: Callable[[Any], bool] | None = None) -> Row:
    """No golf parameter; a ``neutral`` value (the feature is off) is only noted as ignored."""

    def apply(value: Any, plan: Plan, name: str) -> None:
        if neutral is not None and neutral(value):
            plan.note(name, "ignored", f"off/neutral here; {why}")
        else:
            plan.note(name, "unmapped", why)

    return Row(setting, "unmapped", "unmapped", apply, why)


def _find_field(catalog: Catalog, technique: str, setting: str) -> str | None:
    """The Params field of ``technique`` whose help names ``SETTING`` (golf's help-text convention)."""
    from golf_core.config import describe_fields

    if technique not in catalog:
        return None
    pattern = re.compile(rf"\b{re.escape(setting.upper())}\b")
    hits = [row["name"] for row in describe_fields(catalog.get(technique).cls.Params) if pattern.search(row["help"] or "")]
    return hits[0] if len(hits) == 1 else None


def pending(setting: str, techniques: tuple[str, ...], why: str, *, switch: Callable[[Any, Plan], bool | None] | None = None,
            conv: Callable[[Any], Any] = lambda v: v) -> Row:
    """A setting of a technique that may not be in the catalog yet.

    When one of ``techniques`` exists and exactly one of its Params fields names the setting's
    env var in its help text (``"(TTT_LORA_RANK)"``), the value is mapped there; ``switch``
    returns True/False to switch the (first existing) technique on or off. Otherwise it is
    reported as pending.
    """

    def apply(value: Any, plan: Plan, name: str) -> None:
        present = [t for t in techniques if t in plan.catalog]
        if switch is not None:
            on = switch(value, plan)
            if on is not None and present:
                plan.enable(present[0], on, name)
                plan.note(name, "mapped", f"technique {present[0]} {'on' if on else 'off'}")
                return
            if on is False:
                plan.note(name, "ignored", f"off here; {why}")
                return
        for t in present:
            found = _find_field(plan.catalog, t, name)
            if found:
                plan.param(t, found, conv(value), name)
                plan.note(name, "mapped", f"techniques.{t}.{found}")
                return
        missing = [t for t in techniques if t not in plan.catalog]
        if missing and not present:
            plan.note(name, "pending", f"{why} (golf has no {' / '.join(missing)} technique yet)")
        else:
            plan.note(name, "unmapped", f"{why} ({' / '.join(present)} has no parameter naming {name.upper()})")

    return Row(setting, "pending", f"{' / '.join(techniques)} (pending)", apply, why)


def _dataset_dir(value: Any) -> str:
    """A record's dataset path -> the golf convention ``data/datasets/<its folder name>``."""
    base = os.path.basename(str(value).rstrip("/"))
    return f"data/datasets/{base}" if base else ""


def _apply_dataset(value: Any, plan: Plan, name: str) -> None:
    target = _dataset_dir(value)
    if target:
        plan.set("data.dataset", target, name)
        plan.note(name, "mapped", f"data.dataset = {target!r} (the folder `golf data prepare --out` creates)")
    else:
        plan.note(name, "environment", "empty dataset path")


def _apply_mlp_mult(value: Any, plan: Plan, name: str) -> None:
    v = as_float(value)
    plan.set("model.mlp_mult", v, name)
    plan.param("leaky_relu_sq", "mlp_mult", v, name)
    plan.note(name, "mapped", "model.mlp_mult (and techniques.leaky_relu_sq.mlp_mult, which overrides it)")


def _apply_qk_gain(value: Any, plan: Plan, name: str) -> None:
    v = as_float(value)
    plan.set("model.qk_gain_init", v, name)
    plan.param("qk_gain", "init", v, name)
    plan.enable("qk_gain", True, name)
    plan.note(name, "mapped", "techniques.qk_gain.init (and model.qk_gain_init, kept equal)")


def _apply_embedding_dim(value: Any, plan: Plan, name: str) -> None:
    if as_int(value) == as_int(plan.value("model_dim", value)):
        plan.note(name, "ignored", "equals model_dim: no factorized embedding, which is golf's only form")
    else:
        plan.note(name, "unmapped", "factorized embedding (EMBEDDING_DIM != MODEL_DIM): no golf technique")


def _apply_rope_dims(value: Any, plan: Plan, name: str) -> None:
    dims = as_int(value)
    head_dim = as_int(plan.value("model_dim", 512)) // max(as_int(plan.value("num_heads", 8)), 1)
    plan.param("partial_rope", "dims", dims, name)
    plan.enable("partial_rope", 0 < dims < head_dim, name)
    plan.note(name, "mapped", "techniques.partial_rope.dims (on when 0 < dims < head dim)")


def _apply_recur_layers(value: Any, plan: Plan, name: str) -> None:
    layers = int_list(value)
    if not layers:
        plan.enable("depth_recurrence", False, name)
        plan.note(name, "mapped", "technique depth_recurrence off (no layers)")
        return
    if layers != list(range(layers[0], layers[-1] + 1)):
        plan.note(name, "unmapped", f"non-contiguous recurrence layers {layers}: depth_recurrence repeats one contiguous segment")
        return
    plan.param("depth_recurrence", "loop_start", layers[0], name)
    plan.param("depth_recurrence", "loop_end", layers[-1], name)
    plan.param("depth_recurrence", "num_loops", 1, name)
    plan.enable("depth_recurrence", True, name)
    plan.note(
        name, "approximated",
        "depth_recurrence loop_start/loop_end, num_loops=1 (RECUR_LAYERS repeats the segment once); the PR #1285/#1334 "
        "scripts keep num_layers//2 skip weights while golf's looped layout has one per decoder position "
        "(11 layers, 3..5 x1: 7 instead of 5, +2048 parameters with skip gates)",
    )


def _apply_recur_start_step(value: Any, plan: Plan, name: str) -> None:
    step = as_int(value)
    timeline = plan.source.timeline
    cap = as_float(plan.value("max_wallclock_seconds", 600.0)) - as_float(plan.value("gptq_reserve_seconds", 0.0))
    if step in timeline and cap > 0:
        frac = round(timeline[step] / cap, 2)
        plan.param("depth_recurrence", "enable_at", frac, name)
        plan.note(
            name, "approximated",
            f"techniques.depth_recurrence.enable_at = {frac} (step {step} was reached at {timeline[step]:.0f}s of the "
            f"{cap:g}s training cap in this log; golf switches at a training fraction, not a step)",
        )
    else:
        plan.note(name, "unmapped", "a step-based loop switch: depth_recurrence switches at a training fraction (enable_at); "
                  "no log timing to convert it")


def _apply_parallel_residual_start(value: Any, plan: Plan, name: str) -> None:
    start = as_int(value)
    layers = as_int(plan.value("num_layers", 11))
    plan.param("parallel_residuals", "form", "gptj", name)
    plan.param("parallel_residuals", "start_layer", start, name)
    plan.enable("parallel_residuals", 0 <= start < layers, name)
    plan.note(name, "mapped", "techniques.parallel_residuals.start_layer, form = 'gptj' (PARALLEL_RESIDUAL_START is the PR #1412/#1493/#1514 GPT-J form)")


def _apply_parallel_start_layer(value: Any, plan: Plan, name: str) -> None:
    start = as_int(value)
    layers = as_int(plan.value("num_layers", 11))
    # Scripts that print PARALLEL_FINAL_LANE (PR #1530 on) use two lanes; PARALLEL_START_LAYER
    # without it is the PR #1334/#1477/#1487 form with isolated lanes and a learned lane_merge.
    form = "two_lane" if plan.has("parallel_final_lane") else "isolated"
    plan.param("parallel_residuals", "form", form, name)
    plan.param("parallel_residuals", "start_layer", start, name)
    plan.enable("parallel_residuals", 0 <= start < layers, name)
    plan.note(name, "mapped", f"techniques.parallel_residuals.start_layer, form = {form!r}")


def _apply_gate_window(value: Any, plan: Plan, name: str) -> None:
    w = as_int(value)
    for t in ("smear_gate", "sparse_attn_gate", "attn_out_gate"):
        plan.param(t, "window", w, name)
    plan.note(name, "mapped", "techniques.{smear_gate,sparse_attn_gate,attn_out_gate}.window")


def _apply_quant_gate(value: Any, plan: Plan, name: str) -> None:
    on = as_bool(value)
    plan.param("gptq", "gate_int8_patterns", ["attn_gate_w"] if on else [], name)
    plan.note(name, "mapped", "techniques.gptq.gate_int8_patterns (['attn_gate_w'] when on, [] when off)")


def _apply_sdclip_k_embed(value: Any, plan: Plan, name: str) -> None:
    plan.param("gptq", "embed_clip_sigmas", as_float(value), name)
    plan.enable("gptq", True, name)
    if not plan.has("embed_bits"):
        # The SDCLIP_K scripts (PR #1334 lineage) store the embedding at int8 and print no EMBED_BITS.
        plan.param("gptq", "embed_bits", 8, name)
    plan.note(name, "mapped", "techniques.gptq.embed_clip_sigmas (and embed_bits = 8, these scripts' fixed int8 embedding)")


def _apply_adam_wd(value: Any, plan: Plan, name: str) -> None:
    wd = as_float(value)
    plan.param("muon", "scalar_weight_decay", wd, name)
    if not plan.has("embed_wd"):
        # Before EMBED_WD existed (PR #1218) the embedding's AdamW used ADAM_WD too.
        plan.param("muon", "embed_weight_decay", wd, name)
        plan.note(name, "mapped", "techniques.muon.scalar_weight_decay and embed_weight_decay (no EMBED_WD in this script)")
    else:
        plan.note(name, "mapped", "techniques.muon.scalar_weight_decay")


def _apply_eval_stride(value: Any, plan: Plan, name: str) -> None:
    stride = as_int(value)
    plan.param("sliding_window", "stride", stride, name)
    if not plan.has("sliding_window_enabled") and not _lora_family(plan):
        # PR #63 -> #1019 scripts slide whenever 0 < EVAL_STRIDE < the eval length; from PR #1530
        # on the stride is printed but unused (per-document eval replaced sliding windows).
        seq = as_int(plan.value("eval_seq_len", plan.value("train_seq_len", 2048)))
        plan.enable("sliding_window", 0 < stride < seq, name)
    plan.note(name, "mapped", "techniques.sliding_window.stride")


def _apply_compressor(value: Any, plan: Plan, name: str) -> None:
    v = as_str(value)
    for t in ("byteshuffle_brotli", "lzma_compress", "pergroup_compress"):
        plan.enable(t, False, name)
    if v == "brotli":
        # Every record script from PR #1089 through PR #1851 byte-shuffles (stride 2) the whole
        # quantized blob before brotli-11; PR #1855's brotli path alone dropped it and ran pergroup.
        plan.enable("byteshuffle_brotli", True, name)
        plan.param("byteshuffle_brotli", "per_tensor", False, name)
        plan.note(name, "mapped", "technique byteshuffle_brotli (per_tensor = false: the records' stride-2 shuffle of the whole blob)")
    elif v == "lzma":
        plan.enable("lzma_compress", True, name)
        plan.param("lzma_compress", "preset", 6, name)
        plan.note(name, "approximated", "technique lzma_compress, preset 6 (the records byte-shuffle before lzma; golf's lzma_compress does not)")
    elif v == "pergroup":
        plan.enable("pergroup_compress", True, name)
        plan.note(name, "mapped", "technique pergroup_compress")
    else:
        plan.note(name, "unmapped", f"unknown compressor {v!r}")


def _apply_ttt_enabled(value: Any, plan: Plan, name: str) -> None:
    on = as_bool(value)
    if plan.has("ttt_lora_rank", "ttt_chunk_size"):
        family = ("phased_ttt", "lora_ttt") if plan.has("phased_ttt_prefix_docs", "phased_ttt_num_phases") else ("lora_ttt",)
        present = [t for t in family if t in plan.catalog]
        for t in present:
            plan.enable(t, on, name)
        if present:
            plan.note(name, "mapped", f"technique {' + '.join(present)} {'on' if on else 'off'}")
        elif on:
            plan.note(name, "pending", f"per-document LoRA TTT{' with phased global SGD' if len(family) == 2 else ''} (golf has no {' / '.join(family)} technique yet)")
        else:
            plan.note(name, "ignored", "LoRA TTT off")
    else:
        plan.enable("score_first_ttt", on, name)
        plan.note(name, "mapped", f"technique score_first_ttt {'on' if on else 'off'} (chunked SGD TTT: these scripts have no LoRA settings)")


_LORA_SITES = ("c_q", "c_k", "c_v", "attn", "mlp", "head")


def _apply_lora_sites(value: Any, plan: Plan, name: str) -> None:
    # Q, V and the LM head always get adapters in the records; TTT_K_LORA / TTT_O_LORA /
    # TTT_MLP_LORA add K, O (golf's "attn" site) and the MLP. All three rows set the same list.
    on = {"c_q", "c_v", "head"}
    for setting, site in (("ttt_k_lora", "c_k"), ("ttt_o_lora", "attn"), ("ttt_mlp_lora", "mlp")):
        if as_bool(plan.value(setting, True)):
            on.add(site)
    if "lora_ttt" in plan.catalog:
        plan.param("lora_ttt", "sites", [s for s in _LORA_SITES if s in on], name)
        plan.note(name, "mapped", "techniques.lora_ttt.sites")
    else:
        plan.note(name, "pending", f"{_LORA_WHY} (golf has no lora_ttt technique yet)")


def _apply_slot_persample(value: Any, plan: Plan, name: str) -> None:
    if "slot" not in plan.catalog:
        plan.note(name, "pending", f"{_SLOT_WHY} (golf has no slot technique yet)")
        return
    # Per-sample SLOT (PR #1430) fits a per-window logit bias next to the hidden delta.
    plan.param("slot", "logit_bias", as_bool(value), name)
    plan.note(name, "mapped", "techniques.slot.logit_bias (per-sample SLOT = hidden delta + per-window logit bias)")


def _lora_family(plan: Plan) -> bool:
    return plan.has("ttt_lora_rank", "ttt_chunk_size")


def _apply_ttt_optimizer(value: Any, plan: Plan, name: str) -> None:
    if _lora_family(plan):
        _LORA_ROW(name).apply(value, plan, name)
        return
    plan.param("score_first_ttt", "optimizer", "adamw" if as_str(value) in ("adam", "adamw") else as_str(value), name)
    plan.note(name, "mapped", "techniques.score_first_ttt.optimizer")


def _score_first(field_name: str, conv: Callable[[Any], Any]) -> Callable[[Any, Plan, str], None]:
    """A TTT setting shared by the SGD (score_first_ttt) and the LoRA scripts, which mean different things."""

    def apply(value: Any, plan: Plan, name: str) -> None:
        if _lora_family(plan):
            _LORA_ROW(name).apply(value, plan, name)
            return
        plan.param("score_first_ttt", field_name, conv(value), name)
        plan.note(name, "mapped", f"techniques.score_first_ttt.{field_name}")

    return apply


def _LORA_ROW(setting: str) -> Row:
    return pending(setting, ("lora_ttt", "phased_ttt"), "per-document LoRA TTT setting")


def _off(v: Any) -> bool:
    return v in (False, 0, 0.0, "", "0")


_LORA_WHY = "per-document LoRA TTT setting (PR #1530 -> #1767 -> #1855)"
_PHASED_WHY = "phased TTT: global SGD on already-scored documents (PR #1610/#1626)"
_PREQ_WHY = "pre-quantization TTT on validation tokens (PR #1487); breaks the score-before-update rule"
_SLOT_WHY = "per-sample SLOT (PR #1430): optimizes a delta on the scored positions; breaks causality"
_NGRAM_WHY = "causal backoff n-gram mixer (PR #1430)"

ROWS: tuple[Row, ...] = (
    # ---- run environment: where things are, who runs them -----------------------------------
    environment("artifact_dir"), environment("data_dir"), environment("logfile"), environment("model_path"),
    environment("quantized_model_path"), environment("run_id"), environment("train_files"), environment("val_files"),
    environment("val_bytes_files"), environment("distributed"), environment("is_main_process"), environment("rank"),
    environment("local_rank"), environment("nccl_net", "NCCL transport of the cluster"),
    environment("tokenizer_path", "the dataset directory carries its tokenizer (data.tokenizer = '' reads it)"),
    ignored("grad_accum_steps", "derived: 8 // world_size, which golf's train.grad_accum_steps = 0 computes the same way"),
    core("world_size", "run.nproc_per_node", as_int, note="the records run on one node: world size = processes per node"),
    custom("datasets_dir", "data.dataset = 'data/datasets/<folder name>'", _apply_dataset, env=("DATA_PATH",),
           compare=lambda v: _dataset_dir(v)),
    # ---- run / train / eval / model core ------------------------------------------------------
    core("seed", "run.seed", as_int),
    core("max_wallclock_seconds", "run.max_wallclock_seconds", as_float),
    core("iterations", "train.iterations", as_int),
    core("train_batch_tokens", "train.train_batch_tokens", as_int),
    core("train_seq_len", "train.train_seq_len", as_int),
    core("train_log_every", "train.train_log_every", as_int),
    core("val_loss_every", "train.val_loss_every", as_int),
    core("val_batch_tokens", "train.val_batch_tokens", as_int, env=("VAL_BATCH_SIZE",)),
    core("warmup_steps", "train.compile_warmup_steps", as_int, note="the records' WARMUP_STEPS are compile warm-up steps, state restored after"),
    core("eval_seq_len", "eval.seq_len", as_int),
    core("vocab_size", "model.vocab_size", as_int),
    core("num_layers", "model.num_layers", as_int),
    core("model_dim", "model.model_dim", as_int),
    core("num_heads", "model.num_heads", as_int),
    core("num_kv_heads", "model.num_kv_heads", as_int),
    core("tie_embeddings", "model.tie_embeddings", as_bool),
    core("tied_embed_init_std", "model.tied_embed_init_std", as_float),
    core("logit_softcap", "model.logit_softcap", as_float),
    core("rope_base", "model.rope_base", as_float),
    custom("mlp_mult", "model.mlp_mult + techniques.leaky_relu_sq.mlp_mult", _apply_mlp_mult),
    custom("qk_gain_init", "techniques.qk_gain.init + model.qk_gain_init", _apply_qk_gain),
    custom("embedding_dim", "ignored when equal to model_dim", _apply_embedding_dim),
    # ---- optimizer (core default `muon`) and schedule -----------------------------------------
    tparam("matrix_lr", "muon", "matrix_lr", as_float),
    tparam("muon_momentum", "muon", "momentum", as_float),
    tparam("muon_momentum_warmup_start", "muon", "momentum_warmup_start", as_float),
    tparam("muon_momentum_warmup_steps", "muon", "momentum_warmup_steps", as_int),
    tparam("muon_backend_steps", "muon", "backend_steps", as_int),
    tparam("muon_wd", "muon", "weight_decay", as_float),
    tparam("embed_lr", "muon", "embed_lr", as_float),
    tparam("tied_embed_lr", "muon", "tied_embed_lr", as_float),
    tparam("head_lr", "muon", "head_lr", as_float),
    tparam("scalar_lr", "muon", "scalar_lr", as_float),
    tparam("beta1", "muon", "beta1", as_float),
    tparam("beta2", "muon", "beta2", as_float),
    tparam("adam_eps", "muon", "adam_eps", as_float),
    tparam("embed_wd", "muon", "embed_weight_decay", as_float),
    custom("adam_wd", "techniques.muon.scalar_weight_decay (+ embed_weight_decay when the script has no EMBED_WD)", _apply_adam_wd),
    tparam("grad_clip_norm", "muon", "grad_clip_norm", as_float),
    ignored("muon_beta2", "defined in these scripts' Hyperparameters but never read"),
    flag("muon_row_normalize", "muon_eq_r"),
    tparam("warmdown_frac", "warmdown", "warmdown_frac", as_float),
    tparam("warmdown_iters", "warmdown", "warmdown_iters", as_int),
    tparam("min_lr", "min_lr", "min_lr", as_float, on_if=lambda v: v > 0),
    tparam("ema_decay", "ema", "decay", as_float, on_if=lambda v: v > 0),
    # ---- model techniques ------------------------------------------------------------------
    tparam("xsa_last_n", "xsa", "last_n", as_int, on_if=lambda v: v != 0),
    custom("rope_dims", "techniques.partial_rope.dims (on when 0 < dims < head dim)", _apply_rope_dims),
    ignored("rope_train_seq_len", "read by no model code of these scripts (the rotary cache gets TRAIN_SEQ_LEN)"),
    unmapped("rope_yarn", "NTK/YaRN RoPE base rescale: no golf technique", neutral=_off),
    flag("ln_scale", "ln_scale"),
    flag("skip_gates_enabled", "skip_gates"),
    tparam("num_loops", "depth_recurrence", "num_loops", as_int, on_if=lambda v: v > 0),
    tparam("loop_start", "depth_recurrence", "loop_start", as_int),
    tparam("loop_end", "depth_recurrence", "loop_end", as_int),
    tparam("enable_looping_at", "depth_recurrence", "enable_at", as_float),
    custom("recur_layers", "techniques.depth_recurrence (one extra pass over the segment)", _apply_recur_layers),
    custom("recur_start_step", "techniques.depth_recurrence.enable_at (from the log's timing)", _apply_recur_start_step),
    custom("parallel_residual_start", "techniques.parallel_residuals (form gptj)", _apply_parallel_residual_start),
    custom("parallel_start_layer", "techniques.parallel_residuals (form two_lane / isolated)", _apply_parallel_start_layer),
    tparam("parallel_final_lane", "parallel_residuals", "final_lane", as_str),
    flag("smear_gate_enabled", "smear_gate"),
    custom("gate_window", "techniques.{smear_gate,sparse_attn_gate,attn_out_gate}.window", _apply_gate_window),
    flag("sparse_attn_gate_enabled", "sparse_attn_gate"),
    tparam("sparse_attn_gate_init_std", "sparse_attn_gate", "init_std", as_float),
    tparam("sparse_attn_gate_scale", "sparse_attn_gate", "scale", as_float),
    flag("gated_attn_enabled", "gated_attn"),
    tparam("gated_attn_init_std", "gated_attn", "init_std", as_float),
    flag("attn_out_gate_enabled", "attn_out_gate"),
    tparam("attn_out_gate_src", "attn_out_gate", "src", as_str),
    flag("ve_enabled", "value_embeddings"),
    tparam("ve_dim", "value_embeddings", "dim", as_int),
    tparam("ve_layers", "value_embeddings", "layers", int_list),
    tparam("bigram_vocab_size", "bigram_hash", "buckets", as_int, on_if=lambda v: v > 0),
    tparam("bigram_dim", "bigram_hash", "dim", as_int),
    tparam("trigram_enabled", "bigram_hash", "trigram", as_bool, env=("TRIGRAM",)),
    tparam("mtp_num_heads", "mtp", "num_heads", as_int, on_if=lambda v: v > 0),
    tparam("mtp_loss_weight", "mtp", "loss_weight", as_float),
    flag("fused_ce_enabled", "fused_ce"),
    flag("caseops_enabled", "caseops", note="the dataset must be prepared with --caseops and the CaseOps tokenizer"),
    # ---- quantization and compression -------------------------------------------------------
    flag("gptq_enabled", "gptq"),
    tparam("gptq_calibration_batches", "gptq", "calibration_batches", as_int, on_if=lambda v: True, env=("GPTQ_CALIB_BATCHES",)),
    tparam("gptq_reserve_seconds", "gptq", "reserve_seconds", as_float),
    tparam("gptq_damp_factor", "gptq", "damp", as_float),
    tparam("gptq_block_size", "gptq", "block_size", as_int),
    tparam("matrix_bits", "gptq", "matrix_bits", as_int, on_if=lambda v: True),
    tparam("embed_bits", "gptq", "embed_bits", as_int),
    tparam("matrix_clip_sigmas", "gptq", "matrix_clip_sigmas", as_float),
    tparam("attn_clip_sigmas", "gptq", "attn_clip_sigmas", as_float),
    tparam("mlp_clip_sigmas", "gptq", "mlp_clip_sigmas", as_float),
    tparam("embed_clip_sigmas", "gptq", "embed_clip_sigmas", as_float),
    tparam("sdclip_k", "gptq", "matrix_clip_sigmas", as_float, on_if=lambda v: True, note="the PR #1334-lineage name of MATRIX_CLIP_SIGMAS"),
    custom("sdclip_k_embed", "techniques.gptq.embed_clip_sigmas (+ embed_bits 8)", _apply_sdclip_k_embed),
    custom("gated_attn_quant_gate", "techniques.gptq.gate_int8_patterns", _apply_quant_gate),
    unmapped("swa_enabled", "stochastic weight averaging (tight SWA, PR #162/#414): no golf technique; PR #1019 computes it "
             "but exports the EMA weights", neutral=_off),
    ignored("swa_every", "SWA snapshot interval (see swa_enabled)"),
    unmapped("lawa_enabled", "LAWA checkpoint averaging: no golf technique", neutral=_off),
    ignored("lawa_k", "LAWA setting (LAWA is off)"),
    ignored("lawa_freq", "LAWA setting (LAWA is off)"),
    unmapped("qat_enabled", "quantization-aware training from the start: no golf technique", neutral=_off),
    unmapped("late_qat_threshold", "late STE QAT once the LR multiplier drops below this (PR #315 lineage): no golf technique",
             neutral=_off),
    unmapped("dtg_enabled", "DTG gate (PR #1019 option): no golf technique", neutral=_off),
    unmapped("gated_attention", "PR #1019's gated attention with bias-4 init: no golf technique", neutral=_off),
    unmapped("value_residual", "value residual learning: no golf technique", neutral=_off),
    unmapped("gptq_calib_val", "GPTQ Hessians from validation tokens (PR #1430): golf's gptq calibrates on training data only", neutral=_off),
    unmapped("target_mb", "selective +-1 pruning down to a size target (PR #609 lineage): no golf technique"),
    flag("lqer_enabled", "lqer"),
    tparam("lqer_rank", "lqer", "rank", as_int),
    tparam("lqer_top_k", "lqer", "top_k", as_int),
    tparam("lqer_factor_bits", "lqer", "factor_bits", as_int),
    tparam("lqer_asym_enabled", "lqer", "asym", as_bool),
    tparam("lqer_asym_group", "lqer", "asym_group", as_int),
    custom("compressor", "byteshuffle_brotli | lzma_compress | pergroup_compress", _apply_compressor),
    # ---- evaluation --------------------------------------------------------------------------
    flag("sliding_window_enabled", "sliding_window"),
    custom("eval_stride", "techniques.sliding_window.stride (switches it on in scripts without SLIDING_WINDOW_ENABLED)", _apply_eval_stride),
    custom("ttt_enabled", "score_first_ttt, or lora_ttt/phased_ttt when the script has LoRA settings", _apply_ttt_enabled),
    custom("ttt_lr", "techniques.score_first_ttt.lr", _score_first("lr", as_float)),
    custom("ttt_epochs", "techniques.score_first_ttt.epochs", _score_first("epochs", as_int)),
    custom("ttt_momentum", "techniques.score_first_ttt.momentum", _score_first("momentum", as_float)),
    custom("ttt_chunk_tokens", "techniques.score_first_ttt.chunk_tokens", _score_first("chunk_tokens", as_int)),
    custom("ttt_freeze_blocks", "techniques.score_first_ttt.freeze_blocks", _score_first("freeze_blocks", as_int)),
    custom("ttt_grad_clip", "techniques.score_first_ttt.grad_clip", _score_first("grad_clip", as_float)),
    custom("ttt_batch_seqs", "techniques.score_first_ttt.batch_seqs", _score_first("batch_seqs", as_int)),
    custom("ttt_optimizer", "techniques.score_first_ttt.optimizer (LoRA scripts: lora_ttt)", _apply_ttt_optimizer),
    unmapped("ttt_lr_floor_frac", "TTT learning-rate floor (PR #1430): score_first_ttt decays to 0", neutral=_off),
    unmapped("ttt_second_pass_frac", "second TTT pass over some chunks (PR #1430): no golf parameter", neutral=_off),
    unmapped("ttt_second_pass_first", "which chunks the second TTT pass revisits (PR #1430): no golf parameter",
             neutral=lambda v: True),
    unmapped("ttt_hash_embed", "hash embedding trained at TTT time: printed by this log's script revision only, "
             "absent from the merged record script; no golf technique", neutral=_off),
    unmapped("ttt_hash_buckets", "bucket count of the TTT hash embedding (see ttt_hash_embed)", neutral=lambda v: True),
    unmapped("etlb_enabled", "eval-time logit bias (ETLB, PR #1399): no golf technique", neutral=_off),
    ignored("etlb_lr", "ETLB setting (ETLB is off in every record here)"),
    ignored("etlb_steps", "ETLB setting (ETLB is off in every record here)"),
    ignored("etlb_clip", "ETLB setting (ETLB is off in every record here)"),
    ignored("ttt_eval_batches", "debug: restrict TTT scoring to some batch ids (empty = all)"),
    unmapped("val_doc_fraction", "debug: score a random subset of documents", neutral=lambda v: v == 1 or v == 1.0),
    # per-document LoRA TTT and phased TTT (lora_ttt / phased_ttt)
    pending("ttt_lora_rank", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_lora_lr", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_lora_alpha", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_warm_start_a", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_chunk_size", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_eval_seq_len", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_batch_size", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_grad_steps", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_weight_decay", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_beta1", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    pending("ttt_beta2", ("lora_ttt", "phased_ttt"), _LORA_WHY),
    custom("ttt_k_lora", "techniques.lora_ttt.sites (c_k)", _apply_lora_sites),
    custom("ttt_mlp_lora", "techniques.lora_ttt.sites (mlp)", _apply_lora_sites),
    custom("ttt_o_lora", "techniques.lora_ttt.sites (attn: the output projection)", _apply_lora_sites),
    pending("phased_ttt_enabled", ("phased_ttt",), _PHASED_WHY, switch=lambda v, plan: as_bool(v)),
    pending("phased_ttt_prefix_docs", ("phased_ttt",), _PHASED_WHY),
    pending("phased_ttt_num_phases", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_lr", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_momentum", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_epochs", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_chunk_tokens", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_batch_seqs", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_grad_clip", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_respect_doc_boundaries", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_warmup_chunks", ("phased_ttt",), _PHASED_WHY),
    pending("global_ttt_warmup_start_lr", ("phased_ttt",), _PHASED_WHY),
    # pre-quantization TTT (prequant_ttt)
    pending("prequant_ttt_enabled", ("prequant_ttt",), _PREQ_WHY, switch=lambda v, plan: as_bool(v)),
    pending("prequant_ttt_epochs", ("prequant_ttt",), _PREQ_WHY),
    pending("prequant_ttt_lr", ("prequant_ttt",), _PREQ_WHY),
    pending("prequant_ttt_freeze_blocks", ("prequant_ttt",), _PREQ_WHY),
    pending("prequant_ttt_batch_seqs", ("prequant_ttt",), _PREQ_WHY),
    pending("prequant_ttt_grad_clip", ("prequant_ttt",), _PREQ_WHY),
    pending("prequant_ttt_cosine_decay", ("prequant_ttt",), _PREQ_WHY),
    # SLOT and the n-gram mixer (slot / ngram_mixer)
    pending("slot_enabled", ("slot",), _SLOT_WHY, switch=lambda v, plan: as_bool(v)),
    custom("slot_persample", "techniques.slot.logit_bias", _apply_slot_persample),
    pending("slot_steps", ("slot",), _SLOT_WHY),
    pending("slot_lr", ("slot",), _SLOT_WHY),
    pending("slot_lr_min", ("slot",), _SLOT_WHY),
    pending("slot_beta1", ("slot",), _SLOT_WHY),
    pending("slot_beta2", ("slot",), _SLOT_WHY),
    pending("slot_beta2_ps", ("slot",), _SLOT_WHY),
    pending("slot_batch_seqs", ("slot",), _SLOT_WHY),
    pending("slot_ngram_enabled", ("ngram_mixer",), _NGRAM_WHY, switch=lambda v, plan: as_bool(v)),
    pending("ngram_order", ("ngram_mixer",), _NGRAM_WHY),
    pending("ngram_buckets", ("ngram_mixer",), _NGRAM_WHY),
    pending("ngram_alpha_base", ("ngram_mixer",), _NGRAM_WHY),
    pending("ngram_alpha_range", ("ngram_mixer",), _NGRAM_WHY),
    pending("ngram_alpha_center", ("ngram_mixer",), _NGRAM_WHY),
    pending("ngram_min_tokens", ("ngram_mixer",), _NGRAM_WHY),
    pending("ngram_min_count", ("ngram_mixer",), _NGRAM_WHY),
)

ROW_BY_NAME: dict[str, Row] = {}
for _row in ROWS:
    if _row.setting in ROW_BY_NAME:
        raise RuntimeError(f"importer: two rows for {_row.setting}")
    ROW_BY_NAME[_row.setting] = _row
    for _alias in _row.env:
        ROW_BY_NAME.setdefault(_alias.lower(), _row)


@dataclass(frozen=True)
class Implied:
    """A technique a record script hard-wires, recognised by settings only that generation prints."""

    technique: str
    markers: tuple[str, ...]  # any of these settings present -> the technique is on
    params: tuple[tuple[str, Any], ...] = ()
    note: str = ""


IMPLIED: tuple[Implied, ...] = (
    Implied(
        "leaky_relu_sq",
        ("skip_gates_enabled", "muon_row_normalize", "ve_enabled", "bigram_vocab_size", "gptq_calib_batches", "recur_layers"),
        (("negative_slope", 0.5),),
        "LeakyReLU(0.5)^2 MLP: hard-wired in every record script from PR #549 on",
    ),
    Implied("fused_mlp", ("ttt_lora_rank",), (), "fused LeakyReLU^2 MLP kernel: hard-wired from PR #1530 on (which added per-document LoRA TTT)"),
    Implied("doc_packing", ("ttt_lora_rank",), (), "DocumentPackingLoader + varlen attention (no attention across BOS): hard-wired from PR #1530 on"),
    Implied("polar_express", ("sparse_attn_gate_enabled",), (), "Polar Express coefficients: baked into Newton-Schulz from PR #1787 on (which added SPARSE_ATTN_GATE_*)"),
    Implied("muon_eq_r", ("recur_layers",), (), "MuonEq-R: built into the optimizer of the PR #1285/#1334/#1487 scripts (no flag)"),
    Implied("ema", ("swa_enabled", "lawa_enabled"), (("decay", 0.997),), "EMA 0.997 after every step: hard-wired in the PR #414 -> #1019 scripts"),
    Implied(
        "gptq", ("gptq_calib_batches",), (("embed_bits", 8), ("calibration_batches", 256)),
        "GPTQ int6 on the block matrices, int8 embedding: hard-wired in the PR #1019 scripts (whose clip is a per-row "
        "percentile search rather than SDClip: approximated by golf's SDClip defaults)",
    ),
    Implied("lzma_compress", ("swa_enabled",), (("preset", 9),), "the quantized blob is LZMA preset 9 in the PR #1019 scripts"),
)

@dataclass(frozen=True)
class Gap:
    """Something a record script hard-wires that golf cannot express, recognised like :class:`Implied`."""

    label: str
    markers: tuple[str, ...]
    message: str


GAPS: tuple[Gap, ...] = (
    Gap("shuffled_loader", ("parallel_residual_start", "etlb_enabled"),
        "training batches come from ShuffledSequenceLoader (random shard and offset per sequence, PR #1394 -> #1514); "
        "golf's loader streams the shards in order"),
    Gap("selective_prune", ("recur_layers", "swa_enabled"),
        "selective +-1 pruning of the lowest-error quantized values until the artifact fits (PR #609 lineage, "
        "hard-wired in these scripts): no golf technique"),
    Gap("static_smear_gate", ("swa_enabled",),
        "static per-dimension SmearGate (PR #65 form, 512 parameters): golf's smear_gate is the input-dependent PR #1667 "
        "form, so it is not enabled"),
    Gap("ar_calibration", ("gptq_calib_batches",),
        "GPTQ Hessians from autoregressively self-generated sequences (PR #1019; PR #1430 switches to validation tokens "
        "with GPTQ_CALIB_VAL=1): golf's gptq calibrates on training batches"),
)

# The order techniques are written in (stack order is hook order): data, model (as the lineage
# added them: a child stack appends its new techniques), optimizer, loss, quantization, evaluation.
CANONICAL_ORDER = (
    "caseops", "leaky_relu_sq", "fused_mlp", "xsa", "partial_rope", "ln_scale", "qk_gain", "skip_gates",
    "parallel_residuals", "depth_recurrence", "value_embeddings", "bigram_hash", "sparse_attn_gate", "gated_attn",
    "attn_out_gate", "smear_gate", "ema", "muon_eq_r", "polar_express", "min_lr", "fused_ce", "mtp", "gptq", "lqer",
    "byteshuffle_brotli", "lzma_compress", "pergroup_compress", "prequant_ttt", "sliding_window", "score_first_ttt",
    "lora_ttt", "phased_ttt", "ngram_mixer", "slot",
)


def mapping_table() -> list[dict[str, str]]:
    """The rows as dicts (setting, env var, kind, target, note), for docs and ``--mapping``."""
    rows = [
        {"setting": r.setting, "env": ", ".join([r.setting.upper(), *r.env]), "kind": r.kind, "target": r.target, "note": r.note}
        for r in ROWS
    ]
    rows += [
        {"setting": f"(implied) {i.technique}", "env": "any of " + ", ".join(m.upper() for m in i.markers), "kind": "implied",
         "target": f"technique {i.technique}", "note": i.note}
        for i in IMPLIED
    ]
    return rows


# ---------------------------------------------------------------------------------------------
# Source -> stack tables
# ---------------------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        try:
            return as_bool(a) == as_bool(b)
        except ValueError:
            return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _row_for(name: str) -> Row | None:
    return ROW_BY_NAME.get(name)


def disagreements(src: RecordSource) -> list[tuple[str, Any, Any]]:
    """(setting, README value, log value) where the README run command and the log's dump differ."""
    out = []
    for name, readme_value in src.readme.items():
        row = _row_for(name)
        key = row.setting if row else name
        if key not in src.log or (row and row.kind == "environment"):
            continue
        norm = row.compare if row and row.compare else (lambda v: v)
        if not _same(norm(readme_value), norm(src.log[key])):
            out.append((name, readme_value, src.log[key]))
    return out


def _canonical(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings keyed by row name (env aliases such as DATA_PATH folded onto their row)."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        row = _row_for(name)
        out[row.setting if row else name] = value
    return out


def build_plan(src: RecordSource, catalog: Catalog) -> Plan:
    """Apply every row and implied rule to ``src``; the plan holds golf keys, flags and notes."""
    src.settings = _canonical(src.settings)
    plan = Plan(src, catalog)
    for name, value in src.settings.items():
        row = _row_for(name)
        if row is None:
            plan.note(name, "unmapped", "no mapping row: golf does not know this setting")
            continue
        try:
            row.apply(value, plan, name)
        except ValueError as exc:
            raise GolfError(f"{name.upper()}={value!r}: {exc}") from None
    for rule in IMPLIED:
        if plan.flags.get(rule.technique) is not False and any(m in src.settings for m in rule.markers):
            if rule.technique not in plan.flags:
                plan.enable(rule.technique, True, f"(implied) {rule.technique}")
            for k, v in rule.params:
                plan.params.setdefault(rule.technique, {}).setdefault(k, v)
            plan.notes.append(Note(f"(implied) {rule.technique}", None, "mapped", rule.note))
    for gap in GAPS:
        if any(m in src.settings for m in gap.markers):
            plan.notes.append(Note(f"(hard-wired) {gap.label}", None, "unmapped", gap.message))
    # LoRA TTT before PR #1787 (PR #1530 -> #1736 scripts, no SPARSE_ATTN_GATE_*) had neither
    # PR #1767's rank-scaled output (alpha; none = alpha equal to the rank) nor its warm-started A.
    # No dump prints either (they are import-time class attributes), so later scripts keep golf's
    # defaults, PR #1767's alpha 144 and warm start.
    if _lora_family(plan) and not plan.has("sparse_attn_gate_enabled") and plan.has("ttt_lora_rank") and "lora_ttt" in catalog:
        plan.params.setdefault("lora_ttt", {}).update(alpha=float(as_int(plan.value("ttt_lora_rank"))), warm_start_a=False)
        plan.notes.append(Note("(pre-#1767) lora_ttt", None, "mapped",
                               "techniques.lora_ttt.alpha = rank (no output scaling) and warm_start_a = false: PR #1767's changes are absent from these scripts"))
    # Scripts without per-family clip sigmas clip every matrix with MATRIX_CLIP_SIGMAS (SDCLIP_K);
    # golf's gptq has attention/MLP families, so they get the same value.
    gptq = plan.params.get("gptq", {})
    if "matrix_clip_sigmas" in gptq:
        for fam, setting in (("attn_clip_sigmas", "attn_clip_sigmas"), ("mlp_clip_sigmas", "mlp_clip_sigmas")):
            if setting not in src.settings:
                gptq.setdefault(fam, gptq["matrix_clip_sigmas"])
    if src.nproc is not None and "run.nproc_per_node" not in plan.core:
        plan.core["run.nproc_per_node"] = src.nproc
    return plan


def _seeds(src: RecordSource) -> list[int]:
    sub = src.submission
    seeds = sub.get("seeds")
    if isinstance(seeds, list) and seeds:
        return [int(s) for s in seeds]
    results = sub.get("seed_results")
    if isinstance(results, dict) and results:
        return [int(s) for s in results]
    return []


def _expect(src: RecordSource) -> dict[str, Any]:
    from golf_core.stats import sample_std

    sub = src.submission
    out: dict[str, Any] = {}
    results = sub.get("seed_results") if isinstance(sub.get("seed_results"), dict) else {}
    if isinstance(sub.get("val_bpb"), (int, float)):
        out["val_bpb"] = float(sub["val_bpb"])
    if isinstance(sub.get("val_bpb_std"), (int, float)):
        out["val_bpb_std"] = float(sub["val_bpb_std"])
    elif len(results) >= 2 and all(isinstance(r.get("val_bpb"), (int, float)) for r in results.values()):
        out["val_bpb_std"] = round(sample_std([float(r["val_bpb"]) for r in results.values()]), 5)
    sizes = [int(r["artifact_bytes"]) for r in results.values() if isinstance(r.get("artifact_bytes"), int)]
    for key in ("artifact_bytes_max", "bytes_total"):
        if isinstance(sub.get(key), int):
            sizes.append(int(sub[key]))
    if sizes:
        out["artifact_bytes_max"] = max(sizes)
    return out


def _in_field_order(table: dict[str, Any], cls: type) -> dict[str, Any]:
    order = {f.name: i for i, f in enumerate(dataclasses.fields(cls))}
    return dict(sorted(table.items(), key=lambda kv: order.get(kv[0], len(order))))


def plan_tables(plan: Plan, catalog: Catalog, inherited: Iterable[str] = ()) -> dict[str, Any]:
    """The stack tables (no ``extends``) of a plan: every stated value, techniques in canonical order.

    ``inherited``: techniques a parent already runs; a partial source keeps them on unless it
    switches them off, so their stated parameters are written.
    """
    src = plan.source
    tables: dict[str, Any] = {"schema": 1}
    name = f"pr{src.pr}" if src.pr else (src.paths[0].parent.name or "imported")
    stack_meta: dict[str, Any] = {"name": name}
    if src.title:
        summary = src.title.removeprefix("Record:").removeprefix("Record candidate:").strip()
        stack_meta["summary"] = re.split(r"\s+[—-]+\s+val_bpb", summary)[0].strip()
    stack_meta["track"] = str(src.submission.get("track") or "10min_16mb")
    tables["stack"] = stack_meta
    prov: dict[str, Any] = {}
    if src.pr:
        prov["pr"] = src.pr
    author = src.submission.get("github_id") or src.submission.get("author")
    if author:
        prov["author"] = str(author)
    prov["based_on"] = []
    expect = _expect(src)
    if expect:
        prov["expect"] = expect
    tables["provenance"] = prov

    sections: dict[str, dict[str, Any]] = {}
    for key, value in plan.core.items():
        section, _, field_name = key.partition(".")
        sections.setdefault(section, {})[field_name] = value
    seeds = _seeds(src)
    if seeds:
        sections.setdefault("run", {})["seeds"] = seeds
    if "data" in sections:
        sections["data"].setdefault("tokenizer", "")
    from golf_core.config import CORE_SECTIONS

    for section in ("run", "data", "model", "train", "eval"):
        if section in sections:
            tables[section] = _in_field_order(sections[section], CORE_SECTIONS[section])

    enabled = [t for t, on in plan.flags.items() if on]
    enabled += [t for t in inherited if t not in plan.flags and t in plan.params and t not in enabled]
    for t in list(enabled):
        if t not in catalog:
            enabled.remove(t)
            plan.note(plan.flag_setting.get(t, t), "pending", f"technique {t} is not in the catalog yet")
            continue
        for req in catalog.get(t).cls.requires:
            if req not in enabled and req in catalog:
                enabled.append(req)
                plan.notes.append(Note(f"(requires) {req}", None, "mapped", f"{t} requires {req}"))
    order = {n: i for i, n in enumerate(CANONICAL_ORDER)}
    enabled.sort(key=lambda t: order.get(t, len(order)))
    techniques: dict[str, Any] = {}
    defaults = {e.name for e in catalog.defaults()}
    for t in [d for d in ("muon", "warmdown") if d in plan.params] + enabled:
        params = dict(plan.params.get(t, {}))
        valid = {f.name for f in dataclasses.fields(catalog.get(t).cls.Params)}
        for key in list(params):
            if key not in valid:
                del params[key]
                plan.note(plan.param_setting.get((t, key), key), "unmapped", f"{t} has no parameter {key!r}")
        techniques[t] = _in_field_order(params, catalog.get(t).cls.Params)
    # Parameters of techniques this run does not enable are reported, not written (unless the
    # same setting also reached a technique or core key that is in effect).
    effective = set(plan.core_setting.values()) | {
        s for (t, _), s in plan.param_setting.items() if t in techniques
    } | {s for t, s in plan.flag_setting.items() if t in techniques}
    for t, params in plan.params.items():
        if t in techniques or t in defaults:
            continue
        for key in params:
            setting = plan.param_setting.get((t, key))
            if setting and setting not in effective:
                plan.notes.append(Note(setting, src.settings.get(setting), "unused", f"technique {t} is off in this run"))
    if techniques:
        tables["techniques"] = techniques
    return tables


# ---------------------------------------------------------------------------------------------
# The result, with an optional parent
# ---------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    source: RecordSource
    tables: dict[str, Any]  # the written tables (relative to the parent when there is one)
    full: dict[str, Any]  # the stated tables, before the parent was subtracted
    notes: list[Note]
    disagreements: list[tuple[str, Any, Any]]
    parent: Path | None = None
    parent_distance: dict[str, int] = field(default_factory=dict)  # candidate -> diff size (auto)

    def by_category(self, category: str) -> list[Note]:
        seen: set[str] = set()
        out = []
        for n in self.notes:
            if n.category == category and n.setting not in seen:
                seen.add(n.setting)
                out.append(n)
        return out

    def report(self) -> str:
        """Every setting that did not map plainly, and the README/log disagreements."""
        src = self.source
        lines = [f"source: {', '.join(str(p) for p in src.paths)} ({'complete dump' if src.complete else 'partial: unstated settings come from the parent'})"]
        if self.parent:
            lines.append(f"parent: {self.parent}")
        if self.parent_distance:
            ranked = sorted(self.parent_distance.items(), key=lambda kv: kv[1])
            lines.append("parent candidates (reviewer-level differences): " + ", ".join(f"{Path(p).name} {d}" for p, d in ranked))
        mapped = len(self.by_category("mapped"))
        lines.append(f"settings: {len(src.settings)} read, {mapped} mapped")
        titles = {
            "approximated": "approximated (golf's parameter differs in kind; value converted)",
            "unmapped": "NOT MAPPED (golf has no parameter for these)",
            "pending": "PENDING (their technique is not in golf's catalog yet)",
            "unused": "not written (their technique is off in this run)",
            "ignored": "ignored (unused by the script, debug, or already what golf does)",
            "environment": "ignored: environment",
        }
        for category, title in titles.items():
            notes = self.by_category(category)
            if not notes:
                continue
            lines.append(f"{title}: {len(notes)}")
            for n in notes:
                shown = "" if n.value is None else "=" + (repr(n.value) if isinstance(n.value, str) else json.dumps(n.value))
                lines.append(f"  {n.setting}{shown}: {n.message}")
        if src.readme_unresolved:
            lines.append("README assignments left unresolved (shell variables): " + ", ".join(src.readme_unresolved))
        if self.disagreements:
            lines.append(f"README and log DISAGREE on {len(self.disagreements)} setting(s) (the log's value is used):")
            for name, readme_value, log_value in self.disagreements:
                lines.append(f"  {name.upper()}: README {readme_value!r}, log {log_value!r}")
        elif src.readme and src.log:
            lines.append("README run command and log agree on every setting both state")
        readme_only = sorted(k for k in src.readme if k not in src.log and (_row_for(k) is None or _row_for(k).setting not in src.log))
        if readme_only and src.log:
            lines.append("README sets settings the log does not print: " + ", ".join(k.upper() for k in readme_only))
        return "\n".join(lines)

    def text(self, out_path: Path | None = None) -> str:
        """The stack file: a header naming the source, the tables, and the unmapped settings as comments."""
        tables = dict(self.tables)
        head = [
            f"# Imported by `golf stack import` from {', '.join(p.name for p in self.source.paths)}"
            + (f" (record PR #{self.source.pr})" if self.source.pr else "") + ".",
            "# Values are those the run used; settings golf cannot express are listed at the end.",
        ]
        body: dict[str, Any] = {}
        if self.parent is not None:
            rel = os.path.relpath(self.parent, out_path.parent if out_path else Path.cwd())
            body["extends"] = rel
        body.update(tables)
        text = "\n".join(head) + "\n" + dumps_toml(body)
        groups: dict[tuple[str, str], list[Note]] = {}
        for c in ("approximated", "unmapped", "pending"):
            for n in self.by_category(c):
                groups.setdefault((c, n.message), []).append(n)
        if groups:
            text += "\n# Not expressed exactly in golf (`golf stack import` prints the full report):\n"
            for (category, message), notes in groups.items():
                settings = ", ".join(
                    (n.setting if n.setting.startswith("(") else n.setting.upper()) + ("" if n.value is None else f"={_shell(n.value)}")
                    for n in notes
                )
                text += f"#   [{category}] {settings}\n#       {message}\n"
        return text


def _shell(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _write_temp(tables: dict[str, Any], parent: Path | None, directory: Path) -> Path:
    body: dict[str, Any] = {}
    if parent is not None:
        body["extends"] = str(parent.resolve())
    body.update(tables)
    fd, name = tempfile.mkstemp(suffix=".toml", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(dumps_toml(body))
    return Path(name)


def resolve_tables(tables: dict[str, Any], catalog: Catalog, parent: Path | None = None) -> ResolvedStack:
    """Resolve stack tables (as an import writes them) through the normal validator."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_temp(tables, parent, Path(tmp))
        return resolve(path, catalog)


def _tech_table(stack: ResolvedStack, name: str) -> dict[str, Any] | None:
    params = stack.techniques.get(name) or stack.default_params.get(name)
    if params is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


def subtract_parent(full: dict[str, Any], parent_stack: ResolvedStack, imported: ResolvedStack | None, complete: bool) -> dict[str, Any]:
    """The child tables: what the import states that the parent does not already resolve to.

    A complete source (a dump; ``imported`` is its standalone resolution) is compared field by
    field, defaults included, so the child resolves exactly like the standalone import, and the
    parent's techniques it does not run are switched off. A partial source (an env list) only
    contributes what it states and leaves everything else as the parent has it.
    """
    out: dict[str, Any] = {"schema": 1}
    for meta in ("stack", "provenance"):
        if meta in full:
            out[meta] = full[meta]
    for section in ("run", "data", "model", "train", "eval", "artifact"):
        parent_section = dataclasses.asdict(getattr(parent_stack.core, section))
        if complete and imported is not None:
            stated = dataclasses.asdict(getattr(imported.core, section))
        else:
            stated = full.get(section, {})
        changed = {k: _plainv(v) for k, v in stated.items() if _plainv(parent_section.get(k)) != _plainv(v)}
        if changed:
            out[section] = changed
    techniques: dict[str, Any] = {}
    names = list(full.get("techniques", {}))
    if complete and imported is not None:
        names = list(dict.fromkeys([*names, *imported.default_params]))
    for name in names:
        parent_params = _tech_table(parent_stack, name)
        enabled_in_parent = name in parent_stack.techniques or name in parent_stack.default_params
        if complete and imported is not None:
            stated = _tech_table(imported, name) or {}
        else:
            stated = full.get("techniques", {}).get(name, {})
        if not enabled_in_parent:
            # New here: what the source states (the rest takes the technique's defaults either way).
            techniques[name] = full.get("techniques", {}).get(name, stated)
            continue
        changed = {k: _plainv(v) for k, v in stated.items() if parent_params is not None and _plainv(parent_params.get(k)) != _plainv(v)}
        if changed:
            techniques[name] = changed
    if complete and imported is not None:
        for name in parent_stack.techniques:
            if name not in imported.techniques:
                techniques[name] = {"enabled": False}
    if techniques:
        out["techniques"] = techniques
    return out


def _plainv(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def candidate_parents(stacks_dir: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    skip = {Path(p).resolve() for p in exclude}
    return [p for p in sorted(stacks_dir.glob("*.toml")) if p.resolve() not in skip]


def import_record(
    sources: Iterable[Path | str],
    catalog: Catalog,
    *,
    parent: Path | str | None = None,
    stacks_dir: Path | None = None,
    exclude: Iterable[Path] = (),
) -> ImportResult:
    """Read a record and produce its stack (``parent``: a stack file, ``"auto"`` or None)."""
    src = read_record(sources)
    plan = build_plan(src, catalog)
    inherited: list[str] = []
    if parent is not None and str(parent) != "auto" and not src.complete and Path(parent).is_file():
        inherited = list(resolve(Path(parent), catalog).techniques)
    full = plan_tables(plan, catalog, inherited)
    result = ImportResult(src, full, full, plan.notes, disagreements(src))
    if parent is None:
        if not src.complete:
            result.notes.append(Note("(source)", None, "unmapped",
                                     "partial source without a parent: settings it does not state take golf's defaults; pass --parent"))
        return result
    if str(parent) == "auto":
        directory = stacks_dir or Path(__file__).resolve().parent.parent / "stacks"
        candidates = candidate_parents(directory, exclude)
        if not candidates:
            raise GolfError(f"--parent auto: no stack files in {directory}")
        distances: dict[str, int] = {}
        best: tuple[tuple[int, int], Path] | None = None
        for cand in candidates:
            try:
                cand_stack = resolve(cand, catalog)
                imported = resolve_tables(full, catalog) if src.complete else resolve_tables(
                    subtract_parent(full, cand_stack, None, False), catalog, cand)
            except GolfError:
                continue  # a stack that does not validate today is no parent
            grouped = stack_diff(cand_stack, imported, catalog=catalog)
            d = grouped.count()
            distances[str(cand)] = d
            # Fewest differences, a different dataset or vocabulary counting as a different record
            # family; on a tie, fewest techniques added or removed (the structural differences).
            family = sum(k in grouped.core for k in ("data.dataset", "model.vocab_size"))
            key = (d + 5 * family, len(grouped.added) + len(grouped.removed))
            if best is None or key < best[0]:
                best = (key, cand)
        if best is None:
            raise GolfError(f"--parent auto: none of the stacks in {directory} validates")
        result.parent_distance = distances
        parent_path = best[1]
    else:
        parent_path = Path(parent)
        if not parent_path.is_file():
            raise GolfError(f"--parent {parent}: stack file not found")
    parent_stack = resolve(parent_path, catalog)
    if not src.complete and not inherited:
        # Re-plan against the chosen parent: its techniques stay on, so their stated params count.
        plan = build_plan(src, catalog)
        full = plan_tables(plan, catalog, list(parent_stack.techniques))
        result = ImportResult(src, full, full, plan.notes, disagreements(src), parent_distance=result.parent_distance)
    imported = resolve_tables(full, catalog) if src.complete else None
    if imported is None:
        # A partial source is the parent plus what it states.
        imported = resolve_tables(subtract_parent(full, parent_stack, None, False), catalog, parent_path)
    child = subtract_parent(full, parent_stack, imported, src.complete)
    if src.complete:
        # A child keeps its parent's technique order and appends the rest; say so when that
        # reorders techniques of one stage (hook order) relative to the standalone import.
        grouped = stack_diff(imported, resolve_tables(child, catalog, parent_path), catalog=catalog)
        if grouped.order:
            result.notes.append(Note("(order)", None, "approximated",
                                     f"techniques run in the parent's order then the new ones: {', '.join(grouped.order[1])} "
                                     f"(standalone import: {', '.join(grouped.order[0])})"))
    prov = dict(child.get("provenance", {}))
    parent_prov = parent_stack.meta.get("provenance", {})
    if parent_prov.get("pr") and parent_prov.get("pr") != src.pr:
        prov["based_on"] = [parent_prov["pr"]]
    elif parent_prov.get("pr"):  # re-importing a record onto its own stack keeps that stack's parents
        prov["based_on"] = list(parent_prov.get("based_on", []))
    child["provenance"] = prov
    result.tables = child
    result.parent = parent_path.resolve()
    return result


__all__ = [
    "CANONICAL_ORDER", "IMPLIED", "ROWS", "ImportResult", "Implied", "Note", "Plan", "RecordSource", "Row",
    "build_plan", "disagreements", "import_record", "mapping_table", "parse_hyperparameter_dump", "parse_readme_command",
    "parse_script_defaults", "parse_timeline", "parse_train_losses", "parse_value", "read_record", "resolve_tables",
    "subtract_parent", "unwrap_script", "GAPS", "Gap",
]
