"""Test-session set-up shared by golf's core tests (and, when ``tests/`` is collected, plugin tests).

* ``GOLF_DISABLE_PLUGIN_AUTOLOAD=1``: installed third-party techniques must not change what the
  catalog holds; tests that exercise entry points unset it with ``monkeypatch``.
* ``GOLF_CACHE_DIR``: one temporary cache per session, so the built-in sample dataset is prepared
  once, from scratch, and never read from (or written to) the user's ``~/.cache/golf``.
* the ``cuda`` marker skips a test when no CUDA device is present.
* one intra-op thread (unless ``OMP_NUM_THREADS`` says otherwise): the test models are tiny, and
  on a busy machine OpenMP's spinning threads make a 64x64 matmul hundreds of times slower.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

_SESSION_CACHE: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_CACHE
    os.environ["GOLF_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    _SESSION_CACHE = tempfile.mkdtemp(prefix="golf-test-cache-")
    os.environ["GOLF_CACHE_DIR"] = _SESSION_CACHE
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dataset():
    """The built-in sample dataset (vocab 1024) in the session cache, prepared on first use."""
    from golf_core.data import ensure_sample_dataset

    return ensure_sample_dataset(vocab_size=1024)


def technique_source(name: str, body: str = "", *, stage: str = "model", attrs: str = "", params: str = "", imports: str = "") -> str:
    """Source of a one-technique module for ``--plugins-dir`` tests.

    ``body`` holds the class's methods (hook implementations), indented by four spaces;
    ``params`` the fields of its Params dataclass; ``attrs`` extra class attributes.
    """
    indent = lambda text: textwrap.indent(textwrap.dedent(text).strip("\n"), "    ")  # noqa: E731
    lines = [
        "from dataclasses import dataclass",
        "import click",
        "import torch",
        "from golf_core import GolfError, Legality, Technique, hookimpl, param",
        textwrap.dedent(imports),
        "",
        f"class {name.title().replace('_', '')}(Technique):",
        f'    """Test technique {name}: exists only in a temporary plugins directory."""',
        f"    name = {name!r}",
        f"    stage = {stage!r}",
        "    origin_pr = 1",
        indent(attrs) if attrs.strip() else "",
        "",
        "    @dataclass(frozen=True, kw_only=True)",
        "    class Params:",
        textwrap.indent(textwrap.dedent(params).strip("\n"), "        ") if params.strip() else "        pass",
        "",
        indent(body) if body.strip() else "",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_plugins_dir(tmp_path: Path):
    """``make({"alpha.py": source, ...}) -> Path``: a fresh directory for ``--plugins-dir``."""
    counter = iter(range(1000))

    def make(files: dict[str, str]) -> Path:
        directory = tmp_path / f"plugins_dir_{next(counter)}"
        directory.mkdir()
        for rel, text in files.items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return directory

    return make
