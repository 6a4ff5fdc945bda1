"""A built-in sample corpus that needs no download: documentation text shipped with CPython.

The documents are the ``pydoc_data`` help topics plus the docstrings of a fixed list of
standard-library modules (module, public classes and functions, and the classes' public methods).
The list is the same on every call and every machine with the same Python minor version, so a
sample dataset is reproducible; :func:`ensure_sample_dataset` tokenizes it once into a cache.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from golf_core.data.prepare import MANIFEST_NAME, Log, prepare_dataset
from golf_core.errors import GolfError

SAMPLE_VERSION = "v2"  # v2: collected in a fresh interpreter
MIN_DOC_CHARS = 200
DEFAULT_VAL_DOCS = 100

# Fixed, so the corpus changes only with the Python version. Left out: modules whose contents
# depend on the platform (os, subprocess, socket, selectors, socketserver, asyncio's unix/windows
# loops) and optional ones some builds lack (tkinter, sqlite3, ssl, lzma, bz2, curses, readline).
SAMPLE_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "ast", "asyncio.base_events", "asyncio.events", "asyncio.locks",
    "asyncio.queues", "asyncio.tasks", "base64", "bdb", "binascii", "builtins", "calendar", "cmath",
    "cmd", "code", "codecs", "codeop", "collections", "collections.abc", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "dis", "doctest", "email.contentmanager", "email.generator", "email.header",
    "email.headerregistry", "email.message", "email.parser", "email.policy", "email.utils", "enum",
    "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext",
    "glob", "graphlib", "gzip", "heapq", "html", "html.parser", "http", "http.client",
    "http.cookiejar", "http.cookies", "http.server", "imaplib", "importlib", "importlib.metadata",
    "inspect", "io", "ipaddress", "itertools", "json", "keyword", "linecache", "logging",
    "logging.config", "logging.handlers", "math", "mimetypes", "numbers", "operator", "optparse",
    "pathlib", "pickle", "pkgutil", "plistlib", "pprint", "pstats", "pydoc", "queue", "quopri",
    "random", "re", "sched", "secrets", "shelve", "shutil", "smtplib", "statistics", "string",
    "stringprep", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
    "traceback", "types", "typing", "unicodedata", "unittest", "unittest.mock", "urllib.parse",
    "urllib.request", "urllib.robotparser", "uuid", "warnings", "weakref", "wsgiref.handlers",
    "wsgiref.simple_server", "xml.dom.minidom", "xml.dom.pulldom", "xml.etree.ElementTree",
    "xml.sax", "xml.sax.saxutils", "xmlrpc.client", "xmlrpc.server", "zipapp", "zipfile",
    "zoneinfo",
)


def _clean(doc: Any) -> str:
    # obj.__doc__ rather than inspect.getdoc: getdoc inherits a base class's docstring, which would
    # repeat the same text under many names.
    return inspect.cleandoc(doc).strip() if isinstance(doc, str) else ""


def _module_docs(modname: str) -> list[tuple[str, str]]:
    """(qualified name, docstring) for a module, its public classes and functions, and their methods."""
    # Deprecated modules and attributes (typing.io, ...) warn when touched; the corpus only reads them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _walk_module(modname)


def _walk_module(modname: str) -> list[tuple[str, str]]:
    try:
        module = importlib.import_module(modname)
    except ImportError:  # gone in a later Python: that version's corpus simply lacks it
        return []
    found = [(modname, _clean(module.__doc__))]
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        home = getattr(obj, "__module__", None) or ""
        if home != modname and not home.startswith(modname + "."):
            continue  # re-exported from elsewhere
        found.append((f"{modname}.{name}", _clean(obj.__doc__)))
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isroutine(member) or isinstance(member, property):
                    found.append((f"{modname}.{name}.{attr}", _clean(member.__doc__)))
    return found


def sample_documents() -> list[str]:
    """The sample corpus: deterministic, deduplicated documents of at least 200 characters.

    Documents are ordered by the SHA-256 of their text, which mixes help topics and docstrings so
    that the first documents (the validation split) look like the rest. They are collected in a
    fresh interpreter: what this process has imported or patched (pytest replaces
    ``threading.excepthook``, for one) must not change the corpus.
    """
    if os.environ.get("_GOLF_SAMPLE_CHILD") == "1":
        return _collect_documents()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "_GOLF_SAMPLE_CHILD": "1", "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = "import json, sys; from golf_core.data.sample import sample_documents; json.dump(sample_documents(), sys.stdout)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GolfError(f"building the sample corpus failed in a child interpreter: {last}")
    return json.loads(proc.stdout)


def _collect_documents() -> list[str]:
    if sys.flags.optimize >= 2:
        raise GolfError("the sample corpus is built from docstrings, which python -OO strips; run without -OO")
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise GolfError(
            "this Python has no pydoc_data module, which the sample corpus needs; install the full standard library "
            "or prepare a dataset from your own text with `golf data prepare`"
        ) from None
    entries = [(f"topic:{key}", _clean(topics[key])) for key in sorted(topics)]
    by_name: dict[str, str] = {}
    for modname in SAMPLE_MODULES:
        for qualname, doc in _module_docs(modname):
            by_name.setdefault(qualname, doc)
    entries += sorted(by_name.items())

    seen: set[str] = set()
    docs: list[str] = []
    for qualname, doc in entries:
        if len(doc) < MIN_DOC_CHARS or doc in seen:
            continue
        seen.add(doc)
        title = qualname.removeprefix("topic:")
        docs.append(f"{title}\n\n{doc}")
    docs.sort(key=lambda text: hashlib.sha256(text.encode("utf-8")).digest())
    return docs


def default_cache_dir() -> Path:
    """``$GOLF_CACHE_DIR``, else ``~/.cache/golf``."""
    env = os.environ.get("GOLF_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "golf"


def sample_dataset_dir(cache_dir: Path | None = None, vocab_size: int = 1024, val_docs: int = DEFAULT_VAL_DOCS) -> Path:
    """Where :func:`ensure_sample_dataset` keeps the sample dataset for this Python, vocabulary and split."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"sample-{SAMPLE_VERSION}-py{sys.version_info.major}{sys.version_info.minor}-sp{vocab_size}"
    # A non-default split is a different dataset, so it gets its own directory.
    return base / (name if val_docs == DEFAULT_VAL_DOCS else f"{name}-val{val_docs}")


def ensure_sample_dataset(
    cache_dir: Path | None = None,
    vocab_size: int = 1024,
    val_docs: int = DEFAULT_VAL_DOCS,
    *,
    log: Log | None = None,
) -> Path:
    """Return the sample dataset's directory, preparing it (tokenizer included) on first use.

    Safe when several processes call it at once: each prepares into its own temp directory and
    the first rename wins; the others use the winner's dataset.
    """
    out = sample_dataset_dir(cache_dir, vocab_size, val_docs)
    if (out / MANIFEST_NAME).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.src-"))
    try:
        source = work / f"sample-{SAMPLE_VERSION}-py{sys.version_info.major}{sys.version_info.minor}.jsonl"
        with open(source, "w", encoding="utf-8") as f:
            for doc in sample_documents():
                f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        try:
            prepare_dataset(source, out, vocab_size=vocab_size, val_docs=val_docs, shard_tokens=1_000_000, log=log)
        except GolfError:
            if (out / MANIFEST_NAME).is_file():  # another process finished first
                return out
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
