"""``golf new``: scaffold a technique that works, with its README and a test that passes as generated.

Two layouts:

* **package** (the default): ``plugins/<name>/{__init__.py, README.md, test_<name>.py}`` in the
  repository's ``plugins/`` folder beside ``golf_core``, found by the catalog as a built-in;
* **distribution** (``--dir`` anywhere else): ``<dir>/golf-<name>/`` with ``pyproject.toml``
  declaring the ``golf.plugins`` entry point ``<name> = "golf_<name>:<Class>"``, the package
  ``golf_<name>/``, ``README.md`` and ``tests/test_<name>.py``; ``pip install -e .`` registers it.

Each stage has a template in ``golf_core/templates/plugin/<stage>/`` (``string.Template`` files)
with one real hook implementation (model: an embedding transform; optim: a schedule wrapper;
loss: a loss wrapper; quant: a ``golf_refine_quant``; eval: an eval adapter) and a test that
checks its math against an independent reference and trains a micro stack with it. The README's
parameter table is read from the generated ``Params`` (by parsing, not importing), so it matches
the code. Files are written into a temporary folder beside the target and renamed into place:
a failure leaves nothing behind.

:func:`register_distribution` makes a distribution's entry points visible without pip or a
network (a ``.dist-info`` folder on ``sys.path``): what the tests use to "install" one.
"""

from __future__ import annotations

import ast
import json
import keyword
import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from golf_core.errors import GolfError

SCAFFOLD_STAGES = ("model", "optim", "loss", "quant", "eval")
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "plugin"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
# Names the templates import or define next to the technique class.
RESERVED_CLASS_NAMES = frozenset({"Technique", "Legality", "Params", "EvalAdapter", "Tensor"})
LAYOUTS = ("auto", "package", "distribution")


@dataclass(frozen=True)
class ScaffoldResult:
    name: str
    stage: str
    layout: str  # "package" or "distribution"
    path: Path  # the folder created
    module: str  # import path of the technique's package
    class_name: str
    files: list[Path] = field(default_factory=list)
    test_command: str = ""

    def next_steps(self) -> list[str]:
        """What to run next, as shell lines."""
        if self.layout == "distribution":
            return [
                f"cd {self.path}",
                "pip install -e .            # registers the golf.plugins entry point",
                "python -m pytest tests -q   # the generated test passes as generated",
                f"golf show {self.name}",
                f"golf train stacks/tiny.toml --enable {self.name}",
            ]
        return [
            self.test_command,
            f"golf show {self.name}",
            f"golf train stacks/tiny.toml --enable {self.name}",
        ]


