"""``golf bundle``: a stack as a record folder in the challenge's format, one self-contained ``train_gpt.py``.

The folder holds ``train_gpt.py``, ``README.md`` (techniques with origin PRs and credits, the
resolved settings, the run command, the byte count), ``submission.json`` (the fields the
challenge's records carry) and ``requirements.txt``.

``train_gpt.py`` is an amalgamation: the core modules a run needs plus the modules of the enabled
techniques, found by following imports from the trainer, the core defaults and each enabled
technique. Disabled techniques, and core modules a run never imports (the CLI, ``golf new``, this
module, ablation, comparison, ``golf check``, the testing helpers, dataset preparation, verification
and the sample corpus), are not in it, so they cost no bytes. Each module is stored with its
intra-project imports rewritten to the bundle's private package ``_golf`` (``golf_core.x`` ->
``_golf.x``, ``plugins.x`` -> ``_golf.plugins.x``, a third-party package ``p`` -> ``_golf.ext.p``),
stripped of comments and docstrings, in dependency order. A small importer at the top of the file
serves them: every module keeps its own namespace (two techniques may define the same helper
name), optional imports stay lazy (Triton kernels load only on CUDA), and ``inspect.getsource``
works (``triton.jit`` needs it). Nothing imports golf: the file runs where only torch, numpy,
sentencepiece, brotli and pluggy are installed.

The stack's resolved settings are baked in as TOML and re-validated at start-up; ``DATA_PATH``,
``TOKENIZER_PATH`` and ``SEED`` override them as in the challenge's scripts, and ``--set KEY=VALUE``
overrides anything. Run it with ``torchrun --standalone --nproc_per_node=8 train_gpt.py`` or
plain ``python train_gpt.py``; it trains, quantizes, writes the artifact and scores exactly as
``golf train`` does with the same stack and seed.

Bytes are counted by :func:`bundle_code_bytes` on the bundled file's text (what the bundled run,
whose ``artifact.code_files`` is the file itself, counts) and checked against the budget together
with ``golf check``'s model-size estimate (:func:`golf_core.check.estimate_artifact`). The same
count is every stack's counted code: :func:`stack_code_bytes` renders the bundle a stack would get,
and ``golf train`` and ``golf check`` report that (``artifact.code_files = ["bundle"]``, the
default), so the three commands agree.
"""

from __future__ import annotations

import ast
import datetime
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import golf_core
from golf_core.catalog import Catalog
from golf_core.errors import GolfError
from golf_core.quant.artifact import _strip_source, counted_source_bytes
from golf_core.stack import ResolvedStack, dumps_toml

BUNDLE_ROOT = "_golf"
BUNDLE_FILE = "train_gpt.py"
# Core modules a run never imports. They are only ever reached through imports inside functions
# (train.py imports the sample corpus lazily for data.dataset = 'sample'; the bundle bakes a path
# instead), which the bundle does not follow; a module-level import of one (a technique that needs
# dataset preparation at run time) still brings it in.
EXCLUDED_AT_RUNTIME = frozenset(
    {
        "golf_core.__main__",
        "golf_core.ablate",
        "golf_core.bundle",
        "golf_core.check",
        "golf_core.compare",
        "golf_core.data.prepare",
        "golf_core.data.sample",
        "golf_core.data.verify",
        "golf_core.quant.fixtures",
        "golf_core.scaffold",
        "golf_core.stats",
        "golf_core.testing",
    }
)
# What the runner itself imports, besides the core defaults and the enabled techniques.
RUNNER_ROOTS = ("golf_core.catalog", "golf_core.errors", "golf_core.stack", "golf_core.train")
# pip names of the imports the bundle may need; None: not installed by pip on its own.
PIP_NAMES = {"torch": "torch", "numpy": "numpy", "sentencepiece": "sentencepiece", "brotli": "brotli", "pluggy": "pluggy", "triton": None}


# ---------------------------------------------------------------------------------------------
# Which modules: the import closure
# ---------------------------------------------------------------------------------------------


