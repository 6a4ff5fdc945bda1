"""The challenge's token-shard format, and the loaders that read it.

A shard (``fineweb_{train,val}_NNNNNN.bin``) is 256 little-endian int32 header values
(``[0]`` = :data:`SHARD_MAGIC`, ``[1]`` = :data:`SHARD_VERSION`, ``[2]`` = token count, the rest 0)
followed by that many little-endian uint16 token ids. Every document opens with ``BOS_ID``.

:class:`TokenStream` and :class:`DistributedTokenLoader` reproduce the token order of
openai/parameter-golf's root ``train_gpt.py`` exactly; :func:`load_validation_tokens` and
:func:`load_byte_sidecar` match its validation loaders.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from golf_core.errors import GolfError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
BOS_ID = 1

PathLike = str | os.PathLike[str]


def _header(num_tokens: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0] = SHARD_MAGIC
    header[1] = SHARD_VERSION
    header[2] = num_tokens
    return header.tobytes()


def atomic_write_bytes(path: PathLike, chunks: Sequence[bytes | memoryview]) -> None:
    """Write ``chunks`` to ``path`` through a temp file in the same directory and ``os.replace``.

    A reader never sees a half-written file: it sees the old file, or the whole new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_shard(path: PathLike, tokens: np.ndarray) -> None:
    """Write ``tokens`` (any integer array-like) as one shard at ``path``, atomically."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size >= 2**31:
        raise GolfError(f"{path}: {arr.size} tokens is too many for one shard (limit 2**31 - 1); use smaller shards")
    if arr.dtype != np.uint16:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"write_shard: token ids must be integers, got dtype {arr.dtype}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**16):
            bad = int(arr[(arr < 0) | (arr >= 2**16)][0])
            raise GolfError(
                f"{path}: token id {bad} does not fit the shard format's uint16 (0..65535); use a vocabulary of at most 65536"
            )
    payload = np.ascontiguousarray(arr, dtype="<u2")
    atomic_write_bytes(path, [_header(int(payload.size)), memoryview(payload).cast("B")])


def read_shard(path: PathLike, *, mmap: bool = False) -> np.ndarray:
    """Read and validate one shard; return its tokens as a uint16 array.

    With ``mmap=True`` the tokens are a read-only memory map (nothing is read until used), which is
    what the training stream wants for 100M-token shards.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise GolfError(f"{path}: shard not found; check the data directory or run `golf data prepare`") from None
    except OSError as err:
        raise GolfError(f"{path}: cannot read shard ({err.strerror}); check the file's permissions") from None
    if size < HEADER_BYTES:
        raise GolfError(
            f"{path}: truncated: {size} bytes is shorter than the {HEADER_BYTES}-byte shard header; re-create it with `golf data prepare`"
        )
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    magic, version, num_tokens = int(header[0]), int(header[1]), int(header[2])
    if magic != SHARD_MAGIC:
        raise GolfError(
            f"{path}: bad magic {magic} (expected {SHARD_MAGIC}); this is not a token shard, remove it from the data directory"
        )
    if version != SHARD_VERSION:
        raise GolfError(
            f"{path}: unsupported shard version {version} (expected {SHARD_VERSION}); re-create it with `golf data prepare`"
        )
    if num_tokens < 0:
        raise GolfError(f"{path}: corrupt header: negative token count {num_tokens}; re-create it with `golf data prepare`")
    expected = HEADER_BYTES + 2 * num_tokens
    if size < expected:
        raise GolfError(
            f"{path}: truncated: header says {num_tokens} tokens ({expected} bytes) but file has {size} bytes; "
            "re-create it with `golf data prepare`"
        )
    if size > expected:
        raise GolfError(
            f"{path}: extra bytes: header says {num_tokens} tokens ({expected} bytes) but file has {size} bytes; "
            "re-create it with `golf data prepare`"
        )
    if num_tokens == 0:
        return np.zeros(0, dtype=np.uint16)
    if mmap:
        tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(num_tokens,))
    else:
        tokens = np.fromfile(path, dtype="<u2", count=num_tokens, offset=HEADER_BYTES)
        if tokens.size != num_tokens:  # the file shrank between stat and read
            raise GolfError(f"{path}: short read: expected {num_tokens} tokens, got {tokens.size}; is it being rewritten?")
    return tokens.astype(np.uint16, copy=False)


