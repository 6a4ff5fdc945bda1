"""golf_core.importer and golf_core.stackdiff on hand-written records (no shared data needed).

The records of ../shared are tested in tests/test_pr_stacks.py; here every reader and rule is
checked on small synthetic inputs whose right answer is written out by hand.
"""

from __future__ import annotations

import base64
import json
import lzma
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli
from golf_core.errors import GolfError
from golf_core.importer import (
    ROW_BY_NAME,
    ROWS,
    import_record,
    mapping_table,
    parse_env_list,
    parse_hyperparameter_dump,
    parse_readme_command,
    parse_script_defaults,
    parse_timeline,
    parse_value,
    read_record,
    resolve_tables,
)
from golf_core.stack import resolve
from golf_core.stackdiff import diff
from golf_core.testing import catalog

DUMP = """W0409 torchrun noise
Hyperparameters:
  adam_eps: 1e-08
  beta2: 0.99
  compressor: brotli
  datasets_dir: /workspace/x/data/datasets/fineweb10B_sp8192
  ema_decay: 0.9965
  eval_stride: 64
  gptq_calibration_batches: 16
  gptq_reserve_seconds: 0.5
  logfile: logs/abc.txt
  matrix_clip_sigmas: 12.85
  min_lr: 0.0
  mlp_mult: 4.0
  model_dim: 512
  muon_row_normalize: True
  num_heads: 8
  num_layers: 11
  num_loops: 2
  loop_start: 3
  loop_end: 5
  enable_looping_at: 0.35
  parallel_residual_start: 7
  qk_gain_init: 5.25
  rope_dims: 16
  seed: 42
  skip_gates_enabled: True
  sliding_window_enabled: True
  ttt_enabled: True
  ttt_lr: 0.005
  ttt_epochs: 3
  vocab_size: 8192
  warmdown_frac: 0.72
  world_size: 8
  xsa_last_n: 11
  mystery_knob: 7
train_shards: 128
model_params:123
1/20000 train_loss: 9.0111 train_time: 0.0m tok/s: 8348323
500/20000 train_loss: 3.3346 train_time: 0.9m tok/s: 7691255
"""

README = """# Record: a test record

```bash
pip install brotli
MATCHED_FINEWEB_REPO_ID=x python3 data/cached_challenge_fineweb.py --variant sp8192
```

```bash
for SEED in 42 0; do
  NCCL_NET=Socket \\
  QK_GAIN_INIT=5.0 \\
  TTT_LR=0.005 \\
  SEED=$SEED \\
  torchrun --standalone --nproc_per_node=8 train_gpt.py
done
```
"""


def record(tmp_path: Path, dump: str = DUMP, readme: str | None = README, submission: dict | None = None, name: str = "pr4242") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train_seed42.log").write_text(dump)
    if readme is not None:
        (folder / "README.md").write_text(readme)
    sub = submission if submission is not None else {
        "author": "Someone", "github_id": "someone", "val_bpb": 1.08, "val_bpb_std": 0.0002, "seeds": [42, 0],
        "seed_results": {"42": {"val_bpb": 1.0801, "artifact_bytes": 15_990_000}, "0": {"val_bpb": 1.0799, "artifact_bytes": 15_995_000}},
    }
    (folder / "submission.json").write_text(json.dumps(sub))
    return folder / "train_seed42.log"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


def test_parse_value() -> None:
    assert parse_value("True") is True and parse_value("False") is False
    assert parse_value("20000") == 20000 and isinstance(parse_value("20000"), int)
    assert parse_value("1e-08") == 1e-8 and parse_value("0.00045") == 0.00045
    assert parse_value("pergroup") == "pergroup" and parse_value("") == "" and parse_value("'3,4,5'") == "3,4,5"


def test_parse_dump_stops_at_the_block_end() -> None:
    dump = parse_hyperparameter_dump(DUMP)
    assert dump is not None and dump["beta2"] == "0.99" and dump["mystery_knob"] == "7"
    assert "train_shards" not in dump and len(dump) == 34
    assert parse_hyperparameter_dump("no dump here\n") is None


