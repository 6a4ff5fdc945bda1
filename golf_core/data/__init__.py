"""Data for golf: the challenge's shard format and loaders, bits-per-byte accounting, dataset
preparation from text, a built-in sample corpus, and a dataset self-test.

Modules: ``shards`` (format, streams, validation tokens), ``bytes`` (ByteTable, bits_per_byte,
tokenizer loading), ``prepare`` (text -> tokenizer + shards + manifest), ``sample`` (CPython's own
documentation as a download-free corpus), ``verify`` (checksums and the byte-count self-test).
"""

from __future__ import annotations

from golf_core.data.bytes import ByteTable, bits_per_byte, load_tokenizer
from golf_core.data.prepare import iter_documents, prepare_dataset, read_manifest
from golf_core.data.sample import default_cache_dir, ensure_sample_dataset, sample_dataset_dir, sample_documents
from golf_core.data.shards import (
    BOS_ID,
    HEADER_INTS,
    SHARD_MAGIC,
    SHARD_VERSION,
    DistributedTokenLoader,
    TokenStream,
    find_byte_sidecars,
    find_shards,
    load_byte_sidecar,
    load_validation_tokens,
    read_shard,
    write_shard,
)
from golf_core.data.verify import verify_dataset

__all__ = [
    "BOS_ID",
    "HEADER_INTS",
    "SHARD_MAGIC",
    "SHARD_VERSION",
    "ByteTable",
    "DistributedTokenLoader",
    "TokenStream",
    "bits_per_byte",
    "default_cache_dir",
    "ensure_sample_dataset",
    "find_byte_sidecars",
    "find_shards",
    "iter_documents",
    "load_byte_sidecar",
    "load_tokenizer",
    "load_validation_tokens",
    "prepare_dataset",
    "read_manifest",
    "read_shard",
    "sample_dataset_dir",
    "sample_documents",
    "verify_dataset",
    "write_shard",
]
