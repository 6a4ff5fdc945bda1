"""RunContext: what every hook receives as ``ctx``.

It holds the resolved stack and its core config, the plugin manager, the device and the
distributed layout, the tokenizer and its byte table, the data files, the run directory and a
logger. The trainer updates ``step`` and ``progress`` between steps (never inside the compiled
step). ``shared`` is a scratch dict for techniques that cooperate (keys are technique names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from golf_core.config import CoreConfig
from golf_core.stack import ResolvedStack


@dataclass
class RunContext:
    stack: ResolvedStack
    device: torch.device
    pm: Any = None  # pluggy.PluginManager
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    run_dir: Path | None = None
    log: Callable[[str], None] = print
    tokenizer: Any = None  # sentencepiece.SentencePieceProcessor
    byte_table: Any = None  # golf_core.data.bytes.ByteTable
    data_dir: Path | None = None
    train_files: list[Path] = field(default_factory=list)
    val_files: list[Path] = field(default_factory=list)
    step: int = 0
    progress: float = 0.0
    shared: dict[str, Any] = field(default_factory=dict)
    recompile_requested: bool = False

    @property
    def cfg(self) -> CoreConfig:
        return self.stack.core

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def request_recompile(self) -> None:
        """Ask the trainer to re-trace the compiled step after this optimizer step (e.g. a loop switched on)."""
        self.recompile_requested = True
