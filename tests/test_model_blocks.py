"""The core block structure: one Block for every residual form, adapters, layouts, loss terms, warm-up variants."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golf_core import Technique, hookimpl
from golf_core.config import ModelConfig
from golf_core.errors import GolfError
from golf_core.model.gpt import GPT, AdapterSet
from golf_core.model.spec import ModelSpec
from golf_core.testing import run_micro

CFG = ModelConfig(vocab_size=128, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2)
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))


def make(seed: int = 0, **fields) -> GPT:
    spec = ModelSpec.from_config(CFG)
    for key, value in fields.items():
        setattr(spec, key, value)
    torch.manual_seed(seed)
    model = GPT(spec)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # move the zero-initialized projections so every sublayer matters
        for block in model.blocks:
            block.attn.proj.weight.normal_(0, 0.1, generator=g)
            block.mlp.proj.weight.normal_(0, 0.1, generator=g)
            block.resid_mix[1].uniform_(-0.5, 0.5, generator=g)
        model.skip_weights.uniform_(0.5, 1.5, generator=g)
    return model


def softcapped(model, h):
    logits = F.linear(h, model.tok_emb.weight)
    return model.logit_softcap * torch.tanh(logits / model.logit_softcap)


# ---- the baseline forward, written out -------------------------------------------------------------


def reference_baseline_logits(model, ids, encoder=None, decoder=None):
    """Baseline U-Net from the raw sublayer modules: x <- mix; x += s_a Attn(N x); x += s_m MLP(N x)."""
    n = model.spec.num_layers
    encoder, decoder = encoder or list(range(n // 2)), decoder or list(range(n // 2, n))
    order, n_enc = encoder + decoder, len(encoder)
    x = F.rms_norm(model.tok_emb(ids), (model.spec.model_dim,))
    x0, skips = x, []
    for pos, i in enumerate(order):
        b = model.blocks[i]
        if pos >= n_enc and skips:
            x = x + model.skip_weights[pos - n_enc] * skips.pop()
        x = b.resid_mix[0] * x + b.resid_mix[1] * x0
        x = x + b.attn_scale * b.attn(F.rms_norm(x, (x.size(-1),)))
        x = x + b.mlp_scale * b.mlp(F.rms_norm(x, (x.size(-1),)))
        if pos < n_enc:
            skips.append(x)
    return softcapped(model, F.rms_norm(x, (x.size(-1),)))


def test_baseline_forward_matches_the_written_out_unet():
    model = make()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_logits(IDS), reference_baseline_logits(model, IDS), rtol=1e-5, atol=1e-5)


# ---- adapters ----------------------------------------------------------------------------------------


class LoRA(nn.Module):
    def __init__(self, d_in, d_out, rank=3, seed=0, zero_b=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(rank, d_in, generator=g) * 0.2)
        self.B = nn.Parameter(torch.zeros(d_out, rank) if zero_b else torch.randn(d_out, rank, generator=g) * 0.2)

    def forward(self, x):
        return x @ self.A.T @ self.B.T

    def delta(self):
        return self.B @ self.A


SITE_MODULES = {  # site -> (module path in a block, d_in, d_out)
    "c_q": ("attn.c_q", 32, 32),
    "c_k": ("attn.c_k", 32, 16),
    "c_v": ("attn.c_v", 32, 16),
    "attn_proj": ("attn.proj", 32, 32),
    "mlp_fc": ("mlp.fc", 32, 64),
    "mlp_proj": ("mlp.proj", 64, 32),
}


def test_zero_adapters_leave_outputs_unchanged():
    model = make()
    slots = [{site: LoRA(d_in, d_out, zero_b=True) for site, (_, d_in, d_out) in SITE_MODULES.items()} for _ in range(4)]
    for slot in slots:
        slot["attn"] = LoRA(32, 32, zero_b=True)
        slot["mlp"] = LoRA(32, 32, zero_b=True)
    adapters = AdapterSet(slots, head=LoRA(32, 128, zero_b=True))
    with torch.no_grad():
        assert torch.equal(model.forward_logits(IDS), model.forward_logits(IDS, adapters))
        assert torch.equal(model(IDS, IDS), model(IDS, IDS, adapters))


@pytest.mark.parametrize("site", sorted(SITE_MODULES))
def test_projection_adapter_equals_merging_its_delta_into_the_weight(site):
    path, d_in, d_out = SITE_MODULES[site]
    model, merged = make(), make()
    lora = LoRA(d_in, d_out, seed=1)
    adapters = AdapterSet([{}, {site: lora}, {}, {}])
    with torch.no_grad():
        merged.blocks[1].get_submodule(path).weight.add_(lora.delta())
        torch.testing.assert_close(model.forward_logits(IDS, adapters), merged.forward_logits(IDS), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("site", ["attn", "mlp"])
def test_sublayer_adapter_adds_to_the_sublayer_output(site):
    model, hooked = make(), make()
    lora = LoRA(32, 32, seed=2)
    # Reference: a forward hook adds lora(sublayer input) to the sublayer's output.
    getattr(hooked.blocks[2], site).register_forward_hook(lambda m, args, out: out + lora(args[0]))
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_logits(IDS, AdapterSet([{}, {}, {site: lora}, {}])), hooked.forward_logits(IDS), rtol=1e-5, atol=1e-5
        )


def test_head_adapter_adds_to_raw_logits_before_the_softcap():
    model = make()
    head = LoRA(32, 128, seed=3)
    with torch.no_grad():
        h = model.hidden(IDS)
        raw = F.linear(h, model.tok_emb.weight) + head(h)
        expected = model.logit_softcap * torch.tanh(raw / model.logit_softcap)
        torch.testing.assert_close(model.forward_logits(IDS, AdapterSet([{}] * 4, head=head)), expected)
        loss = model(IDS, IDS, AdapterSet([{}] * 4, head=head))
        torch.testing.assert_close(loss, F.cross_entropy(expected.reshape(-1, 128), IDS.reshape(-1)))


def test_adapters_are_per_virtual_slot_and_checked_against_the_layout():
    spec_layouts = {"looped": ([0, 1, 2, 1], [2, 1, 2, 3])}
    model, merged = make(layouts=spec_layouts), make(layouts=spec_layouts)
    model.set_layout("looped")
    merged.set_layout("looped")
    assert model.num_slots() == 8 and model.slot_layers() == [0, 1, 2, 1, 2, 1, 2, 3]
    with pytest.raises(GolfError, match="8 blocks"):
        model.forward_logits(IDS, AdapterSet([{}] * 4))
    lora = LoRA(32, 32, seed=4)
    slots = [{} for _ in range(8)]
    slots[3] = {"c_q": lora}  # the second pass of block 1 only
    with torch.no_grad():
        out = model.forward_logits(IDS, AdapterSet(slots))
        # Reference: block 1 with the merged weight on its second pass, the plain weight elsewhere.
        plain_q = merged.blocks[1].attn.c_q.weight.clone()
        passes = []

        def swap(module, args):
            passes.append(1)
            module.weight.copy_(plain_q + lora.delta() if len(passes) == 2 else plain_q)

        merged.blocks[1].attn.c_q.register_forward_pre_hook(swap)
        torch.testing.assert_close(out, merged.forward_logits(IDS), rtol=1e-5, atol=1e-5)
        assert len(passes) == 3


def test_adapter_sites_are_validated():
    with pytest.raises(ValueError, match="unknown sites"):
        AdapterSet([{"q_proj": nn.Identity()}])


# ---- layouts ----------------------------------------------------------------------------------------


def test_layouts_switch_restore_and_size_the_skips():
    model = make(layouts={"looped": ([0, 1, 2, 1, 2], [1, 2, 3])})
    assert model.skip_weights.shape == (3, 32)  # max(min(2, 2), min(5, 3))
    with pytest.raises(GolfError, match="unknown layout"):
        model.set_layout("loop")
    with model.use_layout("looped"):
        assert model.encoder_indices == [0, 1, 2, 1, 2]
        with torch.no_grad():
            torch.testing.assert_close(
                model.forward_logits(IDS), reference_baseline_logits(model, IDS, [0, 1, 2, 1, 2], [1, 2, 3]), rtol=1e-5, atol=1e-5
            )
    assert model.active_layout == "" and model.decoder_indices == [2, 3]


def test_spec_check_reports_bad_layouts():
    spec = ModelSpec.from_config(CFG)
    spec.layouts["looped"] = ([0, 9], [1])
    spec.layouts[""] = ([0], [1])
    problems = spec.check()
    assert any("layout 'looped'" in p and "[9]" in p for p in problems)
    assert any("default layout" in p for p in problems)


def test_compiled_layout_switch_needs_no_new_graph_once_both_were_traced():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    model = make(layouts={"looped": ([0, 1, 2, 1], [2, 1, 2, 3])})
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    compiled(IDS, IDS)
    with model.use_layout("looped"):
        compiled(IDS, IDS)
    compiled(IDS, IDS)
    model.set_layout("looped")
    compiled(IDS, IDS)
    assert len(graphs) == 2
    compiled(IDS, IDS, AdapterSet([{"c_q": LoRA(32, 32)}] * 8, head=LoRA(32, 128)))  # adapters trace too
    assert len(graphs) == 3


# ---- norm scale, skip gates, lanes, loss terms ---------------------------------------------------------


def test_norm_scale_of_one_traces_no_multiply_and_other_values_scale_the_inputs():
    base = make(seed=1)
    ones = make(seed=1, norm_scale=lambda i: 1.0)
    with torch.no_grad():
        assert torch.equal(base.forward_logits(IDS), ones.forward_logits(IDS))
    scaled = make(seed=1, norm_scale=lambda i: 0.5 * (i + 1))
    seen = {}
    scaled.blocks[2].attn.register_forward_pre_hook(lambda m, a: seen.__setitem__("attn", a[0]))
    scaled.blocks[2].mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("mlp", a[0]))
    with torch.no_grad():
        scaled.forward_logits(IDS)
    for key in ("attn", "mlp"):
        rms = seen[key].pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.full_like(rms, 1.5), rtol=1e-4, atol=0)


class MeanGate(nn.Module):
    def forward(self, x, scaled_skip, k):
        return 0.5 * (x + scaled_skip) + k


def test_skip_gates_module_replaces_the_skip_sum():
    model = make(skip_gates=lambda spec, n: MeanGate())
    x, skip = torch.randn(1, 2, 32), torch.randn(1, 2, 32)
    torch.testing.assert_close(model.merge_skip(1, x, skip), 0.5 * (x + model.skip_weights[1] * skip) + 1)


class ParallelFrom(nn.Module):
    """A test lanes module: single-stream GPT-J form from ``start`` on (no split)."""

    splits = False

    def __init__(self, start):
        super().__init__()
        self.start = start

    def claims(self, i, encoder):
        return i >= self.start

    def forward(self, block, i, stream, x0, skip, merge_skip, adapters):
        x = merge_skip(stream, skip) if skip is not None else stream
        x_in = block.mix(x, x0)
        return x_in + block.attn_branch(x_in, adapters) + block.mlp_branch(x_in, adapters)


class SplitFrom(ParallelFrom):
    splits = True

    def forward(self, block, i, stream, x0, skip, merge_skip, adapters):
        lane0, lane1 = stream if isinstance(stream, tuple) else (stream, stream)
        return lane0 + block.attn_branch(block.mix(lane0, x0), adapters), lane1 + block.mlp_branch(lane1, adapters)

    def readout(self, stream):
        return stream[0] - stream[1]


def test_lanes_modules_run_the_same_block_code_with_adapters():
    model, merged = make(residual_lanes=lambda spec: ParallelFrom(2)), make(residual_lanes=lambda spec: ParallelFrom(2))
    lora = LoRA(32, 16, seed=5)
    with torch.no_grad():
        merged.blocks[3].attn.c_v.weight.add_(lora.delta())
        out = model.forward_logits(IDS, AdapterSet([{}, {}, {}, {"c_v": lora}]))
        torch.testing.assert_close(out, merged.forward_logits(IDS), rtol=1e-5, atol=1e-5)
        # and the GPT-J arithmetic itself, written out
        x = F.rms_norm(model.tok_emb(IDS), (32,))
        x0 = x
        b0, b1, b2, b3 = model.blocks
        x1 = b0(x, x0)
        x2 = b1(x1, x0)
        xi = b2.mix(x2 + model.skip_weights[0] * x2, x0)
        x3 = xi + b2.attn_branch(xi) + b2.mlp_branch(xi)
        xi = b3.mix(x3 + model.skip_weights[1] * x1, x0)
        x4 = xi + b3.attn_branch(xi) + b3.mlp_branch(xi)
        torch.testing.assert_close(model.forward_logits(IDS), softcapped(model, F.rms_norm(x4, (32,))), rtol=1e-5, atol=1e-5)


def test_split_lanes_are_read_out_and_may_not_reach_an_unclaimed_block():
    model = make(residual_lanes=lambda spec: SplitFrom(3))
    seen = []
    model.lanes.readout = lambda stream: seen.append(stream) or stream[0] - stream[1]
    with torch.no_grad():
        model.forward_logits(IDS)
    assert len(seen) == 1 and isinstance(seen[0], tuple)
    with pytest.raises(GolfError, match="split the stream at block 2"):
        make(residual_lanes=lambda spec: SplitFrom(2), layouts={"looped": ([0, 1, 2], [1, 2, 3])})


class ConstantTerm(nn.Module):
    def __init__(self):
        super().__init__()
        self.noise = nn.Linear(3, 3)  # consumes the RNG: must not change the model's init

    def forward(self, h, target_ids):
        return h.float().pow(2).mean() * 0 + 2.5


def test_loss_terms_are_training_only_and_do_not_shift_the_init():
    base = make(seed=7)
    with_term = make(seed=7, loss_terms=[lambda spec: ConstantTerm()])
    assert torch.equal(base.tok_emb.weight, with_term.tok_emb.weight)
    base.train()
    with_term.train()
    torch.testing.assert_close(with_term(IDS, IDS), base(IDS, IDS) + 2.5)
    base.eval()
    with_term.eval()
    with torch.no_grad():
        assert torch.equal(with_term(IDS, IDS), base(IDS, IDS))


# ---- the trainer's compile warm-up runs every registered variant ----------------------------------------


class VariantProbe(Technique):
    name = "variant_probe"
    stage = "model"

    def __init__(self):
        super().__init__()
        self.events = []

    @contextmanager
    def _variant(self, model):
        self.events.append(("enter", model.active_layout))
        model.set_layout("probe")
        try:
            yield
        finally:
            model.set_layout("")
            self.events.append(("exit", None))

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        spec.layouts["probe"] = ([0], [1, 0])
        spec.warmup_variants["probe"] = self._variant

    @hookimpl
    def golf_after_optimizer_step(self, step, model, optimizer, ctx):
        self.events.append(("step", model.active_layout))


def test_compile_warmup_runs_each_variant_then_restores(tmp_path):
    probe = VariantProbe()
    report = run_micro(tmp_path, overrides=["train.compile_warmup_steps=2"], extra_plugins=[probe])
    assert probe.events[:2] == [("enter", ""), ("exit", None)]
    assert probe.events[2:] == [("step", "")] * 3  # training runs the default layout
    log = (Path(tmp_path) / "run" / "train.log").read_text()
    assert "compile_warmup: 2 steps x (plain + probe)" in log
    assert math.isfinite(report["val_bpb"])
