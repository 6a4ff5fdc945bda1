"""One behaviour test per hook (``test_hook_<name>``): a throwaway technique implements the hook and
the test checks that its effect reaches the run.

Two micro runs are shared by most tests: one with :class:`Recorder` (every "every plugin" hook,
plus replacements of the loader, loss, orthogonalizer and schedule that change nothing but count
their use, plus wrappers around quantize and deserialize), one with :class:`Replacer` (its own
model builder, optimizer, quantizer and serializer).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import technique_source
from torch import nn

from golf_core import GolfError, Technique, hookimpl
from golf_core.data import DistributedTokenLoader
from golf_core.eval.adapters import EvalAdapter
from golf_core.eval.ledger import LegalityError
from golf_core.model.gpt import GPT, softcapped_cross_entropy
from golf_core.model.spec import ModelSpec
from golf_core.optim.bundle import OptimizerBundle
from golf_core.optim.newton_schulz import newton_schulz5
from golf_core.quant.artifact import pack_state, split_tag, tag_blob, unpack_state
from golf_core.quant.state import QuantizedTensor, QuantState
from golf_core.testing import micro_stack, run_micro

HEADER_LINE = "recorder: header line 7f3a"
WARMUP_STEPS = 2
ITERATIONS = 3
RECORDER_OVERRIDES = [
    f"train.compile_warmup_steps={WARMUP_STEPS}",
    f"train.iterations={ITERATIONS}",
    "train.val_batch_tokens=512",  # 2048 val tokens in 4 chunks of 4 x 128
]


class EmbedGain(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x, input_ids):
        return x * self.gain.to(x.dtype)


class GainNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.size(-1),)) * self.gain.to(x.dtype)


class CountingLoader:
    def __init__(self, inner, counts: Counter) -> None:
        self.inner = inner
        self.counts = counts

    def next_batch(self, global_tokens, seq_len, grad_accum_steps):
        self.counts["batches"] += 1
        return self.inner.next_batch(global_tokens, seq_len, grad_accum_steps)


class RecordingAdapter(EvalAdapter):
    """Sees the distribution (unchanged) and learns; records what it was given, and when."""

    name = "recording"
    changes_distribution = True
    learns = True

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.learned: list[torch.Tensor] = []  # target indices handed to learn()

    def begin(self, session) -> None:
        self.events.append(("begin", session.stream.num_targets))

    def adjust_logprobs(self, logprobs, batch, stream):
        learned = torch.cat(self.learned) if self.learned else torch.zeros(0, dtype=torch.int64)
        self.events.append(("score", batch.targets.clone(), learned))
        return logprobs

    def learn(self, scored) -> None:
        if scored.targets is None:
            return
        targets = scored.targets.clone()
        lo, hi = int(targets.min()), int(targets.max()) + 1
        # Tokens of the targets just scored are available ...
        tokens = scored.stream.scored_tokens(lo, hi, self.name)
        # ... one target further, not yet scored, is refused (C3).
        refused = None
        if hi < scored.stream.num_targets:
            try:
                scored.stream.scored_tokens(hi, hi + 1, self.name)
            except LegalityError as err:
                refused = str(err)
        self.events.append(("learn", targets, scored.target_tokens.clone(), tokens.clone(), refused))
        self.learned.append(targets)

    def end(self) -> dict:
        self.events.append(("end",))
        return {"chunks_learned": len(self.learned)}


class Recorder(Technique):
    """Records every hook call of a run (test only)."""

    name = "recorder"
    stage = "model"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.counts: Counter = Counter()
        self.steps: list[int] = []
        self.lrs: list[list[tuple[float, float]]] = []
        self.ortho_shapes: list[tuple[int, ...]] = []

    @hookimpl
    def golf_configure(self, ctx):
        self.events.append("configure")
        self.configure_saw_tokenizer = ctx.tokenizer is not None

    @hookimpl
    def golf_report_header(self, ctx):
        self.events.append("report_header")
        return [HEADER_LINE]

    @hookimpl
    def golf_loss_fn(self, ctx):
        self.events.append("loss_fn")

        def loss(logits, targets, softcap):
            self.counts["loss"] += 1
            return softcapped_cross_entropy(logits, targets, softcap)

        self.loss = loss
        return loss

    @hookimpl
    def golf_model_spec(self, spec, ctx):
        self.events.append("model_spec")
        spec.rope_dims = 8
        spec.embed_transforms.append(lambda spec: EmbedGain(spec.model_dim))
        self.spec_loss_fn = spec.loss_fn

    @hookimpl
    def golf_patch_model(self, model, ctx):
        self.events.append("patch_model")
        model.final_norm = GainNorm(model.spec.model_dim)
        self.model = model

    @hookimpl
    def golf_orthogonalizer(self, ctx):
        self.events.append("orthogonalizer")

        def orthogonalize(G, steps):
            self.ortho_shapes.append(tuple(G.shape))
            return newton_schulz5(G, steps)

        return orthogonalize

    @hookimpl
    def golf_lr_schedule(self, ctx):
        self.events.append("lr_schedule")
        return lambda progress: 0.5

    @hookimpl
    def golf_data_loader(self, ctx):
        self.events.append("data_loader")
        self.counts["loaders"] += 1
        return CountingLoader(DistributedTokenLoader(ctx.train_files, ctx.rank, ctx.world_size, ctx.device), self.counts)

    @hookimpl
    def golf_after_optimizer_step(self, step, model, optimizer, ctx):
        self.steps.append(step)
        self.lrs.append([(g["lr"], g["base_lr"]) for g in optimizer.param_groups()])

    @hookimpl
    def golf_train_end(self, model, ctx):
        self.events.append("train_end")
        self.gain_at_end = model.final_norm.gain.detach().clone()
        self.embed_gain_at_end = model.embed_transforms[0].gain.detach().clone()

    @hookimpl(wrapper=True)
    def golf_quantize(self, model, calib, ctx):
        self.events.append("quantize")
        return (yield)

    @hookimpl
    def golf_refine_quant(self, qstate, model, calib, ctx):
        self.events.append("refine_quant")
        qstate.meta["recorder"] = "refined"
        self.calib_batch = next(iter(calib.batches(1)))

    @hookimpl(wrapper=True)
    def golf_deserialize(self, blob, ctx):
        self.events.append("deserialize")
        state = yield
        self.deserialized_meta = dict(state.meta)
        return state

    @hookimpl
    def golf_eval_adapters(self, model, ctx):
        self.events.append("eval_adapters")
        self.adapter = RecordingAdapter()
        return self.adapter


class CountingSGD(torch.optim.SGD):
    def __init__(self, params, lr) -> None:
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


class Replacer(Technique):
    """Replaces the model builder, the optimizer, the quantizer and the serializer (test only)."""

    name = "replacer"
    stage = "quant"
    TAG = "lossless-test"

    def __init__(self) -> None:
        super().__init__()
        self.deserialized = 0

    @hookimpl
    def golf_build_model(self, spec, ctx):
        self.built_spec = dataclasses.replace(spec, num_layers=1)
        self.model = GPT(self.built_spec)
        return self.model

    @hookimpl
    def golf_build_optimizer(self, model, ctx):
        self.optimizer = CountingSGD(model.parameters(), lr=0.01)
        return OptimizerBundle([self.optimizer])

    @hookimpl
    def golf_quantize(self, model, calib, ctx):
        state = QuantState(meta={"format": "lossless"})
        for name, t in model.state_dict().items():
            value = t.detach().cpu().float().clone()
            state.entries[name] = QuantizedTensor("raw", tuple(t.shape), "float32", {"value": value}, route="fp32 lossless")
        self.qstate = state
        return state

    @hookimpl
    def golf_serialize(self, qstate, ctx):
        self.blob = tag_blob(self.TAG, pack_state(qstate))
        return self.blob

    @hookimpl
    def golf_deserialize(self, blob, ctx):
        tag, body = split_tag(blob)
        if tag != self.TAG:
            return None
        self.deserialized += 1
        return unpack_state(body)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recorded")
    recorder = Recorder()
    report = run_micro(tmp, overrides=RECORDER_OVERRIDES, extra_plugins=[recorder])
    return recorder, report, Path(report["run_dir"])


@pytest.fixture(scope="module")
def replaced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replaced")
    replacer = Replacer()
    report = run_micro(tmp, extra_plugins=[replacer])
    return replacer, report, Path(report["run_dir"])


def test_hook_configure(recorded, tmp_path: Path) -> None:
    recorder, _, _ = recorded
    assert recorder.events[0] == "configure" and recorder.events.count("configure") == 1
    assert recorder.configure_saw_tokenizer

    class Refuse(Technique):
        """Refuses every run."""

        name = "refuse"
        stage = "model"

        @hookimpl
        def golf_configure(self, ctx):
            raise GolfError("refuse: this technique refuses the run")

        @hookimpl
        def golf_model_spec(self, spec, ctx):
            raise AssertionError("the run went on after configure refused it")

    with pytest.raises(GolfError, match="refuses the run"):
        run_micro(tmp_path, extra_plugins=[Refuse()])
    assert not (tmp_path / "run" / "report.json").exists()
    assert not (tmp_path / "run" / "model.golf").exists()


def test_hook_report_header(recorded) -> None:
    recorder, _, run_dir = recorded
    assert recorder.events[1] == "report_header"
    log = (run_dir / "train.log").read_text()
    assert HEADER_LINE in log
    # A header line: after the resolved stack, before the model is built.
    assert log.index("resolved stack:") < log.index(HEADER_LINE) < log.index("model_params:")


def test_hook_register_commands(make_plugins_dir) -> None:
    from cli import cli

    body = """
    @hookimpl
    def golf_register_commands(self, cli):
        @cli.command("hello")
        @click.option("--who", default="world")
        def hello(who):
            \"\"\"Say hello (added by a plugin).\"\"\"
            click.echo(f"hello {who} from {self.name} level {self.params.level}")
    """
    plugins = make_plugins_dir({"greeter.py": technique_source("greeter", body, params='level: int = param(7, "a level")')})
    runner = CliRunner()
    result = runner.invoke(cli, ["--plugins-dir", str(plugins), "hello", "--who", "golfer"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello golfer from greeter level 7"  # default Params
    help_result = runner.invoke(cli, ["--plugins-dir", str(plugins), "--help"])
    assert help_result.exit_code == 0 and "hello" in help_result.output
    # Without the plugin the command is gone again.
    gone = runner.invoke(cli, ["hello"])
    assert gone.exit_code == 2 and "No such command" in gone.output

    clash = """
    @hookimpl
    def golf_register_commands(self, cli):
        @cli.command("train")
        def train():
            pass
    """
    bad = make_plugins_dir({"clash.py": technique_source("clash", clash)})
    result = runner.invoke(cli, ["--plugins-dir", str(bad), "list"])
    assert result.exit_code == 2 and "replaced golf's own 'train' command" in result.stderr
    assert runner.invoke(cli, ["train", "--help"]).exit_code == 0  # the real one survived


def test_hook_data_loader(recorded) -> None:
    recorder, report, _ = recorded
    # warm-up, training, and the calibration batch drawn in refine_quant
    assert recorder.counts["loaders"] == 3
    assert recorder.counts["batches"] == WARMUP_STEPS + ITERATIONS + 1
    assert report["steps"] == ITERATIONS


def test_hook_model_spec(recorded) -> None:
    recorder, report, _ = recorded
    model = recorder.model
    assert model.blocks[0].attn.rotary.inv_freq.numel() == 4  # rope_dims = 8 reached the model
    assert isinstance(model.embed_transforms[0], EmbedGain)
    assert "embed_transforms.0.gain" in {r["name"] for r in report["artifact"]["routes"]}
    assert not torch.equal(recorder.embed_gain_at_end, torch.ones_like(recorder.embed_gain_at_end))  # trained


def test_hook_build_model(replaced) -> None:
    replacer, report, _ = replaced
    assert replacer.built_spec.num_layers == 1 and len(replacer.model.blocks) == 1
    expected = sum(p.numel() for p in GPT(replacer.built_spec).parameters())
    assert report["model_params"] == expected
    default = micro_stack()
    assert expected < sum(p.numel() for p in GPT(ModelSpec.from_config(default.core.model)).parameters())


def test_hook_patch_model(recorded) -> None:
    recorder, _, _ = recorded
    assert isinstance(recorder.model.final_norm, GainNorm)
    # Added before the optimizer was built, so it was trained.
    assert not torch.equal(recorder.gain_at_end, torch.ones_like(recorder.gain_at_end))


def test_hook_loss_fn(recorded) -> None:
    recorder, _, _ = recorded
    assert recorder.spec_loss_fn is recorder.loss and recorder.model.loss_fn is recorder.loss
    assert recorder.counts["loss"] == WARMUP_STEPS + ITERATIONS  # training forwards only; scoring is eager


def test_hook_orthogonalizer(recorded) -> None:
    recorder, _, _ = recorded
    matrices = [p for n, p in recorder.model.named_parameters() if n.startswith("blocks.") and p.ndim == 2 and "resid_mix" not in n]
    assert len(matrices) == 12
    assert len(recorder.ortho_shapes) == len(matrices) * (WARMUP_STEPS + ITERATIONS)
    assert sorted(set(recorder.ortho_shapes)) == sorted({tuple(p.shape) for p in matrices})


def test_hook_build_optimizer(replaced) -> None:
    replacer, report, _ = replaced
    assert replacer.optimizer.steps == report["steps"] == 3
    assert all(g["base_lr"] == 0.01 for g in replacer.optimizer.param_groups)


def test_hook_lr_schedule(recorded) -> None:
    recorder, _, _ = recorded
    assert len(recorder.lrs) == ITERATIONS
    for groups in recorder.lrs:
        assert groups and all(lr == pytest.approx(0.5 * base) for lr, base in groups)


def test_hook_after_optimizer_step(recorded) -> None:
    recorder, _, _ = recorded
    # Once per training step, increasing, never during the compile warm-up.
    assert recorder.steps == list(range(1, ITERATIONS + 1))


def test_hook_train_end(recorded) -> None:
    recorder, _, _ = recorded
    events = recorder.events
    assert events.count("train_end") == 1
    assert events.index("data_loader") < events.index("train_end") < events.index("quantize")


def test_hook_quantize(replaced, recorded) -> None:
    replacer, report, _ = replaced
    assert {e.route for e in replacer.qstate.entries.values()} == {"fp32 lossless"}
    # The lossless quantizer's state was the one reloaded: the reloaded model scores exactly as before.
    assert report["post_quant"]["val_bpb"] == report["pre_quant"]["val_bpb"]
    # A wrapper around the default quantizer sees it run after train_end.
    recorder, _, _ = recorded
    assert recorder.events.index("train_end") < recorder.events.index("quantize") < recorder.events.index("refine_quant")


def test_hook_refine_quant(recorded) -> None:
    recorder, _, _ = recorded
    assert recorder.events.index("quantize") < recorder.events.index("refine_quant") < recorder.events.index("deserialize")
    # The edit made in place survived serialize -> artifact -> deserialize.
    assert recorder.deserialized_meta.get("recorder") == "refined"
    x, y = recorder.calib_batch  # calibration reads training batches
    assert x.dtype == torch.int64 and x.shape == y.shape and torch.equal(x[:, 1:], y[:, :-1])


def test_hook_serialize(replaced) -> None:
    replacer, report, run_dir = replaced
    stored = (run_dir / "model.golf").read_bytes()
    assert stored == replacer.blob and stored.startswith(b"GOLF:lossless-test\n")
    assert report["artifact"]["model_bytes"] == len(replacer.blob)
    assert report["artifact"]["total_bytes"] == len(replacer.blob) + report["artifact"]["code_bytes"]


def test_hook_deserialize(replaced) -> None:
    replacer, _, run_dir = replaced
    assert replacer.deserialized == 1  # the reload used it
    assert replacer.golf_deserialize(tag_blob("brotli", b"whatever"), None) is None  # not its format
    back = replacer.golf_deserialize((run_dir / "model.golf").read_bytes(), None)
    assert back.entries.keys() == replacer.qstate.entries.keys()
    for name, qt in replacer.qstate.entries.items():
        assert torch.equal(back.entries[name].tensors["value"], qt.tensors["value"])


def test_hook_eval_adapters(recorded) -> None:
    recorder, report, _ = recorded
    events = recorder.adapter.events
    assert events[0] == ("begin", 2048) and events[-1] == ("end",)
    body = events[1:-1]
    assert len(body) == 8  # 2048 targets in 4 batches of 4 x 128: score, then learn, each
    seen = torch.zeros(0, dtype=torch.int64)
    for i in range(0, len(body), 2):
        (kind_s, scored_targets, learned_before), (kind_l, targets, target_tokens, tokens, refused) = body[i], body[i + 1]
        assert (kind_s, kind_l) == ("score", "learn")
        # While a batch is scored, the adapter has learned exactly the batches before it ...
        assert torch.equal(learned_before, seen)
        # ... and learn() gets exactly the targets just scored, with their tokens revealed.
        assert torch.equal(targets, scored_targets)
        lo = int(targets.min())
        assert torch.equal(tokens[targets - lo + 1], target_tokens)
        if int(targets.max()) + 1 < 2048:
            assert refused and "C3 violated" in refused  # the next, unscored target is refused
        seen = torch.cat([seen, targets])
    assert torch.equal(seen.sort().values, torch.arange(2048))  # every target scored once, in one pass
    assert report["adapted"]["adapters"]["recording"] == {"chunks_learned": 4}
    assert report["adapted"]["val_bpb"] == pytest.approx(report["post_quant"]["val_bpb"], rel=1e-6)  # unchanged
    assert report["val_bpb"] == report["adapted"]["val_bpb"]