def find_shards(data_dir: PathLike, split: str) -> list[Path]:
    """Sorted ``fineweb_{split}_*.bin`` shards in ``data_dir`` (byte sidecars excluded)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise GolfError(
            f"data directory not found: {data_dir}; run `golf data prepare` to build one, or pass the right --data-dir"
        )
    files = sorted(p for p in data_dir.glob(f"fineweb_{split}_*.bin") if "_bytes_" not in p.name)
    if not files:
        raise GolfError(
            f"no fineweb_{split}_*.bin shards in {data_dir}; run `golf data prepare` to build them, or pass the right --data-dir"
        )
    return files


def find_byte_sidecars(data_dir: PathLike) -> list[Path]:
    """Sorted ``fineweb_val_bytes_*.bin`` per-token byte sidecars in ``data_dir`` (may be empty)."""
    return sorted(Path(data_dir).glob("fineweb_val_bytes_*.bin"))


def _as_paths(files: Sequence[PathLike], what: str) -> list[Path]:
    if isinstance(files, (str, os.PathLike)):
        raise GolfError(f"{what} takes a list of shard files, got the single path {files}; use find_shards(dir, split)")
    paths = [Path(f) for f in files]
    if not paths:
        raise GolfError(f"{what}: no shard files given; run `golf data prepare` or pass the right --data-dir")
    return paths


class TokenStream:
    """Reads shards in the given order, one after another, and wraps around forever.

    Same semantics as the reference ``TokenStream``: the stream is the concatenation of all shards,
    repeated; ``take(n)`` returns the next ``n`` tokens of it.
    """

    def __init__(self, files: Sequence[PathLike]) -> None:
        self.files = _as_paths(files, "TokenStream")
        # Validate every shard now: a corrupt shard 57 should fail before training, not mid-run.
        if sum(read_shard(f, mmap=True).size for f in self.files) == 0:
            raise GolfError(f"all {len(self.files)} shards from {self.files[0]} on are empty; re-run `golf data prepare`")
        self.reset()

    def reset(self) -> None:
        """Restart from the first token of the first shard."""
        self.file_idx = 0
        self.tokens = read_shard(self.files[0], mmap=True)
        self.pos = 0

    def _advance_file(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.tokens = read_shard(self.files[self.file_idx], mmap=True)
        self.pos = 0

    def _segments(self, n: int) -> Iterator[np.ndarray]:
        """Consume ``n`` tokens, yielding them as views of the shards in order."""
        remaining = n
        while remaining > 0:
            avail = self.tokens.size - self.pos
            if avail <= 0:
                self._advance_file()
                continue
            k = min(remaining, avail)
            yield self.tokens[self.pos : self.pos + k]
            self.pos += k
            remaining -= k

    def take_numpy(self, n: int) -> np.ndarray:
        """The next ``n`` tokens as a fresh uint16 array."""
        out = np.empty(n, dtype=np.uint16)
        filled = 0
        for seg in self._segments(n):
            out[filled : filled + seg.size] = seg
            filled += seg.size
        return out

    def skip(self, n: int) -> None:
        """Consume ``n`` tokens without copying them."""
        for _ in self._segments(n):
            pass

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` tokens as an int64 tensor."""
        return torch.from_numpy(self.take_numpy(n).astype(np.int64))


class DistributedTokenLoader:
    """Per-rank (x, y) batches from one shared token stream, in the reference's exact order.

    Each call consumes ``world_size * (local_tokens + 1)`` contiguous tokens; rank ``r`` gets the
    ``r``-th span of ``local_tokens + 1``, shifted by one for the targets.
    """

    def __init__(self, files: Sequence[PathLike], rank: int, world_size: int, device: torch.device | str) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise GolfError(f"rank {rank} is not in 0..{world_size - 1} (world_size={world_size}); check RANK and WORLD_SIZE")
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.stream = TokenStream(files)

    def reset(self) -> None:
        """Restart from the beginning of the first shard."""
        self.stream.reset()

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Next micro-batch for this rank: ``x, y`` of shape ``[local_tokens // seq_len, seq_len]``, int64."""
        if seq_len < 1 or grad_accum_steps < 1:
            raise GolfError(f"seq_len ({seq_len}) and grad_accum_steps ({grad_accum_steps}) must be positive")
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        if local_tokens < seq_len or local_tokens % seq_len:
            raise GolfError(
                f"batch of {global_tokens} tokens gives {local_tokens} tokens per rank per micro-step "
                f"(world_size={self.world_size}, grad_accum_steps={grad_accum_steps}), not a positive multiple of "
                f"seq_len={seq_len}; make the batch a multiple of {self.world_size * grad_accum_steps * seq_len}"
            )
        span = local_tokens + 1
        # Only this rank's span is copied; the others are skipped, so the stream advances exactly
        # as the reference's take(span * world_size) does.
        self.stream.skip(self.rank * span)
        local = torch.from_numpy(self.stream.take_numpy(span).astype(np.int64))
        self.stream.skip((self.world_size - self.rank - 1) * span)
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def load_validation_tokens(files: Sequence[PathLike], seq_len: int) -> torch.Tensor:
    """All validation tokens, concatenated and cut to ``((N - 1) // seq_len) * seq_len + 1``.

    Returned as int32 (ids fit, a quarter of int64's memory; index with it or cast per batch).
    Byte sidecars in ``files`` are ignored, as the reference does.
    """
    paths = [p for p in _as_paths(files, "load_validation_tokens") if "_bytes_" not in p.name]
    if not paths:
        raise GolfError("load_validation_tokens: only byte sidecars given; pass the fineweb_val_*.bin token shards")
    tokens = np.concatenate([read_shard(p) for p in paths])
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if usable <= 0:
        raise GolfError(
            f"validation split ({paths[0].parent}) has {tokens.size} tokens, too few for seq_len={seq_len} "
            f"(need at least {seq_len + 1}); prepare more validation documents or lower seq_len"
        )
    return torch.from_numpy(tokens[: usable + 1].astype(np.int32))


def load_byte_sidecar(files: Sequence[PathLike] | PathLike, num_tokens: int) -> torch.Tensor | None:
    """Per-token original UTF-8 byte counts from ``fineweb_val_bytes_*.bin`` sidecars, as int32.

    ``files`` is a list of sidecar shards or a data directory to look in; returns ``None`` when there
    are none. The result is cut to ``num_tokens`` (the validation token count), like the reference.
    """
    if isinstance(files, (str, os.PathLike)):
        paths = find_byte_sidecars(files)
    else:
        paths = [Path(f) for f in files]
    if not paths:
        return None
    counts = np.concatenate([read_shard(p) for p in paths])
    if counts.size < num_tokens:
        raise GolfError(
            f"byte sidecar {paths[0]} (+{len(paths) - 1} more) has {counts.size} entries but there are {num_tokens} "
            "validation tokens; rebuild the sidecar alongside the validation shards"
        )
    return torch.from_numpy(counts[:num_tokens].astype(np.int32))
