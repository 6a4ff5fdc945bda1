"""Helpers for testing techniques in isolation (for plugin authors and golf's own tests).

``micro_stack()`` is a resolved stack small enough to train a few steps on CPU in seconds;
``make_ctx()`` a RunContext around it (no data read); ``make_pm()`` a checked plugin manager with
just the techniques you name; ``run_micro()`` a whole run (train, quantize, reload, score) in a
temporary directory, returning the report. For "technique at its identity setting equals the core
model bit for bit" tests: ``assert_core_init_untouched()`` checks that building a technique left the
core parameters' initialisation alone, and ``randomize_shared_parameters()`` gives the parameters
several models share the same random values (a fresh model's zero-initialised projections would
make the comparison trivially true).

Example, in ``plugins/my_gate/test_my_gate.py``::

    from golf_core.testing import run_micro

    def test_trains_end_to_end(tmp_path):
        report = run_micro(tmp_path, enable=["my_gate"])
        assert report["steps"] == 3 and report["val_bpb"] < 20
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from golf_core.catalog import Catalog, load_catalog
from golf_core.context import RunContext
from golf_core.stack import ResolvedStack, resolve

# Overrides that make any stack a few-second CPU run on the built-in sample corpus.
MICRO_OVERRIDES: tuple[str, ...] = (
    "run.device='cpu'",
    "run.max_wallclock_seconds=0",
    "run.eval_budget_seconds=600",
    "data.dataset='sample'",
    "data.val_tokens_limit=2048",
    "model.vocab_size=1024",
    "model.num_layers=2",
    "model.model_dim=64",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "train.iterations=3",
    "train.train_batch_tokens=1024",
    "train.train_seq_len=128",
    "train.grad_accum_steps=1",
    "train.compile_warmup_steps=0",
    "train.train_log_every=1",
    "train.val_batch_tokens=2048",
)

_CATALOG: Catalog | None = None


def catalog() -> Catalog:
    """The catalog of built-in techniques and core defaults (cached per process)."""
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = load_catalog()
    return _CATALOG


def micro_stack(
    enable: list[str] | tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    path: str | Path | None = None,
) -> ResolvedStack:
    """A validated micro stack with ``enable`` switched on and ``overrides`` (``a.b=V``) applied last."""
    return resolve(path, catalog(), overrides=[*MICRO_OVERRIDES, *overrides], enable=list(enable))


def make_pm(stack: ResolvedStack | None = None, extra_plugins: list | tuple = ()):
    """A checked plugin manager for ``stack`` (default: the micro stack) plus throwaway plugins."""
    from golf_core.manager import make_plugin_manager

    return make_plugin_manager(stack or micro_stack(), catalog(), list(extra_plugins))


def make_ctx(stack: ResolvedStack | None = None, pm=None, **fields: Any) -> RunContext:
    """A RunContext on CPU with no data loaded; pass fields (``tokenizer=...``) to fill in more."""
    stack = stack or micro_stack()
    ctx = RunContext(stack=stack, device=torch.device("cpu"), pm=pm if pm is not None else make_pm(stack), log=lambda msg, console=True: None)
    for key, value in fields.items():
        setattr(ctx, key, value)
    return ctx


def build_model(stack: ResolvedStack | None = None, seed: int = 0):
    """Run the model-build hooks of ``stack`` and return ``(model, spec, ctx)`` on CPU, float32."""
    from golf_core.model.spec import ModelSpec

    torch.manual_seed(seed)
    ctx = make_ctx(stack)
    pm = ctx.pm
    spec = ModelSpec.from_config(ctx.cfg.model)
    spec.loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
    pm.hook.golf_model_spec(spec=spec, ctx=ctx)
    model = pm.hook.golf_build_model(spec=spec, ctx=ctx)
    pm.hook.golf_patch_model(model=model, ctx=ctx)
    return model, spec, ctx


def assert_core_init_untouched(core: torch.nn.Module, model: torch.nn.Module) -> None:
    """Every parameter of ``core`` is in ``model`` under the same name with identical values.

    Build both from the same seed: a technique that draws its initialisation from a private RNG
    stream leaves the core's parameters as they were, which the bit-for-bit comparisons rely on.
    """
    params = dict(model.named_parameters())
    for name, p in core.named_parameters():
        assert name in params, f"{name} missing from the model with the technique"
        assert torch.equal(p, params[name]), name


def randomize_shared_parameters(*models: torch.nn.Module, seed: int = 3, scale: float = 0.2) -> None:
    """Copy the same ``N(0, scale^2)`` values into every parameter name all ``models`` have.

    The values are drawn in sorted-name order from a generator seeded with ``seed``, so a test
    gets the same weights each run; parameters only some models have are left alone.
    """
    names = [dict(m.named_parameters()) for m in models]
    shared = sorted(set.intersection(*(set(n) for n in names)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in shared:
            value = torch.randn(names[0][name].shape, generator=g) * scale
            for params in names:
                params[name].copy_(value)


def run_micro(
    tmp_path: Path,
    enable: list[str] | tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    path: str | Path | None = None,
    extra_plugins: list | tuple = (),
) -> dict[str, Any]:
    """Train, quantize, reload and score a micro stack; returns the report dict."""
    from golf_core.train import train

    stack = micro_stack(enable, [f"run.out_dir='{Path(tmp_path).as_posix()}'", *overrides], path=path)
    run_dir = Path(tmp_path) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(stack, catalog(), run_dir=run_dir, extra_plugins=list(extra_plugins), quiet=True)


def interpreted_session() -> bool:
    """Whether Triton in this process interprets kernels (``TRITON_INTERPRET=1`` before it was imported)."""
    from golf_core.kernels import triton

    if triton is None:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(triton.language.zeros, InterpretedFunction)


def rerun_under_triton_interpreter(test_file: str | Path, expected_passed: int, selector: str = "test_kernel_") -> None:
    """Run the ``selector`` tests of ``test_file`` in a child pytest with ``TRITON_INTERPRET=1``.

    Triton fixes its interpreter mode when it is imported, which a pytest session has long done, so
    kernel tests run on CPU in a fresh process. Asserts exactly ``expected_passed`` pass and none skip.
    """
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(test_file)), "-k", selector],
        env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) == expected_passed and "skipped" not in proc.stdout, proc.stdout[-2000:]