def bundle_name(module: str) -> str:
    """The module's name inside the bundle."""
    root, _, rest = module.partition(".")
    if root == "golf_core":
        base = BUNDLE_ROOT
    elif root == "plugins":
        base = f"{BUNDLE_ROOT}.plugins"
    else:
        base = f"{BUNDLE_ROOT}.ext.{root}"
    return f"{base}.{rest}" if rest else base


def _module_file(name: str) -> Path | None:
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None):
        return Path(module.__file__)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _absolute(module: str | None, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _soft_package(name: str, path: Path) -> bool:
    """golf's own package ``__init__`` files only re-export: their imports are kept when the target is bundled anyway."""
    return path.name == "__init__.py" and (name == "golf_core" or name.startswith("golf_core.") or name == "plugins")


@dataclass
class _Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    deps: list[str] = field(default_factory=list)  # module-level, followed
    lazy: list[str] = field(default_factory=list)  # inside functions, followed unless excluded


class Amalgamation:
    """The modules of a bundle (original names, dependency order) and their rewritten sources."""

    def __init__(self, roots: list[str], project_roots: set[str]) -> None:
        self.project_roots = project_roots
        self.modules: dict[str, _Module] = {}
        for root in roots:
            self._visit(root)
        self.order = self._dependency_order(roots)

    # -- discovery ------------------------------------------------------------------------------

    def is_project(self, name: str) -> bool:
        return name.partition(".")[0] in self.project_roots

    def _load(self, name: str) -> _Module:
        if name in self.modules:
            return self.modules[name]
        path = _module_file(name)
        if path is None:
            raise GolfError(f"bundle: cannot find the source of module '{name}'")
        module = _Module(name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)), path.name == "__init__.py")
        self.modules[name] = module
        return module

    def resolve_name(self, module: str, name: str) -> str:
        """The module that defines ``module.name``: a submodule, a re-export's source, or ``module`` itself."""
        if _module_file(f"{module}.{name}") is not None:
            return f"{module}.{name}"
        path = _module_file(module)
        if path is not None and path.name == "__init__.py":
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        if (alias.asname or alias.name) == name:
                            source = _absolute(node.module, node.level, module, True)
                            if self.is_project(source):
                                return self.resolve_name(source, alias.name)
        return module

    def targets(self, node: ast.Import | ast.ImportFrom, current: _Module) -> list[tuple[ast.alias, str]]:
        """(alias, project module it needs) for each project import of ``node``."""
        if isinstance(node, ast.Import):
            return [(a, a.name) for a in node.names if self.is_project(a.name)]
        source = _absolute(node.module, node.level, current.name, current.is_package)
        if not self.is_project(source):
            return []
        return [(a, source if a.name == "*" else self.resolve_name(source, a.name)) for a in node.names]

    def _imports(self, module: _Module) -> None:
        def walk(nodes, in_function: bool) -> None:
            for node in nodes:
                if isinstance(node, ast.If) and _is_type_checking(node.test):
                    walk(node.orelse, in_function)  # annotations only: never executed
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for _, target in self.targets(node, module):
                        (module.lazy if in_function else module.deps).append(target)
                    continue
                inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                walk(ast.iter_child_nodes(node), inner)

        walk(module.tree.body, False)

    def _visit(self, name: str) -> None:
        if name in self.modules:
            return
        module = self._load(name)
        self._imports(module)
        parent = name.rpartition(".")[0]
        if parent:
            self._visit(parent)
        soft = _soft_package(name, module.path)
        for target in module.deps:
            if not soft:
                self._visit(target)
        for target in module.lazy:
            if target not in EXCLUDED_AT_RUNTIME:
                self._visit(target)

    def _dependency_order(self, roots: list[str]) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str) -> None:
            if state.get(name) or name not in self.modules:
                return
            state[name] = 1
            parent = name.rpartition(".")[0]
            if parent:
                visit(parent)
            for dep in self.modules[name].deps:
                visit(dep)
            order.append(name)

        for root in [*roots, *sorted(self.modules)]:
            visit(root)
        return order

    # -- rewriting ------------------------------------------------------------------------------

    def source(self, name: str) -> str:
        """The module's code as stored in the bundle: imports rewritten, comments and docstrings gone."""
        module = self.modules[name]
        soft = _soft_package(name, module.path)
        bundled = set(self.modules)

        def rewrite(node: ast.AST):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node.module, node.level, module.name, module.is_package)
                if not self.is_project(source):
                    return node
                names = node.names
                if soft:  # keep re-exports of bundled modules only
                    names = [a for a, target in self.targets(node, module) if target in bundled]
                    if not names:
                        return None
                return ast.ImportFrom(module=bundle_name(source), names=names, level=0)
            if isinstance(node, ast.Import):
                out: list[ast.stmt] = []
                rest = [a for a in node.names if not self.is_project(a.name)]
                if rest:
                    out.append(ast.Import(names=rest))
                for alias in node.names:
                    if not self.is_project(alias.name):
                        continue
                    if soft and alias.name not in bundled:
                        continue
                    if alias.asname:
                        out.append(ast.Import(names=[ast.alias(bundle_name(alias.name), alias.asname)]))
                    else:
                        # `import golf_core.x` binds `golf_core`: bind that name to the bundled root.
                        root = alias.name.partition(".")[0]
                        if alias.name != root:
                            out.append(ast.Import(names=[ast.alias(bundle_name(alias.name))]))
                        out.append(ast.Import(names=[ast.alias(bundle_name(root), root)]))
                return out or None
            for field_name, value in ast.iter_fields(node):
                if isinstance(value, list) and any(isinstance(item, ast.AST) for item in value):
                    new: list = []
                    for item in value:
                        if not isinstance(item, ast.AST):  # the None keys of {**x}
                            new.append(item)
                            continue
                        result = rewrite(item)
                        if result is None:
                            continue
                        new.extend(result if isinstance(result, list) else [result])
                    if not new and field_name in ("body", "orelse", "finalbody", "handlers") and value:
                        new = [ast.Pass()] if field_name != "handlers" else value
                    setattr(node, field_name, new)
                elif isinstance(value, ast.AST):
                    rewrite(value)
            return node

        tree = rewrite(ast.parse(module.path.read_text(encoding="utf-8")))
        ast.fix_missing_locations(tree)
        return _strip_source(ast.unparse(tree)) + "\n"

    def third_party(self) -> tuple[set[str], set[str]]:
        """Top-level names of non-project imports: (required at module level, optional)."""
        stdlib = set(sys.stdlib_module_names) | {"__future__"}
        required: set[str] = set()
        optional: set[str] = set()

        def walk(nodes, guarded: bool) -> None:
            for node in nodes:
                if isinstance(node, ast.If) and _is_type_checking(node.test):
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    if isinstance(node, ast.ImportFrom) and node.level:
                        continue
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    for n in names:
                        top = n.partition(".")[0]
                        if top and top not in stdlib and not self.is_project(n):
                            (optional if guarded else required).add(top)
                    continue
                inner = guarded or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Try))
                walk(ast.iter_child_nodes(node), inner)

        for module in self.modules.values():
            walk(module.tree.body, False)
        return required, optional - required


