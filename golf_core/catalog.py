"""Finding techniques: the core defaults, built-in ``plugins/``, entry points and ``--plugins-dir``.

The catalog only *finds* technique classes; it never registers them. A run's plugin manager is
built from the catalog by :func:`golf_core.manager.make_plugin_manager`.

Sources, in the order they are searched (a later source may not reuse a name):

1. core defaults in ``golf_core.defaults`` (``core_default = True``);
2. built-in technique packages: every ``plugins/<name>/__init__.py``;
3. the ``golf.plugins`` entry-point group (third-party distributions), unless
   ``GOLF_DISABLE_PLUGIN_AUTOLOAD=1``;
4. directories passed with ``--plugins-dir`` (each sub-package, or ``.py`` file, one technique).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from golf_core.errors import GolfError, did_you_mean
from golf_core.technique import STAGES, Technique

ENTRY_POINT_GROUP = "golf.plugins"


@dataclass(frozen=True)
class CatalogEntry:
    cls: type[Technique]
    source: str  # "core", "builtin", "entry point", "plugins-dir"
    version: str
    location: str  # module path, file, or distribution name

    @property
    def name(self) -> str:
        return self.cls.name


class Catalog:
    """Technique classes by name, in a stable order (defaults, built-ins, then extras)."""

    def __init__(self, entries: list[CatalogEntry]) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                other = self._entries[entry.name]
                raise GolfError(
                    f"technique name '{entry.name}' is defined twice: {other.location} and {entry.location}"
                )
            self._entries[entry.name] = entry

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> CatalogEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise GolfError(f"unknown technique '{name}'{did_you_mean(name, self._entries)}; `golf list` shows them") from None

    def defaults(self) -> list[CatalogEntry]:
        return [e for e in self._entries.values() if e.cls.core_default]

    def techniques(self) -> list[CatalogEntry]:
        return [e for e in self._entries.values() if not e.cls.core_default]


def technique_classes_in(module: ModuleType) -> list[type[Technique]]:
    """Technique subclasses defined (not imported) in ``module``."""
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Technique) and obj is not Technique and obj.__module__ == module.__name__
    ]


def _the_technique(module: ModuleType, where: str) -> type[Technique]:
    found = technique_classes_in(module)
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise GolfError(f"{where}: a technique package must define exactly one Technique subclass (found {names})")
    cls = found[0]
    if not cls.name:
        raise GolfError(f"{where}: {cls.__name__}.name is empty")
    if cls.stage not in STAGES:
        raise GolfError(f"{where}: {cls.__name__}.stage '{cls.stage}' is not one of {', '.join(STAGES)}")
    return cls


def _core_defaults() -> list[CatalogEntry]:
    import golf_core
    import golf_core.defaults as defaults_pkg

    entries = []
    for info in sorted(pkgutil.iter_modules(defaults_pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"golf_core.defaults.{info.name}")
        for cls in technique_classes_in(module):
            entries.append(CatalogEntry(cls, "core", golf_core.__version__, module.__name__))
    return entries


def builtin_plugins_dir() -> Path:
    import plugins

    return Path(plugins.__file__).resolve().parent


def _builtin_plugins() -> list[CatalogEntry]:
    import golf_core

    entries = []
    for child in sorted(builtin_plugins_dir().iterdir()):
        if not (child / "__init__.py").is_file():
            continue
        module = importlib.import_module(f"plugins.{child.name}")
        cls = _the_technique(module, f"plugins/{child.name}")
        if cls.name != child.name:
            raise GolfError(f"plugins/{child.name}: technique name '{cls.name}' must equal its folder name")
        entries.append(CatalogEntry(cls, "builtin", cls.version or golf_core.__version__, f"plugins/{child.name}"))
    return entries


def _entry_point_plugins() -> list[CatalogEntry]:
    if os.environ.get("GOLF_DISABLE_PLUGIN_AUTOLOAD") == "1":
        return []
    entries = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else ""
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party package must not hide the reason
            raise GolfError(f"entry point '{ep.name}' ({ep.value}) of {dist} failed to import: {exc}") from exc
        if isinstance(obj, ModuleType):
            obj = _the_technique(obj, f"entry point {ep.value}")
        if not (inspect.isclass(obj) and issubclass(obj, Technique)):
            raise GolfError(f"entry point '{ep.name}' ({ep.value}) of {dist} is not a golf Technique class")
        entries.append(CatalogEntry(obj, "entry point", obj.version or version, dist))
    return entries


def _import_path(path: Path) -> ModuleType:
    """Import a technique package directory or a single ``.py`` file under a private name."""
    module_name = f"golf_ext_{path.stem}"
    target = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(
        module_name, target, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:
        raise GolfError(f"{path}: cannot be imported as a technique")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise GolfError(f"{target}: failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _dir_plugins(plugins_dir: Path) -> list[CatalogEntry]:
    if not plugins_dir.is_dir():
        raise GolfError(f"--plugins-dir {plugins_dir}: not a directory")
    entries = []
    for child in sorted(plugins_dir.iterdir()):
        is_package = child.is_dir() and (child / "__init__.py").is_file()
        is_file = child.suffix == ".py" and not child.name.startswith(("_", "test_"))
        if not (is_package or is_file):
            continue
        cls = _the_technique(_import_path(child), str(child))
        entries.append(CatalogEntry(cls, "plugins-dir", cls.version or "", str(child)))
    return entries


def load_catalog(plugins_dirs: tuple[Path, ...] | list[Path] = ()) -> Catalog:
    """Discover every technique. Cheap to call again: modules are imported once per process."""
    entries = _core_defaults() + _builtin_plugins() + _entry_point_plugins()
    for extra in plugins_dirs:
        entries += _dir_plugins(Path(extra))
    return Catalog(entries)
