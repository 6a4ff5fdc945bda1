"""Test fixtures for quantizers and serializers: a QuantState with every kind of payload, and an
independent reload-and-score of a finished micro run's artifact.

Int8 code matrices of several layers (one group of similar rows, one of wide random codes), float16
row scales, float32 / bfloat16 / float16 passthrough tensors, an int64 tensor, a 0-dim scale, an
empty tensor and JSON meta: a serializer that round-trips this bit-exactly handles
anything the quantizers produce.
"""

from __future__ import annotations

import torch

from golf_core.quant.state import QuantizedTensor, QuantState


def example_state(seed: int = 0, layers: int = 3, dim: int = 48, hidden: int = 96) -> QuantState:
    g = torch.Generator().manual_seed(seed)
    state = QuantState(meta={"quantizer": "example", "seed": seed})
    emb = torch.randint(-63, 64, (128, dim), generator=g, dtype=torch.int8)
    state.entries["tok_emb.weight"] = QuantizedTensor(
        "int8_row", (128, dim), "float32",
        {"q": emb, "scale": (torch.rand(128, generator=g) * 1e-2).half()},
        route="gptq (int7)", meta={"method": "gptq", "bits": 7, "clip_sigmas": 14.0},
    )
    base = torch.randint(-31, 32, (hidden, dim), generator=g, dtype=torch.int8)
    for i in range(layers):
        # Rows near a shared pattern: the similarity sort has something to find.
        noise = torch.randint(-2, 3, (hidden, dim), generator=g, dtype=torch.int8)
        fc = torch.clamp(base[torch.randperm(hidden, generator=g)] + noise, -31, 31).to(torch.int8)
        state.entries[f"blocks.{i}.mlp.fc.weight"] = QuantizedTensor(
            "int8_row", (hidden, dim), "float32", {"q": fc, "scale": torch.rand(hidden, generator=g).half()},
            route="gptq (int6)", meta={"method": "gptq", "bits": 6},
        )
        state.entries[f"blocks.{i}.attn.c_q.weight"] = QuantizedTensor(
            "int8_row", (dim, dim), "float32",
            {"q": torch.randint(-31, 32, (dim, dim), generator=g, dtype=torch.int8), "scale": torch.rand(dim, generator=g).half()},
            route="gptq (int6)",
        )
        state.entries[f"blocks.{i}.attn_scale"] = QuantizedTensor(
            "raw", (dim,), "float32", {"value": torch.randn(dim, generator=g)}, route="passthrough (float32)",
        )
        state.entries[f"blocks.{i}.attn.attn_gate_w"] = QuantizedTensor(
            "int8_row", (4, 12), "bfloat16",
            {"q": torch.randint(-127, 128, (4, 12), generator=g, dtype=torch.int8), "scale": torch.rand(4, generator=g).half()},
            route="gate_int8_row",
        )
    state.entries["skip_weights"] = QuantizedTensor(
        "raw", (2, dim), "bfloat16", {"value": torch.randn(2, dim, generator=g).bfloat16()}, route="passthrough (bfloat16)",
    )
    state.entries["smear_lambda"] = QuantizedTensor(
        "int8_tensor", (5,), "float32",
        {"q": torch.randint(-127, 128, (5,), generator=g, dtype=torch.int8), "scale": torch.tensor(0.25)},
        route="int8 per-tensor",
    )
    state.entries["step_counter"] = QuantizedTensor("raw", (3,), "int64", {"value": torch.tensor([1, -2, 2**40])}, route="passthrough (int64)")
    state.entries["empty"] = QuantizedTensor("raw", (0, 4), "float16", {"value": torch.empty(0, 4, dtype=torch.float16)}, route="passthrough (float16)")
    return state


def reload_and_score(stack, run_dir):
    """Score a finished run's ``model.golf`` independently of the trainer.

    Reads the artifact through the stack's deserializer, rebuilds the model from the stack's hooks
    on CPU, loads the dequantized weights and scores the same validation tokens the trainer scored
    (``data.val_tokens_limit`` applied the same way). Returns the :class:`EvalResult`; its
    ``val_bpb`` must equal the report's ``post_quant.val_bpb``.
    """
    from pathlib import Path

    from golf_core.data import ByteTable, ensure_sample_dataset, find_shards, load_tokenizer, load_validation_tokens
    from golf_core.eval.scoring import evaluate
    from golf_core.testing import build_model

    cfg = stack.core
    model, _, ctx = build_model(stack)
    state = ctx.pm.hook.golf_deserialize(blob=(Path(run_dir) / "model.golf").read_bytes(), ctx=ctx)
    current = model.state_dict()
    model.load_state_dict({k: v.to(current[k].dtype) for k, v in state.dequantize().items()}, strict=True)
    if cfg.data.dataset != "sample":
        raise ValueError("reload_and_score reads the built-in sample corpus only (micro runs)")
    data_dir = ensure_sample_dataset(vocab_size=cfg.model.vocab_size)
    ctx.byte_table = ByteTable.from_sentencepiece(load_tokenizer(data_dir / "tokenizer.model"), cfg.model.vocab_size)
    seq_len = cfg.eval.seq_len or cfg.train.train_seq_len
    val = load_validation_tokens(find_shards(data_dir, "val"), seq_len)
    if cfg.data.val_tokens_limit > 0:
        keep = min(val.numel() - 1, cfg.data.val_tokens_limit) // seq_len * seq_len
        val = val[: keep + 1]
    return evaluate(model, val, ctx, seq_len=seq_len, batch_tokens=cfg.train.val_batch_tokens)