# ---------------------------------------------------------------------------------------------
# The bundled file
# ---------------------------------------------------------------------------------------------

_RUNNER = '''
import importlib
import importlib.abc
import importlib.util
import linecache
import os
import sys
import tomllib


class _BundledModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves SOURCES under their bundle names, each module in its own namespace."""

    def __init__(self, root):
        self.root = root

    def _path(self, name):
        rel = name.replace(".", os.sep)
        return os.path.join(self.root, rel, "__init__.py") if name in PACKAGES else os.path.join(self.root, rel + ".py")

    def find_spec(self, name, path=None, target=None):
        if name not in SOURCES:
            return None
        path = self._path(name)
        search = [os.path.dirname(path)] if name in PACKAGES else None
        return importlib.util.spec_from_file_location(name, path, loader=self, submodule_search_locations=search)

    def create_module(self, spec):
        return None

    def is_package(self, name):
        return name in PACKAGES

    def get_source(self, name):
        return SOURCES[name]

    def exec_module(self, module):
        source = SOURCES[module.__name__]
        filename = module.__spec__.origin
        # Tracebacks, inspect.getsource and triton.jit read the code through linecache.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)


def _overrides(argv_overrides):
    from _golf.stack import _toml_value

    baked = tomllib.loads(STACK_TOML)
    meta = {key: baked.pop(key) for key in ("stack", "provenance") if key in baked}
    out = []
    for key, value in baked.items():
        if key == "techniques":
            out += [f"techniques.{name}={_toml_value(table)}" for name, table in value.items()]
        else:
            out.append(f"{key}={_toml_value(value)}")
    out.append(f"artifact.code_files={_toml_value([os.path.basename(__file__)])}")
    for var, key in (("DATA_PATH", "data.dataset"), ("TOKENIZER_PATH", "data.tokenizer")):
        if os.environ.get(var):
            out.append(f"{key}={_toml_value(os.environ[var])}")
    if os.environ.get("SEED"):
        out.append(f"run.seed={os.environ['SEED']}")
    return meta, out + list(argv_overrides)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=f"Train the bundled golf stack '{STACK_NAME}'.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a stack value, VALUE parsed as TOML (repeatable), e.g. --set train.iterations=200")
    parser.add_argument("--run-dir", help="write the run (log, artifact, report.json) here instead of under run.out_dir")
    args = parser.parse_args(argv)
    sys.meta_path.insert(0, _BundledModules(os.path.dirname(os.path.abspath(__file__))))
    from _golf.catalog import Catalog, CatalogEntry
    from _golf.errors import GolfError
    from _golf.stack import resolve
    from _golf.train import train

    try:
        catalog = Catalog([
            CatalogEntry(getattr(importlib.import_module(module), cls), source, version, os.path.basename(__file__))
            for module, cls, source, version in TECHNIQUE_CLASSES
        ])
        meta, overrides = _overrides(args.overrides)
        stack = resolve(None, catalog, overrides=overrides)
        stack.meta = meta
        run_dir = None
        if args.run_dir:
            from pathlib import Path

            run_dir = Path(args.run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        report = train(stack, catalog, run_dir=run_dir, echo=print)
    except GolfError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final val_loss:{report['val_loss']:.8f} val_bpb:{report['val_bpb']:.8f} "
              f"artifact:{report['artifact']['total_bytes']} bytes run_dir:{report['run_dir']}")


if __name__ == "__main__":
    main()
'''


