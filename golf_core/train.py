"""The run: data -> model -> compile warm-up -> capped training -> quantize -> artifact -> reload -> score.

Hooks are called only while the run is set up and at phase boundaries; the training step itself
is plain PyTorch (compiled once on CUDA). ``golf_after_optimizer_step`` runs in eager Python
after each step, outside the compiled graph.

Launch: ``golf train STACK`` (one process) or ``torchrun --nproc_per_node N -m golf_core STACK``;
with ``RANK``/``WORLD_SIZE`` set, the run initializes torch.distributed (NCCL on CUDA, gloo on
CPU), each rank reads its slice of every batch, rank 0 logs and writes the artifact, and every
rank evaluates the reloaded artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import golf_core
from golf_core.catalog import Catalog
from golf_core.context import RunContext
from golf_core.data import (
    ByteTable,
    find_byte_sidecars,
    find_shards,
    load_byte_sidecar,
    load_tokenizer,
    load_validation_tokens,
    read_shard,
)
from golf_core.errors import BudgetError, GolfError
from golf_core.eval.scoring import autocast_for, evaluate
from golf_core.manager import enabled_plugins, make_plugin_manager
from golf_core.model.gpt import cast_for_device
from golf_core.model.spec import ModelSpec
from golf_core.progress import Progress, training_line
from golf_core.quant.artifact import atomic_write_bytes, counted_code_bytes, route_summary
from golf_core.quant.state import CalibrationData
from golf_core.stack import ResolvedStack, dumps_toml

# ---------------------------------------------------------------------------------------------
# Set-up helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> Distributed:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed()
    layout = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if layout.enabled and not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(layout.local_rank)
            dist.init_process_group(backend="nccl", device_id=torch.device("cuda", layout.local_rank))
        else:
            dist.init_process_group(backend="gloo")
    return layout


def pick_device(setting: str, local_rank: int) -> torch.device:
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GolfError("run.device = 'cuda' but no CUDA device is available; use --set run.device='cpu'")
    return torch.device("cuda", local_rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_dataset(stack: ResolvedStack) -> Path:
    setting = stack.core.data.dataset
    if setting == "sample":
        from golf_core.data import ensure_sample_dataset

        return ensure_sample_dataset(vocab_size=stack.core.model.vocab_size)
    path = Path(setting).expanduser()
    if not path.is_absolute():
        # Relative to the current directory first, then to the stack file.
        candidates = [Path.cwd() / path, stack.base_dir / path]
        path = next((c for c in candidates if c.exists()), candidates[0])
    if not path.is_dir():
        raise GolfError(f"data.dataset: directory not found: {path}; run `golf data prepare` or fix the path")
    return path


def code_version() -> str:
    root = Path(golf_core.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


# artifact.code_files' default: a stack's code is the train_gpt.py `golf bundle` writes for it.
BUNDLED_CODE = "bundle"


def shipped_code_paths(stack: ResolvedStack, catalog: Catalog) -> list[Path]:
    """The sources an explicit ``artifact.code_files`` list names: paths under the repo root, and
    ``"plugins:enabled"`` for the enabled techniques' packages."""
    root = Path(golf_core.__file__).resolve().parent.parent
    paths: list[Path] = []
    for item in stack.core.artifact.code_files:
        if item == BUNDLED_CODE:
            raise GolfError(
                f"artifact.code_files: {BUNDLED_CODE!r} (the bundled train_gpt.py) cannot be combined with other entries; "
                f"use [{BUNDLED_CODE!r}] or a list of paths"
            )
        if item == "plugins:enabled":
            for name in stack.techniques:
                module = __import__(catalog.get(name).cls.__module__, fromlist=["_"])
                source = Path(module.__file__)
                paths.append(source.parent if source.name == "__init__.py" else source)
        else:
            candidate = root / item
            if not candidate.exists():
                raise GolfError(f"artifact.code_files: {item!r} not found under {root}")
            paths.append(candidate)
    return paths