def class_name_for(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def default_plugins_dir() -> Path:
    """The repository's ``plugins/`` folder, beside ``golf_core``."""
    import golf_core

    return Path(golf_core.__file__).resolve().parent.parent / "plugins"


def _snake(text: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", text)
    text = re.sub(r"[^a-zA-Z0-9]+", "_", text).strip("_").lower()
    text = re.sub(r"_+", "_", text)
    return text if text and text[0].isalpha() else f"t_{text}" if text else "my_technique"


def validate_name(name: str, catalog=None) -> str:
    """Check ``name`` as a new technique name; returns its class name, raises a one-line GolfError."""
    if not NAME_PATTERN.match(name or ""):
        raise GolfError(
            f"'{name}' is not a valid technique name: use lowercase letters, digits and single underscores, "
            f"starting with a letter (e.g. '{_snake(name or '')}')"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise GolfError(f"'{name}' is a Python keyword; pick another name (e.g. '{name}_gate')")
    class_name = class_name_for(name)
    if class_name in RESERVED_CLASS_NAMES:
        raise GolfError(f"'{name}' would make the class '{class_name}', which shadows golf's own; pick another name")
    if catalog is not None and name in catalog:
        entry = catalog.get(name)
        raise GolfError(f"'{name}' is already a technique ({entry.source}: {entry.location}); pick another name")
    return class_name


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_INSTALL_CHECK = '''
from golf_core.testing import catalog

if "{name}" not in catalog():
    raise RuntimeError(
        "technique '{name}' is not installed: run `pip install -e .` in the {folder} folder "
        "(it registers the golf.plugins entry point; GOLF_DISABLE_PLUGIN_AUTOLOAD must not be 1)"
    )
'''


def _template(rel: str) -> Template:
    path = TEMPLATE_DIR / rel
    try:
        return Template(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GolfError(f"golf's plugin template {path} is missing; reinstall golf") from None


def _class_info(source: str, class_name: str) -> tuple[str, str, list[dict[str, str]]]:
    """Summary line, the rest of the docstring, and the Params fields (name, type, default, help)."""
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    doc = (ast.get_docstring(cls) or "").strip().splitlines()
    summary = doc[0] if doc else ""
    description = " ".join(line.strip() for line in doc[1:] if line.strip())
    rows = []
    params = next((n for n in cls.body if isinstance(n, ast.ClassDef) and n.name == "Params"), None)
    for node in params.body if params else []:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(node.value, ast.Call):
            args = node.value.args
            rows.append(
                {
                    "name": node.target.id,
                    "type": ast.unparse(node.annotation),
                    "default": ast.unparse(args[0]) if args else "",
                    "help": args[1].value if len(args) > 1 and isinstance(args[1], ast.Constant) else "",
                }
            )
    return summary, description, rows


def _params_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "None."
    lines = ["| name | type | default | help |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['type']} | {r['default']} | {r['help']} |" for r in rows]
    return "\n".join(lines)


def _stack_table(name: str, rows: list[dict[str, str]]) -> str:
    from golf_core.stack import dumps_toml

    values = {r["name"]: ast.literal_eval(r["default"]) for r in rows}
    return dumps_toml({"techniques": {name: values}}).strip() if values else f"[techniques.{name}]"


def render(name: str, stage: str, layout: str, module: str, folder: str) -> dict[str, str]:
    """Relative path -> text of every file of the scaffold."""
    if stage not in SCAFFOLD_STAGES:
        raise GolfError(f"--stage {stage}: golf new has templates for {', '.join(SCAFFOLD_STAGES)}")
    class_name = class_name_for(name)
    dist_name = f"golf-{name.replace('_', '-')}"
    install_check = _INSTALL_CHECK.format(name=name, folder=folder) if layout == "distribution" else ""
    values = {"name": name, "class_name": class_name, "module": module, "stage": stage, "install_check": install_check}
    init_py = _template(f"{stage}/__init__.py.tmpl").substitute(values)
    test_py = _template(f"{stage}/test_plugin.py.tmpl").substitute(values)
    summary, description, rows = _class_info(init_py, class_name)
    if layout == "distribution":
        package_dir, test_rel = module, f"tests/test_{name}.py"
        test_command = "python -m pytest tests -q"
        install = (
            "\n## Install and use\n\n```\npip install -e .            # registers the golf.plugins entry point\n"
            f"golf list --stage {stage}        # {name} appears, source: entry point\n"
            f"golf train stacks/tiny.toml --enable {name}\n```\n"
        )
    else:
        package_dir, test_rel = "", f"test_{name}.py"
        test_command = f"python -m pytest {folder}/{name} -q"
        install = f"\n## Use\n\n```\ngolf show {name}\ngolf train stacks/tiny.toml --enable {name}\n```\n"
    readme = _template("README.md.tmpl").substitute(
        values, summary=summary, description=description, params_table=_params_table(rows),
        stack_table=_stack_table(name, rows), install=install, test_file=test_rel, test_command=test_command,
    )
    files = {f"{package_dir}/__init__.py".lstrip("/"): init_py, test_rel: test_py, "README.md": readme}
    if layout == "distribution":
        files["pyproject.toml"] = _template("pyproject.toml.tmpl").substitute(
            values, dist_name=dist_name, summary_toml=json.dumps(summary)
        )
    return files


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def scaffold(
    name: str,
    stage: str = "model",
    dest: Path | str | None = None,
    *,
    layout: str = "auto",
    catalog=None,
    plugins_dirs: list[Path] | tuple[Path, ...] = (),
) -> ScaffoldResult:
    """Create the technique ``name`` of ``stage`` in ``dest`` (default: the repository's ``plugins/``).

    ``layout="auto"`` makes a package when ``dest`` is the repository's ``plugins/`` folder and a
    distribution anywhere else. ``catalog`` (default: every installed technique plus
    ``plugins_dirs``) is what the name must not clash with.
    """
    if stage not in SCAFFOLD_STAGES:
        raise GolfError(f"--stage {stage}: golf new has templates for {', '.join(SCAFFOLD_STAGES)}")
    if layout not in LAYOUTS:
        raise GolfError(f"layout {layout!r}: one of {', '.join(LAYOUTS)}")
    if catalog is None:
        from golf_core.catalog import load_catalog

        catalog = load_catalog([Path(p) for p in plugins_dirs])
    class_name = validate_name(name, catalog)
    parent = Path(dest).expanduser() if dest is not None else default_plugins_dir()
    if layout == "auto":
        layout = "package" if _same_dir(parent, default_plugins_dir()) else "distribution"
    if layout == "package":
        target, module = parent / name, f"{parent.resolve().name}.{name}"
    else:
        target, module = parent / f"golf-{name.replace('_', '-')}", f"golf_{name}"
    if target.exists():
        raise GolfError(f"{target} already exists; pick another name or move it away")
    if parent.exists() and not parent.is_dir():
        raise GolfError(f"--dir {parent}: not a directory")
    # Relative names only: the files must not depend on where they were generated.
    files = render(name, stage, layout, module, parent.resolve().name if layout == "package" else target.name)
    for rel, text in files.items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")  # a template bug must fail here, not in the user's hands

    created = [p for p in [parent, *parent.parents] if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".golf-new", dir=parent))
    try:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        mode = 0o777 & ~_umask()
        for d in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
            d.chmod(mode)
        os.rename(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # innermost first: only the folders this call made, and only if empty
            try:
                p.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise GolfError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
    test_command = "python -m pytest tests -q" if layout == "distribution" else f"python -m pytest {target} -q"
    return ScaffoldResult(
        name=name, stage=stage, layout=layout, path=target, module=module, class_name=class_name,
        files=sorted(target / rel for rel in files), test_command=test_command,
    )


# ---------------------------------------------------------------------------------------------
# Installing a distribution's entry points without pip
# ---------------------------------------------------------------------------------------------


def register_distribution(dist_dir: Path | str, site_dir: Path | str) -> list[Path]:
    """Make the distribution in ``dist_dir`` importable and its entry points visible, without pip.

    Reads ``dist_dir/pyproject.toml`` and writes ``<name>-<version>.dist-info/`` (``METADATA``,
    ``entry_points.txt``) into ``site_dir``. Returns the two folders to put on ``sys.path`` (or
    ``PYTHONPATH``): ``dist_dir`` (where the package folder is) and ``site_dir``;
    ``importlib.metadata.entry_points()`` then lists the distribution's ``golf.plugins``.
    """
    dist_dir, site_dir = Path(dist_dir), Path(site_dir)
    try:
        project = tomllib.loads((dist_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    except (FileNotFoundError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise GolfError(f"{dist_dir}/pyproject.toml: no readable [project] table ({exc})") from None
    name, version = project["name"], str(project.get("version", "0"))
    info = site_dir / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    return [dist_dir.resolve(), site_dir.resolve()]


__all__ = [
    "SCAFFOLD_STAGES",
    "ScaffoldResult",
    "class_name_for",
    "default_plugins_dir",
    "register_distribution",
    "render",
    "scaffold",
    "validate_name",
]
