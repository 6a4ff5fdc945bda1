"""The shipped PR stacks: import parity with the record logs, parameter counts, legality, lineage, reproduce.

The records live in ../shared/records (README, submission.json, one training log each); tests
that read them skip with a reason where that folder is absent. PR #1736's record is read from the
openai/parameter-golf mirror when this machine has it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli
from golf_core.check import build_for_estimate, check_stack
from golf_core.importer import import_record, parse_train_losses, resolve_tables
from golf_core.reproduce import summarize
from golf_core.stack import resolve
from golf_core.stackdiff import diff
from golf_core.testing import MICRO_OVERRIDES, catalog

REPO = Path(__file__).resolve().parents[1]
STACKS = REPO / "stacks"
RECORDS = REPO.parent / "shared" / "records"
MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")
PR1736_DIR = "records/track_10min_16mb/2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT"

needs_records = pytest.mark.skipif(not RECORDS.is_dir(), reason=f"record logs not present at {RECORDS}")

# name -> (log, parent the import needs: None for a complete Hyperparameters dump)
RECORD_LOGS = {
    "pr1493": ("pr1493/train_seed42.log", None),
    "pr1487": ("pr1487/train_seed42.log", None),
    "pr1787": ("pr1787/train_seed42.log", None),
    "pr1855": ("pr1855/train_seed42.log", None),
    # PR #1430's log prints only the run's env overrides ("Extra args:"), applied to its ancestor's script
    "pr1430": ("pr1430/train_seed42.log", "pr1019.toml"),
}

# Parameters golf builds, and what the record's log printed (model_params). Where they differ the
# stack file explains why (a hard-wired part of the record script with no golf technique).
PARAMS = {
    "pr1493": (35_944_536, 35_944_536),
    "pr1487": (37_024_860, 37_022_812),  # golf's looped U-Net keeps 7 skips (+ gates), the #1334 lineage 5
    "pr1736": (35_989_658, 35_989_658),
    "pr1787": (35_945_658, 35_945_658),
    "pr1797": (35_945_671, None),  # no record log; PR #1851 (#1797 + BOS fix) printed 35,945,671
    "pr1855": (35_945_671, 35_945_671),
    "pr1019": (27_066_972, 27_067_484),  # static per-dimension SmearGate (512) has no golf technique
    "pr1430": (28_115_548, 28_116_060),  # same SmearGate gap, plus 2 MTP heads
}


def shipped(name: str):
    return resolve(STACKS / f"{name}.toml", catalog())


def imported(log: Path, parent: str | None):
    result = import_record([log], catalog(), parent=STACKS / parent if parent else None)
    return result, resolve_tables(result.tables, catalog(), result.parent)


@needs_records
@pytest.mark.parametrize("name", sorted(RECORD_LOGS))
def test_importing_the_log_gives_the_shipped_stack(name: str) -> None:
    log, parent = RECORD_LOGS[name]
    result, stack = imported(RECORDS / log, parent)
    d = diff(stack, shipped(name), catalog=catalog())
    assert d.empty, f"{name}: import of {log} differs from stacks/{name}.toml:\n{d.format()}"
    assert not result.disagreements  # README run command and log agree
    # every setting of the log has a row: nothing falls through unnamed
    assert not [n.setting for n in result.notes if "no mapping row" in n.message]


def test_pr1736_import_from_the_mirror(tmp_path: Path) -> None:
    if not (MIRROR / "HEAD").exists() and not (MIRROR / ".git").exists():
        pytest.skip(f"openai/parameter-golf mirror not present at {MIRROR}")
    for name in ("README.md", "submission.json", "train_seed42.log"):
        blob = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{PR1736_DIR}/{name}"], capture_output=True, check=False)
        if blob.returncode != 0:
            pytest.skip(f"{PR1736_DIR}/{name} not in the mirror")
        (tmp_path / name).write_bytes(blob.stdout)
    _, stack = imported(tmp_path / "train_seed42.log", None)
    d = diff(stack, shipped("pr1736"), catalog=catalog())
    assert d.empty, d.format()


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name: str) -> None:
    golf_count, log_count = PARAMS[name]
    model, _, _ = build_for_estimate(shipped(name), catalog())
    assert sum(p.numel() for p in model.parameters()) == golf_count
    text = (STACKS / f"{name}.toml").read_text()
    if log_count is not None and log_count != golf_count:
        # the stack file states the gap and its size
        assert f"{log_count:,}" in text and f"{golf_count:,}" in text


@needs_records
@pytest.mark.parametrize("name", ["pr1493", "pr1487", "pr1787", "pr1855"])
def test_log_model_params_line_matches_the_table(name: str) -> None:
    text = (RECORDS / name / "train_seed42.log").read_text()
    assert f"model_params:{PARAMS[name][1]}" in text


def test_lineage_and_provenance() -> None:
    chain = [p.name for p in shipped("pr1855").chain]
    assert chain == ["pr1736.toml", "pr1787.toml", "pr1797.toml", "pr1855.toml"]
    assert [p.name for p in shipped("pr1430").chain] == ["pr1019.toml", "pr1430.toml"]
    reported = {  # (author, val_bpb, val_bpb_std, seeds) from each record's README / submission.json
        "pr1493": ("bigbag", 1.0810, 0.0002, [42, 314, 999]),
        "pr1487": ("ndokutovich", 1.06004785, 0.00022, [42, 1337, 2024]),
        "pr1787": ("nprime06", 1.06335, 0.00054, [42, 0, 1234]),
        "pr1855": ("codemath3000", 1.06107587, 0.0009, [42, 0, 1234]),
        "pr1430": ("renqianluo", 0.3964236, None, [1337, 42, 314]),
    }
    for name, (author, bpb, std, seeds) in reported.items():
        stack = shipped(name)
        prov = stack.meta["provenance"]
        assert prov["pr"] == int(name[2:]) and prov["author"] == author and isinstance(prov["based_on"], list) and prov["based_on"]
        assert prov["expect"]["val_bpb"] == pytest.approx(bpb) and prov["expect"]["artifact_bytes_max"] < 16_000_000
        if std is not None:
            assert prov["expect"]["val_bpb_std"] == pytest.approx(std)
        assert stack.core.run.seeds == seeds


def test_reviewer_diff_of_the_top_record_against_its_grandparent() -> None:
    d = diff(shipped("pr1787"), shipped("pr1855"), catalog=catalog())
    assert set(d.added) == {"smear_gate", "lqer", "pergroup_compress"} and set(d.removed) == {"byteshuffle_brotli"}
    assert d.changed["sparse_attn_gate"] == {"scale": (1.0, 0.5)}
    assert d.changed["gptq"] == {"mlp_clip_sigmas": (12.0, 11.5), "embed_clip_sigmas": (15.0, 14.0)}
    assert d.changed["muon"] == {"beta2": (0.95, 0.99)} and d.changed["warmdown"] == {"warmdown_frac": (0.75, 0.85)}
    assert d.added["smear_gate"]["mask_bos"] is True and not d.core


def test_golf_check_legality() -> None:
    names = set(catalog().names())
    for name in ("pr1493", "pr1787", "pr1855"):
        report = check_stack(shipped(name), catalog())
        assert report["legality"]["compliant"], f"{name}: {report['legality']['broken']}"
    out = CliRunner().invoke(cli, ["check", str(STACKS / "pr1855.toml")])
    assert out.exit_code == 0 and "COMPLIANT" in out.output and "NON-COMPLIANT" not in out.output
    # pr1487 breaks score-before-update through pre-quant TTT; pr1430 through SLOT (C1) and its
    # n-gram mixer, which blends only the target's probability (C2).
    flagged = {"pr1487": ("prequant_ttt",), "pr1430": ("slot", "ngram_mixer")}
    waiting = []
    for name, techniques in flagged.items():
        present = [t for t in techniques if t in names]
        if not present:
            waiting.append(name)
            assert techniques[0] in (STACKS / f"{name}.toml").read_text()  # the stack says what it waits for
            continue
        report = check_stack(shipped(name), catalog())
        broken = {b["technique"] for b in report["legality"]["broken"]}
        assert not report["legality"]["compliant"] and broken & set(present), f"{name} should be flagged through {present}"
        out = CliRunner().invoke(cli, ["check", str(STACKS / f"{name}.toml")])
        assert "NON-COMPLIANT" in out.output
    if waiting:
        pytest.skip(f"{', '.join(waiting)}: the technique that breaks the rules is not in the catalog yet")


def test_auto_parent_follows_the_lineage() -> None:
    if not RECORDS.is_dir():
        pytest.skip(f"record logs not present at {RECORDS}")
    top = import_record([RECORDS / "pr1855" / "train_seed42.log"], catalog(), parent="auto", stacks_dir=STACKS, exclude=[STACKS / "pr1855.toml"])
    assert top.parent.name == "pr1797.toml"
    slot = import_record([RECORDS / "pr1430" / "train_seed42.log"], catalog(), parent="auto", stacks_dir=STACKS, exclude=[STACKS / "pr1430.toml"])
    assert slot.parent.name == "pr1019.toml"


@needs_records
def test_train_loss_reader_on_both_log_formats() -> None:
    losses = parse_train_losses((RECORDS / "pr1855" / "train_seed42.log").read_text())
    assert losses[1] == 9.0087 and losses[4500] == 2.2771
    old = parse_train_losses((RECORDS / "pr1430" / "train_seed42.log").read_text())
    assert old[1] == 7.6225 and old[6500] == 2.7416


# ---------------------------------------------------------------------------------------------
# golf reproduce
# ---------------------------------------------------------------------------------------------


def test_summarize_verdicts() -> None:
    rows = [{"seed": s, "val_bpb": v, "artifact_bytes": b, "within_budget": True} for s, v, b in
            [(42, 1.0600, 15_900_000), (0, 1.0620, 15_950_000)]]
    s = summarize(rows, {"val_bpb": 1.0611, "val_bpb_std": 0.0009, "artifact_bytes_max": 15_907_550}, tolerance=0.003)
    assert s["got"]["val_bpb"] == pytest.approx(1.061) and s["got"]["val_bpb_std"] == pytest.approx(0.0014142, rel=1e-4)
    assert s["checks"]["val_bpb"]["ok"] and s["checks"]["artifact_bytes_max"]["ok"] and s["reproduced"]
    far = summarize(rows, {"val_bpb": 1.0700}, tolerance=0.003)
    assert not far["checks"]["val_bpb"]["ok"] and not far["reproduced"]
    reduced = summarize(rows, {"val_bpb": 1.0611}, comparable=False)
    assert not reduced["reproduced"]


def test_reproduce_micro_on_cpu(tmp_path: Path) -> None:
    stack = tmp_path / "micro.toml"
    stack.write_text(
        f'extends = "{(STACKS / "tiny.toml").as_posix()}"\nschema = 1\n[stack]\nname = "micro"\n'
        "[provenance]\npr = 1\nexpect = { val_bpb = 3.5, val_bpb_std = 0.01, artifact_bytes_max = 300000 }\n"
        "[run]\nseeds = [7, 8]\n"
    )
    args = ["reproduce", str(stack), "--out", str(tmp_path / "out")]
    for o in MICRO_OVERRIDES:
        args += ["--set", o]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "reproduce.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [7, 8] and summary["seeds"] == [7, 8]
    bpbs = [r["val_bpb"] for r in summary["runs"]]
    assert bpbs[0] != bpbs[1]  # the seed reached the run
    assert summary["got"]["val_bpb"] == pytest.approx(sum(bpbs) / 2)
    assert not summary["comparable"] and not summary["reproduced"]
    assert "val_bpb mean" in result.output and "not comparable" in result.output
    assert summary["checks"]["val_bpb"]["delta"] == pytest.approx(summary["got"]["val_bpb"] - 3.5)


# ---------------------------------------------------------------------------------------------
# bench/pr_parity.py: the FA3 stand-in and the reference log reader (the GPU run is the bench's)
# ---------------------------------------------------------------------------------------------


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pr_parity", REPO / "bench" / "pr_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fa3_shim_matches_per_document_attention() -> None:
    import torch
    import torch.nn.functional as F

    namespace: dict = {}
    exec(_bench().SHIM, namespace)
    varlen, dense = namespace["flash_attn_varlen_func"], namespace["flash_attn_func"]
    torch.manual_seed(0)
    total, h, hkv, d = 37, 4, 2, 8
    q, k, v = torch.randn(total, h, d), torch.randn(total, hkv, d), torch.randn(total, hkv, d)
    cu = torch.tensor([0, 10, 11, 30, 37, 37, 37], dtype=torch.int32)  # padded with empty segments, as the records do
    out = varlen(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=19, max_seqlen_k=19, causal=True)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if b == a:
            continue
        qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))
        ks, vs = ks.repeat_interleave(h // hkv, 0), vs.repeat_interleave(h // hkv, 0)
        expect = F.softmax((qs @ ks.transpose(-1, -2)) / d**0.5 + torch.full((b - a, b - a), float("-inf")).triu(1), -1) @ vs
        torch.testing.assert_close(out[a:b], expect.transpose(0, 1), rtol=1e-5, atol=1e-5)
    # the dense form: [B, T, H, D], causal
    qb, kb, vb = q[None, :12], k[None, :12], v[None, :12]
    torch.testing.assert_close(dense(qb, kb, vb, causal=True)[0], varlen(q[:12], k[:12], v[:12], torch.tensor([0, 12]), torch.tensor([0, 12]), 12, 12, causal=True))


@needs_records
def test_reference_log_reader() -> None:
    parse = _bench().parse_reference_log
    top = parse((RECORDS / "pr1855" / "train_seed42.log").read_text())
    assert top["losses"][1] == 9.0087 and top["post_quant_val_bpb"] == 1.07254371 and top["pre_quant_val_bpb"] == 1.06395844
    assert top["artifact_bytes"] == 15_897_259 and top["model_bytes"] == 15_865_260 and top["model_params"] == 35_945_671
    old = parse((RECORDS / "pr1493" / "train_seed42.log").read_text())
    assert old["post_quant_val_bpb"] == 1.09970431 and old["artifact_bytes"] == 15_991_930 and old["losses"][4500] == 2.7622


def test_bench_fails_clearly_without_cuda() -> None:
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the bench would run")
    bench = _bench()
    work = bench.WORK
    if not (work / "data" / "datasets" / bench.DATASETS[True][0] / "manifest.json").is_file() or not (work / "ref" / "pr1855_train_gpt.py").is_file():
        pytest.skip(f"bench inputs not prepared in {work} (python bench/pr_parity.py --prepare)")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "pr_parity.py"), "--pr", "1855", "--steps", "5"], capture_output=True, text=True)
    assert done.returncode == 2 and "needs CUDA" in done.stderr