def _literal(text: str) -> str:
    """``text`` as a Python string literal that reads like the code it holds."""
    for quote in ("'''", '"""'):
        if quote not in text and not text.endswith("\\"):
            return f"r{quote}{text}{quote}"
    return repr(text)


def _bundled_stack(stack: ResolvedStack) -> dict[str, Any]:
    """The resolved stack to bake: every value explicit, the sample corpus as a path, the file as its code."""
    flat = stack.flat()
    data = flat["data"]
    if data["dataset"] == "sample":
        # Where the corpus lives, without preparing it: counting a stack's code (golf check) reads
        # no data; bundle() prepares it before writing the folder.
        from golf_core.data import sample_dataset_dir

        data["dataset"] = str(sample_dataset_dir(vocab_size=stack.core.model.vocab_size))
    flat["artifact"]["code_files"] = [BUNDLE_FILE]
    return flat


def render_train_gpt(stack: ResolvedStack, catalog: Catalog) -> tuple[str, Amalgamation]:
    """The text of ``train_gpt.py`` for ``stack``, and the module set it holds."""
    classes = [*(e.cls for e in catalog.defaults()), *(catalog.get(n).cls for n in stack.techniques)]
    technique_modules = [c.__module__ for c in classes]
    project_roots = {"golf_core", "plugins", *(m.partition(".")[0] for m in technique_modules)}
    amalgam = Amalgamation([*RUNNER_ROOTS, *technique_modules], project_roots)
    flat = _bundled_stack(stack)
    rows = [
        (bundle_name(c.__module__), c.__name__, "core" if c.core_default else "bundled", catalog.get(c.name).version)
        for c in classes
    ]
    names = {bundle_name(n) for n in amalgam.modules}
    synthetic = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)} - names
    packages = synthetic | {bundle_name(n) for n, m in amalgam.modules.items() if m.is_package}
    meta = stack.meta.get("stack", {})
    chain = " -> ".join(p.name for p in stack.chain) or "(no stack file)"
    techniques = ", ".join(stack.techniques) or "none (core defaults only)"
    header = [
        "#!/usr/bin/env python3",
        '"""' + f"{stack.name}: {meta.get('summary', '')}".strip().rstrip(":").replace('"""', "'''"),
        "",
        f"A golf bundle (golf {golf_core.__version__}) of {chain}. Techniques: {techniques}.",
        "Every module below is golf's or a technique's source with imports rewritten to the private package",
        "_golf; nothing here imports golf. Run:",
        "",
        "    torchrun --standalone --nproc_per_node=8 train_gpt.py",
        "    python train_gpt.py --set train.iterations=200        # any stack value, VALUE parsed as TOML",
        "",
        "DATA_PATH, TOKENIZER_PATH and SEED override the baked data.dataset, data.tokenizer and run.seed.",
        '"""',
        "",
        f"STACK_NAME = {stack.name!r}",
        "",
        "# The resolved stack (golf stack show --resolved), validated again at start-up.",
        f"STACK_TOML = {_literal(dumps_toml(flat))}",
        "",
        "# (module, class, source, version) of the core defaults and the enabled techniques, stack order.",
        "TECHNIQUE_CLASSES = [",
        *[f"    {row!r}," for row in rows],
        "]",
        "",
        f"PACKAGES = {sorted(packages)!r}",
        "",
        "SOURCES = {}",
    ]
    # Parents no source file stands for (_golf.ext above third-party packages) are empty packages.
    body = [f"SOURCES[{name!r}] = ''\n" for name in sorted(synthetic)]
    body += [f"SOURCES[{bundle_name(name)!r}] = {_literal(amalgam.source(name))}\n" for name in amalgam.order]
    text = "\n".join(header) + "\n" + "\n".join(body) + _RUNNER
    ast.parse(text)  # a bundle that does not parse is golf's bug: fail here, not on the cluster
    return text, amalgam