def counted_stack_code(stack: ResolvedStack, catalog: Catalog) -> dict[str, Any]:
    """The stack's counted code (``code_bytes`` and detail): one implementation for ``golf train``,
    ``golf check`` and ``golf bundle``.

    With ``artifact.code_files = ["bundle"]`` (the default) it is the ``train_gpt.py`` that ``golf
    bundle`` writes for the stack, counted as that file's own run counts it: the modules a run
    imports (trainer, core defaults, enabled techniques), not the CLI-only ones
    (:data:`golf_core.bundle.EXCLUDED_AT_RUNTIME`). A list of paths is counted as it stands.
    """
    if list(stack.core.artifact.code_files) == [BUNDLED_CODE]:
        try:
            from golf_core.bundle import stack_code_bytes
        except ImportError:  # a bundled train_gpt.py leaves golf_core.bundle out
            raise GolfError(
                f"artifact.code_files = [{BUNDLED_CODE!r}] needs golf's sources; a bundled train_gpt.py counts itself "
                "(--set artifact.code_files=['train_gpt.py'])"
            ) from None
        return stack_code_bytes(stack, catalog)
    return counted_code_bytes(shipped_code_paths(stack, catalog), root=Path(golf_core.__file__).resolve().parent.parent)


class RunLog:
    """Rank-0 logger: console and ``train.log`` in the run directory."""

    def __init__(self, path: Path | None, console: bool, echo) -> None:
        self.path = path
        self.console = console
        self.echo = echo
        self._fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self.progress = Progress(enabled=None if console else False)

    def live(self, text: str) -> None:
        """Rewrite the terminal's status line (nothing when not a terminal; the log has the figures)."""
        self.progress.show(text)

    def __call__(self, msg: str, console: bool = True) -> None:
        if self.console and console:
            self.progress.done()
            self.echo(msg)
        if self._fh:
            self._fh.write(msg + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def _new_run_dir(stack: ResolvedStack, out_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out_dir / f"{stack.name}-{stamp}-s{stack.core.run.seed}"
    run_dir, n = base, 1
    while run_dir.exists():
        run_dir, n = base.with_name(f"{base.name}-{n}"), n + 1
    run_dir.mkdir(parents=True)
    return run_dir


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Timer:
    phases: dict[str, float] = field(default_factory=dict)
    live: Any = None  # RunLog.live, to show the phase in progress on a terminal

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                if timer.live is not None:
                    timer.live(f"{name.replace('_', ' ')} ...")
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.phases[name] = timer.phases.get(name, 0.0) + time.perf_counter() - self.t0

        return _Phase()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unpack_batch(batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A loader's batch as ``(x, y, attn_meta)``: loaders return ``(x, y)`` or ``(x, y, attn_meta)``.

    ``attn_meta`` (a dict, possibly empty) holds keyword arguments for the model's forward, e.g.
    ``cu_seqlens`` / ``max_seqlen`` of a document-packed batch (``golf_core.model.attention``).
    """
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1], {}
        if len(batch) == 3 and (batch[2] is None or isinstance(batch[2], dict)):
            return batch[0], batch[1], dict(batch[2] or {})
    raise GolfError(
        f"the data loader's next_batch returned {type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}; "
        "it must return (x, y) or (x, y, attn_meta) with attn_meta a dict of model keyword arguments"
    )


class CalibrationRows:
    """The training loader as plain ``[rows, seq_len]`` batches for calibration (GPTQ Hessians).

    A document-packed batch is one long row whose attention is kept inside documents by its
    ``attn_meta``; calibration runs ``forward_logits`` on dense rows, so the packed row is cut
    into ``seq_len`` rows and the metadata dropped (the baseline loader's rows, which is what
    PR #1855 calibrates on).
    """

    def __init__(self, loader) -> None:
        self.loader = loader

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, attn_meta = unpack_batch(self.loader.next_batch(global_tokens, seq_len, grad_accum_steps))
        if attn_meta:
            x, y = x.reshape(-1, seq_len), y.reshape(-1, seq_len)
        return x, y


def _mean_over_ranks(value: torch.Tensor, layout: Distributed) -> torch.Tensor:
    """``value`` averaged over ranks (the logged training loss is the whole global batch's)."""
    if not layout.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)  # SUM: gloo has no AVG
    return value / layout.world_size


def _ranks_in_sync(model: nn.Module, layout: Distributed) -> bool:
    """Whether every rank holds bit-identical weights (per-parameter float64 sums compared)."""
    if not layout.enabled:
        return True
    with torch.no_grad():
        sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [torch.empty_like(sums) for _ in range(layout.world_size)]
    dist.all_gather(gathered, sums)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def train(
    stack: ResolvedStack,
    catalog: Catalog,
    *,
    run_dir: Path | None = None,
    echo=print,
    extra_plugins: list = (),  # type: ignore[assignment]
    quiet: bool = False,
) -> dict[str, Any]:
    """Run ``stack`` end to end and return the report (also written to ``run_dir/report.json``)."""
    cfg = stack.core
    timer = Timer()
    owns_group = not (dist.is_available() and dist.is_initialized())
    layout = init_distributed("cuda" if cfg.run.device != "cpu" and torch.cuda.is_available() else "cpu")
    owns_group = owns_group and layout.enabled
    device = pick_device(cfg.run.device, layout.local_rank)
    seed_everything(cfg.run.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    with timer("data_setup"):
        data_dir = resolve_dataset(stack)
        tokenizer_path = Path(cfg.data.tokenizer) if cfg.data.tokenizer else data_dir / "tokenizer.model"
        tokenizer = load_tokenizer(tokenizer_path)
        if tokenizer.vocab_size() > cfg.model.vocab_size:
            raise GolfError(
                f"tokenizer {tokenizer_path} has {tokenizer.vocab_size()} pieces but model.vocab_size is "
                f"{cfg.model.vocab_size}; set --set model.vocab_size={tokenizer.vocab_size()}"
            )
        train_files = find_shards(data_dir, "train")
        val_files = find_shards(data_dir, "val")
        # Header and size of every shard now (a memory map reads no tokens), so a corrupt or
        # truncated shard stops the run before its directory exists, not minutes into training.
        for shard in train_files + val_files:
            read_shard(shard, mmap=True)

    if layout.rank == 0 and run_dir is None:
        run_dir = _new_run_dir(stack, Path(cfg.run.out_dir))
    log = RunLog(run_dir / "train.log" if (run_dir and layout.rank == 0) else None, layout.rank == 0 and not quiet, echo)
    timer.live = log.live
    try:
        report = _run(stack, catalog, cfg, layout, device, timer, log, run_dir, data_dir, tokenizer, train_files, val_files, extra_plugins)
    finally:
        log.close()
    if owns_group:
        # Every rank done before any closes its connections (a gloo peer that vanishes mid-exit aborts the others).
        dist.barrier()
        dist.destroy_process_group()
    return report


def _run(stack, catalog, cfg, layout, device, timer, log, run_dir, data_dir, tokenizer, train_files, val_files, extra_plugins):
    pm = make_plugin_manager(stack, catalog, list(extra_plugins))
    ctx = RunContext(
        stack=stack, device=device, pm=pm, rank=layout.rank, world_size=layout.world_size, local_rank=layout.local_rank,
        run_dir=run_dir, log=log, tokenizer=tokenizer,
        byte_table=ByteTable.from_sentencepiece(tokenizer, cfg.model.vocab_size).to(device),
        data_dir=data_dir, train_files=train_files, val_files=val_files,
    )
    pm.hook.golf_configure(ctx=ctx)
    techniques = enabled_plugins(pm)

    # ---- log header: resolved stack, plugins, versions -------------------------------------
    log(f"golf {golf_core.__version__} code {code_version()} torch {torch.__version__} device {device} world_size {layout.world_size}")
    versions = {p.name: catalog.get(p.name).version for p in techniques if p.name in catalog}
    log("plugins: " + ", ".join(f"{p.name}{'*' if p.core_default else ''} {versions.get(p.name) or '-'}" for p in techniques) + "   (* core default)")
    resolved_toml = dumps_toml(stack.flat())
    log("resolved stack:\n" + resolved_toml, console=False)
    if run_dir is not None and layout.rank == 0:
        atomic_write_bytes(run_dir / "stack.resolved.toml", resolved_toml.encode())
    for lines in pm.hook.golf_report_header(ctx=ctx):
        for line in lines or []:
            log(line)
    log(f"data: {data_dir} train_shards:{len(train_files)} val_shards:{len(val_files)} tokenizer_vocab:{tokenizer.vocab_size()}")

    # ---- model ----------------------------------------------------------------------------
    with timer("build"):
        spec = ModelSpec.from_config(cfg.model)
        spec.loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
        pm.hook.golf_model_spec(spec=spec, ctx=ctx)
        problems = spec.check()
        if problems:
            raise GolfError("; ".join(problems))
        base_model: nn.Module = pm.hook.golf_build_model(spec=spec, ctx=ctx)
        pm.hook.golf_patch_model(model=base_model, ctx=ctx)
        cast_for_device(base_model, device)
        use_compile = cfg.run.compile == "on" or (cfg.run.compile == "auto" and device.type == "cuda")
        if use_compile:
            # One graph per layout x attention-metadata shape (cu_seqlens buckets): room for all
            # of them, as the records do (cache_size_limit 16-64), instead of falling back to eager.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            if layout.enabled:
                # DDP all-reduces after backward; splitting the graph at its buckets only costs fusion.
                torch._dynamo.config.optimize_ddp = False
        compiled = torch.compile(base_model, dynamic=False, fullgraph=True) if use_compile else base_model
        if layout.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(compiled, device_ids=[layout.local_rank] if device.type == "cuda" else None, broadcast_buffers=False)
        else:
            model = compiled
        optimizer = pm.hook.golf_build_optimizer(model=base_model, ctx=ctx)
        lr_schedule = pm.hook.golf_lr_schedule(ctx=ctx)
    if use_compile:
        # Score with a compiled forward too: eager bf16 rounds after every op and scores the
        # same weights measurably worse than the compiled graph they were trained in.
        ctx.shared["_forward_logits"] = torch.compile(base_model.forward_logits, dynamic=False, fullgraph=True)
    n_params = sum(p.numel() for p in base_model.parameters())
    log(f"model_params:{n_params} layers:{spec.num_layers} dim:{spec.model_dim} vocab:{spec.vocab_size} compile:{use_compile}")

    tcfg = cfg.train
    if tcfg.grad_accum_steps > 0:
        grad_accum = tcfg.grad_accum_steps
    elif 8 % layout.world_size == 0:
        grad_accum = 8 // layout.world_size
    else:
        raise GolfError(f"world size {layout.world_size} does not divide 8; set train.grad_accum_steps explicitly")
    local_tokens = tcfg.train_batch_tokens // (layout.world_size * grad_accum)
    if local_tokens < tcfg.train_seq_len or local_tokens % tcfg.train_seq_len:
        raise GolfError(
            f"train.train_batch_tokens={tcfg.train_batch_tokens} gives {local_tokens} tokens per micro-batch, "
            f"not a positive multiple of train.train_seq_len={tcfg.train_seq_len}"
        )
    tokens_per_step = local_tokens * layout.world_size * grad_accum
    log(f"train_batch_tokens:{tcfg.train_batch_tokens} seq_len:{tcfg.train_seq_len} grad_accum:{grad_accum} iterations:{tcfg.iterations} wallclock_cap:{cfg.run.max_wallclock_seconds}s")

    def micro_step(loader) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for micro in range(grad_accum):
            if layout.enabled:
                model.require_backward_grad_sync = micro == grad_accum - 1
            x, y, attn_meta = unpack_batch(loader.next_batch(tcfg.train_batch_tokens, tcfg.train_seq_len, grad_accum))
            with autocast_for(device):
                loss = model(x, y, **attn_meta)
            total += loss.detach()
            (loss / grad_accum).backward()
        return total / grad_accum

    # ---- compile warm-up, off the clock, state restored afterwards -------------------------
    if tcfg.compile_warmup_steps > 0:
        with timer("compile_warmup"):
            initial_model = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
            initial_optim = optimizer.state_dict()
            loader = pm.hook.golf_data_loader(ctx=ctx)
            model.train()
            # Batches of every attention-metadata shape the loader can produce (document packing's
            # cu_seqlens buckets), each run forward and backward once per variant below.
            make_shapes = getattr(loader, "warmup_batches", None)
            shape_batches = [unpack_batch(b) for b in make_shapes(tcfg.train_batch_tokens, tcfg.train_seq_len, grad_accum)] if make_shapes else []
            # Once plainly, then once inside each graph variant a technique registered in the spec
            # (depth recurrence's looped layout): every graph the run switches to is compiled here.
            variants = {"": contextlib.nullcontext, **spec.warmup_variants}
            for variant in variants.values():
                with variant(base_model):
                    for x, y, attn_meta in shape_batches:
                        if layout.enabled:
                            model.require_backward_grad_sync = True
                        with autocast_for(device):
                            loss = model(x, y, **attn_meta)
                        (loss / grad_accum).backward()
                        optimizer.zero_grad()
                    for _ in range(tcfg.compile_warmup_steps):
                        optimizer.zero_grad()
                        micro_step(loader)
                        optimizer.step(0)
            base_model.load_state_dict(initial_model, strict=True)
            optimizer.load_state_dict(initial_optim)
            optimizer.zero_grad()
            _sync(device)
        names = "".join(f" + {n}" for n in spec.warmup_variants)
        shapes = f", each after {len(shape_batches)} attention-shape batches" if shape_batches else ""
        log(f"compile_warmup: {tcfg.compile_warmup_steps} steps x (plain{names}){shapes} in {timer.phases['compile_warmup']:.1f}s (state restored)")

    # ---- training --------------------------------------------------------------------------
    loader = pm.hook.golf_data_loader(ctx=ctx)
    cap = cfg.run.max_wallclock_seconds
    # Work done after training inside the training budget (GPTQ calibration) reserves seconds via
    # ctx.shared["training_reserve_seconds"]; training stops that much before the cap.
    reserve = float(ctx.shared.get("training_reserve_seconds", 0.0)) if cap > 0 else 0.0
    if cap > 0 and reserve >= cap:
        raise GolfError(f"techniques reserve {reserve:g}s of run.max_wallclock_seconds={cap:g}; lower their reserve_seconds or raise the cap")
    train_cap = cap - reserve
    if reserve > 0:
        log(f"training cap: {train_cap:g}s ({cap:g}s wall-clock cap - {reserve:g}s reserved for post-training work)")
    train_seconds = 0.0
    curve: list[list[float]] = []
    step = 0
    stop_after: int | None = None
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    last_loss = float("nan")
    while True:
        if step >= tcfg.iterations or (stop_after is not None and step >= stop_after):
            break
        if tcfg.val_loss_every > 0 and step > 0 and step % tcfg.val_loss_every == 0:
            _sync(device)
            train_seconds += time.perf_counter() - t0
            mid = _score(base_model, ctx, cfg, val_files, adapters=[])
            log(f"step:{step} val_loss:{mid.val_loss:.4f} val_bpb:{mid.val_bpb:.4f}")
            model.train()
            t0 = time.perf_counter()
        elapsed = train_seconds + time.perf_counter() - t0
        if train_cap > 0:
            ctx.progress = min(elapsed / train_cap, 1.0)
            if step > 0:
                ctx.shared["est_total_steps"] = train_cap / (elapsed / step)
        else:
            ctx.progress = step / max(tcfg.iterations, 1)
        ctx.step = step
        optimizer.set_lr_multiplier(lr_schedule(ctx.progress))
        optimizer.zero_grad()
        train_loss = micro_step(loader)
        optimizer.step(step)
        step += 1
        ctx.step = step
        pm.hook.golf_after_optimizer_step(step=step, model=base_model, optimizer=optimizer, ctx=ctx)
        if ctx.recompile_requested:
            ctx.recompile_requested = False
            if use_compile:
                # reset() drops every cached graph, so the compiled module re-traces on its next
                # call: the one `model` runs, inside DDP too (a new torch.compile object would not
                # be the module the DDP wrapper holds). Every rank must request it at the same step.
                torch._dynamo.reset()
                log(f"step:{step} recompiling the training step (requested by a technique)")
        elapsed = train_seconds + time.perf_counter() - t0
        log_now = tcfg.train_log_every > 0 and (step <= 10 or step % tcfg.train_log_every == 0)
        if log_now or step == tcfg.iterations:
            last_loss = float(_mean_over_ranks(train_loss, layout).item())
            tok_s = step * tokens_per_step / max(elapsed, 1e-9)
            curve.append([step, last_loss, elapsed])
            log(f"step:{step}/{tcfg.iterations} train_loss:{last_loss:.4f} train_time:{elapsed * 1000:.0f}ms step_avg:{elapsed * 1000 / step:.2f}ms tok/s:{tok_s:,.0f}")
        log.live(training_line(step, tcfg.iterations, last_loss, step * tokens_per_step / max(elapsed, 1e-9), elapsed, train_cap))
        reached = train_cap > 0 and elapsed >= train_cap
        if layout.enabled and cap > 0:
            flag = torch.tensor(int(reached), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            reached = bool(flag.item())
        if reached and stop_after is None:
            stop_after = step
    _sync(device)
    train_seconds += time.perf_counter() - t0
    timer.phases["train"] = train_seconds
    if cap > 0 and stop_after is not None:
        log(f"stopping_early: wallclock_cap train_time:{train_seconds * 1000:.0f}ms step:{step}/{tcfg.iterations}")
    if not curve or curve[-1][0] != step:
        curve.append([step, float(_mean_over_ranks(train_loss, layout).item()) if step else float("nan"), train_seconds])
    ranks_in_sync = _ranks_in_sync(base_model, layout)
    if not ranks_in_sync:
        log("warning: ranks finished training with different weights; the gradient or optimizer sync is broken")
    tokens_per_second = step * tokens_per_step / max(train_seconds, 1e-9)
    if device.type == "cuda":
        log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB")

    with timer("train_end"):
        pm.hook.golf_train_end(model=base_model, ctx=ctx)

    report: dict[str, Any] = {
        "stack": stack.name,
        "stack_path": str(stack.path) if stack.path else None,
        "seed": cfg.run.seed,
        "code_version": code_version(),
        "golf_version": golf_core.__version__,
        "techniques": list(stack.techniques),
        "device": str(device),
        "world_size": layout.world_size,
        "ranks_in_sync": ranks_in_sync,
        "model_params": n_params,
        "steps": step,
        "tokens_per_step": tokens_per_step,
        "tokens_per_second": tokens_per_second,
        "train_curve": curve,
    }

    # ---- evaluation of the trained (unquantized) model -----------------------------------
    if cfg.eval.pre_quant:
        with timer("eval_pre_quant"):
            pre = _score(base_model, ctx, cfg, val_files, adapters=[])
        report["pre_quant"] = pre.as_dict()
        log(f"pre_quant val_loss:{pre.val_loss:.4f} val_bpb:{pre.val_bpb:.4f} ({pre.tokens} tokens, {pre.bytes} bytes)")

    # ---- quantize inside the training budget, serialize, count bytes --------------------
    budget_t0 = time.perf_counter()

    def seconds_left() -> float:
        return (cap - train_seconds - (time.perf_counter() - budget_t0)) if cap > 0 else float("inf")

    calib = CalibrationData(
        make_loader=lambda: CalibrationRows(pm.hook.golf_data_loader(ctx=ctx)),
        batch_tokens=tcfg.train_batch_tokens // max(grad_accum, 1),
        seq_len=tcfg.train_seq_len,
        seconds_left=seconds_left,
    )
    base_model.eval()
    with timer("quantize"):
        qstate = pm.hook.golf_quantize(model=base_model, calib=calib, ctx=ctx)
        pm.hook.golf_refine_quant(qstate=qstate, model=base_model, calib=calib, ctx=ctx)
    with timer("serialize"):
        blob = pm.hook.golf_serialize(qstate=qstate, ctx=ctx)
        code = counted_stack_code(stack, catalog)
    budget = cfg.artifact.budget_bytes
    total = len(blob) + code["code_bytes"]
    artifact = {
        "model_bytes": len(blob),
        "code_bytes": code["code_bytes"],
        "code_detail": code,
        "total_bytes": total,
        "budget_bytes": budget,
        "headroom_bytes": budget - total,
        "within_budget": total <= budget,
        "routes": qstate.routes(),
    }
    report["artifact"] = artifact
    report["training_budget"] = {
        "train_seconds": train_seconds,
        "quantize_seconds": timer.phases["quantize"],
        "total_seconds": train_seconds + timer.phases["quantize"],
        "cap_seconds": cap,
        "reserve_seconds": reserve,
        "train_cap_seconds": train_cap,
        "within_cap": cap <= 0 or train_seconds + timer.phases["quantize"] <= cap,
    }
    budget_line = f"training_budget: train {train_seconds:.1f}s + quantize {timer.phases['quantize']:.1f}s = {train_seconds + timer.phases['quantize']:.1f}s"
    log(budget_line + (f" of the {cap:g}s cap ({reserve:g}s reserved){'' if report['training_budget']['within_cap'] else ' OVER THE CAP'}" if cap > 0 else " (no cap)"))
    artifact_path = run_dir / "model.golf" if run_dir is not None else None
    if layout.rank == 0 and artifact_path is not None:
        atomic_write_bytes(artifact_path, blob)
    log("quantized weights:")
    for line in route_summary(artifact["routes"]):
        log(f"  {line}")
    for route in artifact["routes"]:
        log(f"  {route['route']}: {route['name']} {route['shape']} {route['payload_bytes']} B (entropy {route['entropy_bytes']} B)", console=False)
    log(f"artifact: model {len(blob):,} B + code {code['code_bytes']:,} B = {total:,} B of {budget:,} ({budget - total:+,} headroom)")

    # ---- reload the artifact and score the reloaded model ----------------------------------
    if layout.enabled:
        dist.barrier()
    with timer("reload"):
        stored = artifact_path.read_bytes() if artifact_path is not None and artifact_path.exists() else blob
        reloaded = pm.hook.golf_deserialize(blob=stored, ctx=ctx)
        if reloaded is None:
            raise GolfError("no deserializer recognized the artifact; the serializer and deserializer must come from the same technique")
        state = reloaded.dequantize()
        current = base_model.state_dict()
        base_model.load_state_dict({k: v.to(dtype=current[k].dtype, device=current[k].device) for k, v in state.items()}, strict=True)
    with timer("eval_post_quant"):
        post = _score(base_model, ctx, cfg, val_files, adapters=[])
    report["post_quant"] = post.as_dict()
    log(f"post_quant val_loss:{post.val_loss:.4f} val_bpb:{post.val_bpb:.4f}")
    adapters = [a for a in pm.hook.golf_eval_adapters(model=base_model, ctx=ctx) if a is not None]
    final = post
    if adapters:
        with timer("eval_adapters"):
            final = _score(base_model, ctx, cfg, val_files, adapters=adapters)
        report["adapted"] = final.as_dict()
        log(f"adapted ({', '.join(a.name for a in adapters)}) val_loss:{final.val_loss:.4f} val_bpb:{final.val_bpb:.4f}")
    report["val_loss"] = final.val_loss
    report["val_bpb"] = final.val_bpb
    eval_seconds = timer.phases.get("eval_adapters", timer.phases["eval_post_quant"])
    report["eval_budget"] = {"seconds": eval_seconds, "budget_seconds": cfg.run.eval_budget_seconds, "within_budget": eval_seconds <= cfg.run.eval_budget_seconds}
    report["phases"] = dict(timer.phases)
    report["run_dir"] = str(run_dir) if run_dir else None

    if layout.rank == 0 and run_dir is not None:
        atomic_write_bytes(run_dir / "report.json", json.dumps(report, indent=2, default=float).encode())
    log(
        f"done: val_bpb {final.val_bpb:.4f} (pre-quant {report.get('pre_quant', {}).get('val_bpb', float('nan')):.4f}) "
        f"steps {step} tok/s {tokens_per_second:,.0f} artifact {total:,} B / {budget:,} B"
        + (f"  run dir {run_dir}" if run_dir else "")
    )
    if not artifact["within_budget"]:
        raise BudgetError(f"artifact is {total:,} bytes, over the {budget:,}-byte budget by {total - budget:,}; report written to {run_dir}")
    return report


def _score(model: nn.Module, ctx: RunContext, cfg, val_files, adapters):
    seq_len = cfg.eval.seq_len or cfg.train.train_seq_len
    val_tokens = ctx.shared.get("_val_tokens")
    if val_tokens is None:
        val_tokens = load_validation_tokens(val_files, seq_len)
        if cfg.data.val_tokens_limit > 0:
            keep = min(val_tokens.numel() - 1, cfg.data.val_tokens_limit) // seq_len * seq_len
            if keep <= 0:
                raise GolfError(f"data.val_tokens_limit={cfg.data.val_tokens_limit} is shorter than one sequence of {seq_len}")
            val_tokens = val_tokens[: keep + 1]
        ctx.shared["_val_tokens"] = val_tokens
        sidecars = find_byte_sidecars(ctx.data_dir) if ctx.data_dir else []
        ctx.shared["_val_bytes"] = load_byte_sidecar(sidecars, val_tokens.numel()) if sidecars else None
    return evaluate(
        model, val_tokens, ctx, seq_len=seq_len, batch_tokens=cfg.train.val_batch_tokens,
        adapters=adapters, byte_sidecar=ctx.shared["_val_bytes"],
        forward_logits=ctx.shared.get("_forward_logits"),
    )
