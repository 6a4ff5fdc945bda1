"""doc_packing: boundaries and per-rank spans against hand-built references, isolation, a micro run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from golf_core.data.shards import write_shard
from golf_core.errors import GolfError
from golf_core.testing import build_model, make_ctx, make_pm, micro_stack, run_micro
from golf_core.train import CalibrationRows, unpack_batch
from plugins.doc_packing import DocPacking
from plugins.doc_packing.loader import DocumentPackingLoader, build_cu_seqlens


def reference_cu(bos_pos, total, max_len, bucket):
    """The records' _build_cu_seqlens, written out with plain loops."""
    bos = [int(b) for b in bos_pos]
    if not bos or bos[0] != 0:
        bos = [0] + bos
    seg_starts = []
    edges = bos + [total]
    for start, end in zip(edges[:-1], edges[1:]):
        if max_len > 0:
            pos = start
            while pos < end:
                seg_starts.append(pos)
                pos += max_len
        else:
            seg_starts.append(start)
    boundaries = seg_starts + [total]
    padded = ((len(boundaries) + bucket - 1) // bucket) * bucket
    return boundaries + [total] * (padded - len(boundaries)), len(seg_starts)


@pytest.mark.parametrize("seed", range(6))
def test_cu_seqlens_match_the_records_construction(seed):
    rng = np.random.default_rng(seed)
    total = int(rng.integers(1, 400))
    bos = np.sort(rng.choice(total, size=int(rng.integers(0, min(total, 30) + 1)), replace=False))
    max_len = int(rng.choice([0, 1, 7, 64, 1000]))
    bucket = int(rng.choice([1, 8, 64]))
    cu, n = build_cu_seqlens(bos, total, max_len, bucket)
    want, want_n = reference_cu(bos, total, max_len, bucket)
    assert cu.dtype == np.int32 and cu.tolist() == want and n == want_n
    assert cu.size % bucket == 0


def test_cu_seqlens_hand_worked():
    # docs at 0, 5 and 9 in 12 tokens, split every 3: [0,3) [3,5) [5,8) [8,9) [9,12)
    cu, n = build_cu_seqlens([0, 5, 9], 12, 3, 8)
    assert cu.tolist() == [0, 3, 5, 8, 9, 12, 12, 12] and n == 5


def _shards(tmp_path: Path) -> tuple[list[Path], list[np.ndarray]]:
    """Two shards of documents [BOS, a, a+1, ...]; each starts with 3 tokens before its first BOS."""
    rng = np.random.default_rng(7)
    shards = []
    for s in range(2):
        parts = [np.array([900 + s, 901, 902])]
        for _ in range(40):
            length = int(rng.integers(1, 30))
            parts.append(np.concatenate([[1], rng.integers(2, 1000, size=length)]))
        shards.append(np.concatenate(parts).astype(np.uint16))
    paths = []
    for i, tokens in enumerate(shards):
        paths.append(tmp_path / f"fineweb_train_{i:06d}.bin")
        write_shard(paths[-1], tokens)
    return paths, shards


def test_rank_spans_equal_a_hand_built_reference(tmp_path):
    paths, shards = _shards(tmp_path)
    world, local, seq_len, bucket = 2, 48, 16, 8
    loaders = [DocumentPackingLoader(paths, r, world, "cpu", bucket_size=bucket) for r in range(world)]
    # The reference walk: cursor at the first BOS of shard 0; each call takes world*(local+1) tokens,
    # rank r the r-th (local+1); a global span past the shard's end moves to the next shard's first BOS.
    shard, cursor, calls = 0, int(np.flatnonzero(shards[0] == 1)[0]), 0
    span = local + 1
    seen_shards = set()
    while calls < 30:
        if cursor + world * span > shards[shard].size:
            shard = (shard + 1) % len(shards)
            cursor = int(np.flatnonzero(shards[shard] == 1)[0])
            continue
        seen_shards.add(shard)
        for r, loader in enumerate(loaders):
            x, y, meta = loader.next_batch(world * local, seq_len, 1)
            buf = shards[shard][cursor + r * span : cursor + (r + 1) * span].astype(np.int64)
            assert x.shape == (1, local) and x.dtype == torch.int64
            assert x[0].tolist() == buf[:-1].tolist() and y[0].tolist() == buf[1:].tolist()
            want, _ = reference_cu(np.flatnonzero(buf[:-1] == 1), local, seq_len, bucket)
            assert meta["cu_seqlens"].dtype == torch.int32 and meta["cu_seqlens"].tolist() == want
            assert meta["max_seqlen"] == seq_len
        cursor += world * span
        calls += 1
    assert seen_shards == {0, 1}  # the walk crossed shards (and wrapped around)


def test_one_process_with_accumulation_sees_the_ranks_tokens(tmp_path):
    # Same global batch: 2 ranks x 1 micro-batch == 1 rank x 2 micro-batches, token for token.
    paths, _ = _shards(tmp_path)
    single = DocumentPackingLoader(paths, 0, 1, "cpu")
    ranks = [DocumentPackingLoader(paths, r, 2, "cpu") for r in range(2)]
    for _ in range(5):
        for r in range(2):
            a = single.next_batch(96, 16, 2)
            b = ranks[r].next_batch(96, 16, 1)
            assert torch.equal(a[0], b[0]) and torch.equal(a[2]["cu_seqlens"], b[2]["cu_seqlens"])


def test_warmup_batches_cover_the_buckets_a_batch_can_have(tmp_path):
    paths, _ = _shards(tmp_path)
    loader = DocumentPackingLoader(paths, 0, 1, "cpu", bucket_size=4, warmup_buckets=(4, 8, 12))
    batches = list(loader.warmup_batches(32, 8, 1))
    # 32 tokens split every 8 need at least 5 entries: bucket 4 can never occur
    assert [b[2]["cu_seqlens"].numel() for b in batches] == [8, 12]
    for x, _, meta in batches:
        cu = meta["cu_seqlens"].tolist()
        assert cu[:5] == [0, 8, 16, 24, 32] and set(cu[5:]) <= {32} and x.shape == (1, 32)


def test_shards_without_bos_are_refused(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(2, 200, dtype=np.uint16))
    with pytest.raises(GolfError, match="no BOS"):
        DocumentPackingLoader([tmp_path / "fineweb_train_000000.bin"], 0, 1, "cpu")


def test_bos_isolates_documents_in_the_model():
    """Perturbing document N changes its logits and never document N+1's (cu_seqlens from the loader rule)."""
    model, _, _ = build_model(micro_stack(["smear_gate"]), seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    torch.manual_seed(0)
    ids = torch.randint(2, 1000, (1, 96))
    starts = [0, 30, 61]
    ids[0, starts] = 1
    cu, _ = build_cu_seqlens(starts[1:], 96, 32, 8)
    meta = {"cu_seqlens": torch.from_numpy(cu), "max_seqlen": 32}
    edited = ids.clone()
    edited[0, 35:61] = torch.randint(2, 1000, (26,))  # document 1, its BOS kept
    with torch.no_grad():
        base, out = model.forward_logits(ids, **meta), model.forward_logits(edited, **meta)
        dense_base, dense_out = model.forward_logits(ids), model.forward_logits(edited)
    assert torch.equal(out[:, 61:], base[:, 61:]) and torch.equal(out[:, :35], base[:, :35])
    assert not torch.allclose(out[:, 35:61], base[:, 35:61])
    assert not torch.allclose(dense_out[:, 61:], dense_base[:, 61:])  # dense rows leak: the check can fail


def test_calibration_gets_plain_rows(tmp_path):
    paths, _ = _shards(tmp_path)
    rows = CalibrationRows(DocumentPackingLoader(paths, 0, 1, "cpu"))
    x, y = rows.next_batch(64, 16, 1)
    assert x.shape == y.shape == (4, 16)
    packed = DocumentPackingLoader(paths, 0, 1, "cpu").next_batch(64, 16, 1)
    assert torch.equal(x.reshape(1, -1), packed[0])
    assert unpack_batch((x, y))[2] == {}


def test_a_model_without_cu_seqlens_is_refused():
    class NoMeta(torch.nn.Module):
        def forward(self, input_ids, target_ids):
            return input_ids.float().mean()

    stack = micro_stack(["doc_packing"])
    with pytest.raises(GolfError, match="cu_seqlens"):
        DocPacking().golf_patch_model(NoMeta(), make_ctx(stack, pm=make_pm(stack)))


def test_params_validation():
    with pytest.raises(ValueError, match="multiples of bucket_size"):
        DocPacking.Params(bucket_size=64, warmup_buckets=(64, 100)).validate()
    with pytest.raises(ValueError, match="max_doc_len"):
        DocPacking.Params(max_doc_len=-1).validate()
    with pytest.raises(GolfError, match="warmup_buckets"):
        micro_stack(["doc_packing"], ["techniques.doc_packing.warmup_buckets=[64, 100]"])


def test_trains_end_to_end_with_warmup_buckets(tmp_path):
    report = run_micro(tmp_path, enable=["doc_packing"], overrides=["train.compile_warmup_steps=1"])
    assert report["steps"] == 3 and math.isfinite(report["val_bpb"]) and report["val_bpb"] < 20
    log = (tmp_path / "run" / "train.log").read_text()
    assert "doc_packing: packed rows" in log
    assert "each after 4 attention-shape batches" in log  # buckets 64, 128, 192, 256