def bundle_code_bytes(text: str) -> dict[str, Any]:
    """Counted code bytes of a ``train_gpt.py`` with this text, exactly as its own run counts the file."""
    return counted_source_bytes([(BUNDLE_FILE, text)])


def stack_code_bytes(stack: ResolvedStack, catalog: Catalog) -> dict[str, Any]:
    """The counted code of ``stack``: its bundle's ``train_gpt.py`` (the modules a run imports), counted.

    One implementation behind ``golf train`` (the report's artifact), ``golf check`` and ``golf
    bundle``: ``files``, ``raw_bytes``, ``stripped_bytes`` and ``code_bytes`` of
    :func:`bundle_code_bytes`, plus ``modules``, how many modules the bundle holds.
    """
    text, amalgam = render_train_gpt(stack, catalog)
    return {**bundle_code_bytes(text), "modules": len(amalgam.order)}


# ---------------------------------------------------------------------------------------------
# The record folder
# ---------------------------------------------------------------------------------------------


def _requirements(amalgam: Amalgamation) -> str:
    required, optional = amalgam.third_party()
    lines = ["# Python packages train_gpt.py imports. Install with: pip install -r requirements.txt"]
    for name in sorted(required):
        pip = PIP_NAMES.get(name, name)
        if pip is None:
            continue
        try:
            version = importlib.metadata.version(pip)
            lines.append(f"{pip}  # bundled against {version}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(pip)
    extra = sorted(optional)
    if extra:
        lines += ["", "# Imported only when available or when a code path needs it (e.g. Triton kernels on CUDA):"]
        lines += [f"# {name}" for name in extra]
    return "\n".join(lines) + "\n"


def _load_reports(paths: list[Path], stack: ResolvedStack) -> list[dict[str, Any]]:
    reports = []
    for path in paths:
        path = Path(path)
        path = path / "report.json" if path.is_dir() else path
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GolfError(f"--report {path}: not found; pass a run directory or its report.json") from None
        except json.JSONDecodeError as exc:
            raise GolfError(f"--report {path}: not JSON ({exc})") from None
        if report.get("stack") != stack.name:
            raise GolfError(f"--report {path}: a run of stack '{report.get('stack')}', not '{stack.name}'")
        reports.append(report)
    return reports


def _submission(stack: ResolvedStack, code: dict, estimate: dict, reports: list[dict], author: str, github_id: str, techniques: list[str]) -> dict[str, Any]:
    meta, prov = stack.meta.get("stack", {}), stack.meta.get("provenance", {})
    summary = meta.get("summary", "") or stack.name
    out: dict[str, Any] = {
        "author": author or prov.get("author", ""),
        "github_id": github_id or prov.get("github_id", ""),
        "name": summary,
        "blurb": f"{summary}. Techniques: {', '.join(techniques) or 'none (golf core defaults)'}. Bundled with golf {golf_core.__version__}.",
        "date": datetime.date.today().isoformat(),
        "track": meta.get("track", ""),
        "val_loss": None,
        "val_bpb": None,
        "bytes_total": None,
        "bytes_code": code["code_bytes"],
        "bytes_model_estimate": estimate["model_bytes"],
        "techniques": techniques,
    }
    if reports:
        bpb = [float(r["val_bpb"]) for r in reports]
        loss = [float(r["val_loss"]) for r in reports]
        out["val_loss"], out["val_bpb"] = statistics.fmean(loss), statistics.fmean(bpb)
        if len(reports) > 1:
            out["val_loss_std"], out["val_bpb_std"] = statistics.stdev(loss), statistics.stdev(bpb)
        out["seeds"] = [r.get("seed") for r in reports]
        out["seed_results"] = {
            str(r.get("seed")): {
                "val_loss": r["val_loss"], "val_bpb": r["val_bpb"], "steps": r.get("steps"),
                # The runs counted golf's code; the record ships this bundle's.
                "artifact_bytes": r["artifact"]["model_bytes"] + code["code_bytes"],
            }
            for r in reports
        }
        out["bytes_total"] = max(v["artifact_bytes"] for v in out["seed_results"].values())
    return out


def _readme(stack: ResolvedStack, catalog: Catalog, flat: dict, summary: dict[str, Any], submission: dict[str, Any]) -> str:
    meta, prov = stack.meta.get("stack", {}), stack.meta.get("provenance", {})
    lines = [f"# {stack.name}: {meta.get('summary', '')}".rstrip(": "), ""]
    chain = " -> ".join(str(p.name) for p in stack.chain) or "(no stack file)"
    lines.append(f"Bundled by `golf bundle` (golf {golf_core.__version__}) from `{chain}`.")
    if prov.get("pr"):
        lines.append(f"Reproduces openai/parameter-golf PR #{prov['pr']}" + (f" by {prov['author']}" if prov.get("author") else "") + ".")
    if submission.get("val_bpb") is not None:
        lines += ["", f"**val_bpb {submission['val_bpb']:.5f}**" + (f" (mean of seeds {', '.join(map(str, submission['seeds']))})" if len(submission.get("seeds", [])) > 1 else "")]
    lines += ["", "## Run", "", "```"]
    data = flat["data"]
    env = f"DATA_PATH={data['dataset']} " + (f"TOKENIZER_PATH={data['tokenizer']} " if data["tokenizer"] else "")
    lines += [
        f"{env}SEED={stack.core.run.seed} torchrun --standalone --nproc_per_node={stack.core.run.nproc_per_node} train_gpt.py",
        "python train_gpt.py --set train.iterations=200      # one process; --set overrides any stack value",
        "```",
        "",
        "`train_gpt.py` holds golf's trainer and the enabled techniques (imports rewritten, comments and docstrings",
        "stripped); it logs the resolved stack, trains under the wall-clock cap, quantizes, writes the artifact and",
        "scores the reloaded artifact, in `runs/<stack>-<time>-s<seed>/` (`train.log`, `report.json`).",
        "",
        "## Techniques",
        "",
        "| technique | stage | origin PR | credits | what it computes |",
        "|---|---|---|---|---|",
    ]
    for name in stack.techniques:
        cls = catalog.get(name).cls
        pr = f"[#{cls.origin_pr}](https://github.com/openai/parameter-golf/pull/{cls.origin_pr})" if cls.origin_pr else "-"
        lines.append(f"| {name} | {cls.stage} | {pr} | {cls.credits or '-'} | {cls.summary()} |")
    if not stack.techniques:
        lines.append("| (none) | | | | golf's core defaults only |")
    lines += ["", "Core defaults (always on, replaced by a technique that implements the same hook):", ""]
    lines += [f"- {e.name} ({e.cls.stage}): {e.cls.summary()}" for e in catalog.defaults()]
    code, est = summary["code"], summary["estimate"]
    compressed = est["kind"] == "expected compressed size"
    lines += [
        "",
        "## Bytes",
        "",
        "| | bytes |",
        "|---|---:|",
        f"| train_gpt.py as written | {code['raw_bytes']:,} |",
        f"| counted code (comments and docstrings stripped, brotli q11, base85 self-extracting wrapper) | {code['code_bytes']:,} |",
        f"| model estimate (`golf check`, {est['quantizer']}: {est['kind']} of the quantized weights) | {est['model_bytes']:,} |",
        *([f"| model measured (largest compressed artifact of the runs below) | {summary['measured_model_bytes']:,} |"] if summary.get("measured_model_bytes") is not None else []),
        f"| total ({'measured model' if summary.get('measured_model_bytes') is not None else 'estimate'} + counted code) | {summary['total_bytes']:,} |",
        f"| budget | {summary['budget_bytes']:,} |",
        "",
        f"Headroom {summary['headroom_bytes']:+,} bytes ({'fits' if summary['within_budget'] else 'OVER BUDGET'}); "
        + ("the model figure is the quantizer's expected compressed size," if compressed else "the compressed model is usually smaller than its payload estimate,"),
        "and each run's report.json has the exact artifact size.",
        "",
        "## Settings",
        "",
        "The resolved stack baked into train_gpt.py (every value explicit):",
        "",
        "```toml",
        dumps_toml(flat).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def bundle(
    stack: ResolvedStack,
    catalog: Catalog,
    out_dir: Path | str,
    *,
    reports: list[Path] | tuple[Path, ...] = (),
    author: str = "",
    github_id: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the record folder for ``stack`` into ``out_dir``; returns the summary (bytes, budget, files).

    ``reports`` are run directories (or their ``report.json``) of this stack, which fill in
    ``submission.json``'s results. The folder is written beside ``out_dir`` and renamed into
    place, so a failure leaves nothing behind; an existing ``out_dir`` is replaced only with
    ``overwrite``.
    """
    from golf_core.check import estimate_artifact

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise GolfError(f"-o {out_dir}: already exists; pick another folder or pass --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise GolfError(f"-o {out_dir}: not a directory")
    loaded = _load_reports(list(reports), stack)
    if stack.core.data.dataset == "sample":  # the baked path must hold the corpus when the bundle runs
        from golf_core.data import ensure_sample_dataset

        ensure_sample_dataset(vocab_size=stack.core.model.vocab_size)
    text, amalgam = render_train_gpt(stack, catalog)
    code = bundle_code_bytes(text)
    estimate = estimate_artifact(stack, catalog, code={**code, "modules": len(amalgam.order)})
    flat = _bundled_stack(stack)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".golf-bundle", dir=out_dir.parent))
    try:
        (tmp / BUNDLE_FILE).write_text(text, encoding="utf-8")
        budget = stack.core.artifact.budget_bytes
        # A finished run's compressed model is the real figure; the estimate is only an estimate.
        measured = max((int(r["artifact"]["model_bytes"]) for r in loaded), default=None)
        total = (measured if measured is not None else estimate["model_bytes"]) + code["code_bytes"]
        summary: dict[str, Any] = {
            "stack": stack.name,
            "out_dir": str(out_dir),
            "techniques": list(stack.techniques),
            "modules": [bundle_name(n) for n in amalgam.order],
            "code": code,
            "estimate": {"model_bytes": estimate["model_bytes"], "params": estimate["params"], "quantizer": estimate["quantizer"], "kind": estimate["kind"]},
            "measured_model_bytes": measured,
            "total_bytes": total,
            "budget_bytes": budget,
            "headroom_bytes": budget - total,
            "within_budget": total <= budget,
            "record_code_bytes": _record_code_bytes(stack),
        }
        submission = _submission(stack, code, estimate, loaded, author, github_id, list(stack.techniques))
        (tmp / "submission.json").write_text(json.dumps(submission, indent=2) + "\n", encoding="utf-8")
        (tmp / "requirements.txt").write_text(_requirements(amalgam), encoding="utf-8")
        (tmp / "README.md").write_text(_readme(stack, catalog, flat, summary, submission), encoding="utf-8")
        tmp.chmod(0o777 & ~_umask())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["files"] = sorted(str(out_dir / p.name) for p in out_dir.iterdir())
    return summary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _record_code_bytes(stack: ResolvedStack) -> int | None:
    """The reproduced record's own counted code bytes, when the stack's provenance states them."""
    prov = stack.meta.get("provenance", {})
    for table in (prov, prov.get("expect", {}) if isinstance(prov.get("expect"), dict) else {}):
        for key in ("code_bytes", "bytes_code", "code_bytes_compressed"):
            if isinstance(table.get(key), int):
                return table[key]
    return None


def format_bundle(summary: dict[str, Any]) -> str:
    """The human-readable report of :func:`bundle`."""
    code = summary["code"]
    lines = [
        f"bundle {summary['stack']} -> {summary['out_dir']}",
        f"  techniques     {', '.join(summary['techniques']) or '(core defaults only)'}",
        f"  modules        {len(summary['modules'])} in train_gpt.py",
        f"  code raw       {code['raw_bytes']:>12,} B  (train_gpt.py as written)",
        f"  code counted   {code['code_bytes']:>12,} B  (stripped, brotli q11, base85 wrapper)",
    ]
    if summary.get("record_code_bytes"):
        delta = code["code_bytes"] - summary["record_code_bytes"]
        lines.append(f"  record's code  {summary['record_code_bytes']:>12,} B  (bundle {delta:+,} B)")
    verdict = "fits" if summary["within_budget"] else "OVER BUDGET"
    lines.append(f"  model estimate {summary['estimate']['model_bytes']:>12,} B  ({summary['estimate']['kind']}, {summary['estimate']['quantizer']})")
    if summary.get("measured_model_bytes") is not None:
        lines.append(f"  model measured {summary['measured_model_bytes']:>12,} B  (largest artifact of the --report runs)")
    total_kind = "total measured" if summary.get("measured_model_bytes") is not None else "total estimate"
    lines += [
        f"  {total_kind} {summary['total_bytes']:>12,} B  of {summary['budget_bytes']:,} ({summary['headroom_bytes']:+,} B, {verdict})",
        f"  files          {', '.join(Path(f).name for f in summary.get('files', []))}",
    ]
    return "\n".join(lines)


__all__ = [
    "Amalgamation", "BUNDLE_FILE", "EXCLUDED_AT_RUNTIME", "bundle", "bundle_code_bytes", "bundle_name", "format_bundle",
    "render_train_gpt", "stack_code_bytes",
]