def test_parse_readme_command_joins_lines_and_skips_shell_variables() -> None:
    env, nproc, unresolved = parse_readme_command(README)
    assert env == {"NCCL_NET": "Socket", "QK_GAIN_INIT": "5.0", "TTT_LR": "0.005"}  # not the data-download line
    assert nproc == 8 and unresolved == ["SEED"]
    exported = "```bash\nexport DATA_PATH=/d/fineweb10B_sp1024\nSEED=42 torchrun --nproc_per_node 4 train_gpt.py\n```\n"
    env, nproc, _ = parse_readme_command(exported)
    assert env == {"DATA_PATH": "/d/fineweb10B_sp1024", "SEED": "42"} and nproc == 4


def test_parse_env_list_and_timeline() -> None:
    assert parse_env_list("# comment\nexport A_B=1\nC=x y=lower\n") == {"A_B": "1", "C": "x"}
    assert parse_timeline(DUMP) == {1: 0.0, 500: 54.0}
    assert parse_timeline("step:3000/20000 train_loss:2.8 train_time:274074ms step_avg:91.36ms\n") == {3000: 274.074}


def _wrap(source: str) -> str:
    """A self-extracting wrapper in the PR #1493 style (raw LZMA2 + base85)."""
    payload = lzma.compress(source.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    literal = base64.b85encode(payload).decode()
    return f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{literal}"),format=L.FORMAT_RAW,filters=[{{"id":L.FILTER_LZMA2}}]))\n'


SCRIPT = '''import os
class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    train_files = os.path.join(data_path, "fineweb_train_*.bin")
    num_layers = int(os.environ.get("NUM_LAYERS", 11))
    mlp_mult = float(os.environ.get("MLP_MULT", 3.0))
    ln_scale = bool(int(os.environ.get("LN_SCALE", "1")))
    ve_layers = os.environ.get("VE_LAYERS", "9,10")
'''


def test_script_defaults_plain_and_wrapped() -> None:
    expected = {"data_path": "./data/datasets/fineweb10B_sp1024", "num_layers": 11, "mlp_mult": 3.0, "ln_scale": True, "ve_layers": "9,10"}
    assert parse_script_defaults(SCRIPT) == expected
    assert parse_script_defaults(_wrap(SCRIPT)) == expected
    with pytest.raises(GolfError, match="Hyperparameters"):
        parse_script_defaults("x = 1\n")


def test_every_row_is_unique_and_documented() -> None:
    names = [r.setting for r in ROWS]
    assert len(names) == len(set(names))
    table = mapping_table()
    assert {r["kind"] for r in table} >= {"core", "param", "flag", "custom", "environment", "ignored", "unmapped", "pending", "implied"}
    assert all(r["target"] for r in table)
    assert ROW_BY_NAME["data_path"].setting == "datasets_dir"  # the env name folds onto the dump's name


# ---------------------------------------------------------------------------------------------
# Mapping a complete dump
# ---------------------------------------------------------------------------------------------


def test_dump_maps_to_a_stack(tmp_path: Path) -> None:
    result = import_record([record(tmp_path)], catalog())
    t = result.tables
    assert t["model"] == {"vocab_size": 8192, "num_layers": 11, "model_dim": 512, "num_heads": 8, "mlp_mult": 4.0, "qk_gain_init": 5.25}
    assert t["run"] == {"seed": 42, "seeds": [42, 0], "nproc_per_node": 8}
    assert t["data"] == {"dataset": "data/datasets/fineweb10B_sp8192", "tokenizer": ""}
    tech = t["techniques"]
    assert tech["muon"] == {"beta2": 0.99, "adam_eps": 1e-08}
    assert tech["parallel_residuals"] == {"form": "gptj", "start_layer": 7}  # PARALLEL_RESIDUAL_START is the GPT-J form
    assert tech["depth_recurrence"] == {"loop_start": 3, "loop_end": 5, "num_loops": 2, "enable_at": 0.35}
    assert tech["byteshuffle_brotli"] == {"per_tensor": False}  # COMPRESSOR=brotli shuffles the whole blob
    # gptq: attention/MLP families take MATRIX_CLIP_SIGMAS when the script has no per-family sigmas
    assert tech["gptq"]["attn_clip_sigmas"] == tech["gptq"]["mlp_clip_sigmas"] == 12.85
    assert tech["score_first_ttt"] == {"lr": 0.005, "epochs": 3}
    assert "min_lr" not in tech  # MIN_LR=0 is off
    assert "leaky_relu_sq" in tech  # implied by SKIP_GATES_ENABLED (hard-wired LeakyReLU^2)
    order = list(tech)
    assert order.index("sliding_window") < order.index("score_first_ttt")
    assert t["provenance"] == {
        "pr": 4242, "author": "someone", "based_on": [],
        "expect": {"val_bpb": 1.08, "val_bpb_std": 0.0002, "artifact_bytes_max": 15_995_000},
    }
    stack = resolve_tables(t, catalog())  # the tables validate
    assert stack.core.model.qk_gain_init == 5.25 and stack.techniques["qk_gain"].init == 5.25


def test_report_names_every_setting_that_did_not_map(tmp_path: Path) -> None:
    result = import_record([record(tmp_path)], catalog())
    unmapped = {n.setting for n in result.by_category("unmapped")}
    assert "mystery_knob" in unmapped  # no row: reported, never dropped
    assert {n.setting for n in result.by_category("environment")} >= {"logfile"}
    assert {n.setting for n in result.by_category("unused")} == {"min_lr"}
    report = result.report()
    assert "mystery_knob=7: no mapping row" in report
    # README says QK_GAIN_INIT=5.0 but the log ran 5.25: reported, and the log's value is used
    assert result.disagreements == [("qk_gain_init", 5.0, 5.25)]
    assert "QK_GAIN_INIT: README 5.0, log 5.25" in report
    assert "README sets settings the log does not print: NCCL_NET" in report
    assert "unresolved (shell variables): SEED" in report
    text = result.text()
    assert tomllib.loads(text)["model"]["qk_gain_init"] == 5.25
    assert "# Not expressed exactly in golf" in text and "MYSTERY_KNOB=7" in text


def test_step_switch_is_converted_with_the_logs_timing(tmp_path: Path) -> None:
    dump = DUMP.replace("  num_loops: 2\n  loop_start: 3\n  loop_end: 5\n  enable_looping_at: 0.35\n", "  recur_layers: 3,4,5\n  recur_start_step: 500\n")
    result = import_record([record(tmp_path, dump=dump, readme=None)], catalog())
    rec = result.tables["techniques"]["depth_recurrence"]
    # step 500 at 0.9 min = 54 s of the 600 - 0.5 s training cap
    assert rec == {"loop_start": 3, "loop_end": 5, "num_loops": 1, "enable_at": round(54 / 599.5, 2)}
    assert {n.setting for n in result.by_category("approximated")} == {"recur_layers", "recur_start_step"}
    assert "muon_eq_r" in result.tables["techniques"]  # hard-wired in the RECUR_LAYERS scripts


def test_lora_scripts_map_ttt_settings_by_the_plugins_help(tmp_path: Path) -> None:
    dump = DUMP.replace("  ttt_lr: 0.005\n", "  ttt_lora_rank: 80\n  ttt_optimizer: adam\n  phased_ttt_num_phases: 3\n  ttt_k_lora: False\n")
    dump = dump.replace("  sliding_window_enabled: True\n", "")
    result = import_record([record(tmp_path, dump=dump, readme=None)], catalog())
    tech = result.tables["techniques"]
    assert "score_first_ttt" not in tech and "fused_mlp" in tech  # TTT_LORA_RANK marks the PR #1530+ scripts
    # TTT_EPOCHS means nothing to LoRA TTT: no lora_ttt field names it, so it is reported, not guessed
    assert {n.setting for n in result.by_category("unmapped")} >= {"ttt_epochs"}
    assert tech["lora_ttt"]["rank"] == 80 and tech["lora_ttt"]["optimizer"] == "adam"  # found by "(TTT_LORA_RANK)" etc.
    assert tech["lora_ttt"]["sites"] == ["c_q", "c_v", "attn", "mlp", "head"]  # TTT_K_LORA=0 drops c_k
    # no SPARSE_ATTN_GATE_* here: a pre-#1787 script, without PR #1767's alpha scaling and warm start
    assert tech["lora_ttt"]["alpha"] == 80.0 and tech["lora_ttt"]["warm_start_a"] is False
    assert tech["phased_ttt"] == {"num_phases": 3}
    assert list(tech).index("lora_ttt") < list(tech).index("phased_ttt")


def test_pending_rows_wait_for_their_technique() -> None:
    from golf_core.importer import Plan, RecordSource, _find_field, pending

    assert _find_field(catalog(), "lora_ttt", "ttt_lora_rank") == "rank"
    assert _find_field(catalog(), "lora_ttt", "ttt_lr") is None  # TTT_LR is not TTT_LORA_LR
    src = RecordSource(paths=[], settings={"future_knob": 3, "future_on": 1})
    plan = Plan(src, catalog())
    pending("future_knob", ("no_such_technique",), "a knob of a future technique").apply(3, plan, "future_knob")
    pending("future_on", ("no_such_technique",), "its switch", switch=lambda v, p: bool(v)).apply(1, plan, "future_on")
    assert [(n.setting, n.category) for n in plan.notes] == [("future_knob", "pending"), ("future_on", "pending")]
    assert "golf has no no_such_technique technique yet" in plan.notes[0].message and not plan.params and not plan.flags


# ---------------------------------------------------------------------------------------------
# Parents
# ---------------------------------------------------------------------------------------------

PARENT = """schema = 1
[provenance]
pr = 7
[model]
num_layers = 4
model_dim = 64
num_heads = 4
num_kv_heads = 2
vocab_size = 1024
[techniques.xsa]
last_n = 2
[techniques.ema]
decay = 0.99
"""


def test_partial_source_keeps_the_parents_settings(tmp_path: Path) -> None:
    parent = write(tmp_path / "parent.toml", PARENT)
    env = write(tmp_path / "overrides.env", "EMA_DECAY=0.995\nMTP_NUM_HEADS=2\nNUM_LAYERS=6\n")
    result = import_record([env], catalog(), parent=parent)
    assert result.tables["model"] == {"num_layers": 6}
    assert result.tables["techniques"] == {"ema": {"decay": 0.995}, "mtp": {"num_heads": 2}}
    assert result.tables["provenance"]["based_on"] == [7]
    out = write(tmp_path / "child.toml", result.text(tmp_path / "child.toml"))
    child = resolve(out, catalog())
    assert child.core.model.num_layers == 6 and child.core.model.model_dim == 64
    assert set(child.techniques) == {"xsa", "ema", "mtp"}  # xsa stays: the env list does not mention it


def test_complete_source_switches_off_what_it_does_not_run(tmp_path: Path) -> None:
    parent = write(tmp_path / "parent.toml", PARENT)
    src = record(tmp_path)
    result = import_record([src], catalog(), parent=parent)
    assert result.tables["techniques"]["ema"] == {"decay": 0.9965}
    assert result.tables["model"]["num_layers"] == 11 and result.tables["model"]["num_kv_heads"] == 4  # back to the default
    out = write(tmp_path / "child.toml", result.text(tmp_path / "child.toml"))
    standalone = resolve_tables(import_record([src], catalog()).tables, catalog())
    d = diff(resolve(out, catalog()), standalone, catalog=catalog())
    assert not (d.added or d.removed or d.changed or d.core)
    # The parent lists xsa first, so the child runs it before the techniques it adds: reported.
    assert d.order and any(n.setting == "(order)" for n in result.by_category("approximated"))


def test_auto_parent_picks_the_closest_stack(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    src = record(tmp_path)
    exact = import_record([src], catalog())
    write(stacks / "near.toml", exact.text().replace("warmdown_frac = 0.72", "warmdown_frac = 0.5"))
    write(stacks / "far.toml", PARENT)
    result = import_record([src], catalog(), parent="auto", stacks_dir=stacks)
    assert result.parent == (stacks / "near.toml").resolve()
    distances = {Path(k).name: v for k, v in result.parent_distance.items()}
    assert distances["near.toml"] == 1 and distances["far.toml"] > 1
    assert result.tables["techniques"] == {"warmdown": {"warmdown_frac": 0.72}}


def test_bad_sources_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="not found"):
        read_record([tmp_path / "missing.log"])
    with pytest.raises(GolfError, match="neither a Hyperparameters dump"):
        read_record([write(tmp_path / "x.txt", "hello world\n")])
    with pytest.raises(GolfError, match="NUM_LAYERS='eleven'"):
        import_record([write(tmp_path / "bad.env", "NUM_LAYERS=eleven\n")], catalog())


def test_cli_import_writes_the_stack_and_the_report(tmp_path: Path) -> None:
    src = record(tmp_path)
    out = tmp_path / "out.toml"
    result = CliRunner().invoke(cli, ["stack", "import", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "mystery_knob=7" in result.output and f"written: {out}" in result.output
    assert tomllib.loads(out.read_text())["techniques"]["xsa"] == {"last_n": 11}
    again = CliRunner().invoke(cli, ["stack", "import", str(src), "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output


# ---------------------------------------------------------------------------------------------
# The grouped diff
# ---------------------------------------------------------------------------------------------


def test_grouped_diff(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", PARENT)
    b = write(tmp_path / "b.toml", PARENT.replace("[techniques.xsa]\nlast_n = 2\n", "") .replace("decay = 0.99", "decay = 0.9965")
              .replace("[provenance]\npr = 7", "[provenance]\npr = 8") + "[techniques.smear_gate]\nwindow = 8\n[train]\niterations = 5\n")
    d = diff(resolve(a, catalog()), resolve(b, catalog()), catalog=catalog(), include_meta=True)
    assert set(d.added) == {"smear_gate"} and d.added["smear_gate"]["window"] == 8
    assert set(d.removed) == {"xsa"}
    assert d.changed == {"ema": {"decay": (0.99, 0.9965)}}
    assert d.core == {"train.iterations": (20000, 5)}
    assert d.meta == {"provenance.pr": (7, 8)} and not d.empty and d.count() == 4
    rows = {r["key"]: r for r in d.rows()}
    assert rows["techniques.smear_gate"]["change"] == "technique added" and rows["techniques.xsa"]["b"] is None
    assert rows["techniques.ema.decay"] == {"key": "techniques.ema.decay", "a": 0.99, "b": 0.9965, "change": "parameter"}
    text = d.format()
    assert "+ smear_gate (window=8" in text and "- xsa" in text and "ema.decay: 0.99 -> 0.9965" in text
    assert "train.iterations: 20000 -> 5" in text
    only_meta = diff(resolve(a, catalog()), resolve(write(tmp_path / "c.toml", PARENT.replace("pr = 7", "pr = 9")), catalog()), include_meta=True)
    assert only_meta.empty and "no setting differs" in only_meta.format()


def test_order_counts_within_a_stage_only(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", "schema = 1\n[techniques.xsa]\n[techniques.ema]\n[techniques.smear_gate]\n")
    b = write(tmp_path / "b.toml", "schema = 1\n[techniques.ema]\n[techniques.xsa]\n[techniques.smear_gate]\n")
    c = write(tmp_path / "c.toml", "schema = 1\n[techniques.smear_gate]\n[techniques.xsa]\n[techniques.ema]\n")
    assert diff(resolve(a, catalog()), resolve(b, catalog()), catalog=catalog()).empty  # model vs optim: independent
    changed = diff(resolve(a, catalog()), resolve(c, catalog()), catalog=catalog())
    assert changed.order == (["xsa", "ema", "smear_gate"], ["smear_gate", "xsa", "ema"])
