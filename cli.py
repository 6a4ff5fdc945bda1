"""The ``golf`` command line. Thin: every command parses its options and delegates to golf_core.

Errors a user can cause are :class:`golf_core.errors.GolfError`: printed as one ``error: ...``
line on stderr with the error's exit code (2; 1 for an artifact over budget), never a traceback.
Click's own usage errors keep click's format. Ctrl-C exits 130 with one line.

At start-up the catalog is built (core defaults, built-in ``plugins/``, the ``golf.plugins``
entry points and every ``--plugins-dir``) and each installed technique class gets a chance to add
sub-commands through ``golf_register_commands(cli)``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from golf_core.errors import GolfError
from golf_core.technique import STAGES as STAGE_CHOICES


# ---------------------------------------------------------------------------------------------
# Plumbing: the group, its catalog and plugin commands, error handling
# ---------------------------------------------------------------------------------------------


def _scan_plugins_dirs(args: list[str]) -> list[str]:
    """``--plugins-dir`` values given before the sub-command (the group's own options)."""
    dirs: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--plugins-dir" and i + 1 < len(args):
            dirs.append(args[i + 1])
            i += 2
            continue
        if arg.startswith("--plugins-dir="):
            dirs.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            break  # the sub-command: what follows is its arguments
        i += 1
    return dirs


class GolfGroup(click.Group):
    """A click group that loads the catalog before parsing, so plugin commands show in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugin_commands: set[str] = set()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from golf_core.catalog import load_catalog

        catalog = load_catalog([Path(d) for d in _scan_plugins_dirs(list(args))])
        ctx.meta["golf.catalog"] = catalog
        self._register_plugin_commands(catalog)
        return super().parse_args(ctx, args)

    def _register_plugin_commands(self, catalog) -> None:
        import pluggy

        from golf_core import hookspecs

        # Commands a previous invocation's plugins added (tests reuse this object) go first.
        for name in self._plugin_commands:
            self.commands.pop(name, None)
        self._plugin_commands = set()
        core = dict(self.commands)
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        for entry in catalog:
            if "golf_register_commands" not in entry.cls.hook_names():
                continue
            try:
                plugin = entry.cls()
            except Exception as exc:  # a plugin that cannot build its default Params must say so
                raise GolfError(f"technique '{entry.name}' ({entry.location}): cannot instantiate with default params: {exc}") from exc
            pm.register(plugin, name=entry.name)
        if not pm.get_plugins():
            return
        pm.hook.golf_register_commands(cli=self)
        for name, command in core.items():
            if self.commands.get(name) is not command:
                culprit = getattr(getattr(self.commands.get(name), "callback", None), "__module__", "a plugin")
                self.commands[name] = command
                raise GolfError(f"{culprit}: golf_register_commands replaced golf's own '{name}' command; give the plugin command another name")
        self._plugin_commands = set(self.commands) - set(core)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except GolfError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)


def _catalog(ctx: click.Context):
    catalog = ctx.find_root().meta.get("golf.catalog")
    if catalog is None:  # a command invoked without the group (tests calling it directly)
        from golf_core.catalog import load_catalog

        catalog = load_catalog([Path(d) for d in ctx.find_root().params.get("plugins_dir", ())])
        ctx.find_root().meta["golf.catalog"] = catalog
    return catalog


def _json_default(value: Any) -> Any:
    from golf_core.stack import MISSING

    if value is MISSING:
        return None
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def _fmt(value: Any) -> str:
    """A value as it would be written in a stack file (strings quoted, sequences as lists)."""
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    except TypeError:
        return repr(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def stack_options(func):
    """``--set`` / ``--enable`` / ``--disable``, applied after the stack file and before validation."""
    func = click.option(
        "--disable", "disable", multiple=True, metavar="NAME", help="Disable a technique the stack enables (repeatable)."
    )(func)
    func = click.option("--enable", "enable", multiple=True, metavar="NAME", help="Enable a technique (repeatable).")(func)
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a stack value; VALUE is parsed as TOML (repeatable), e.g. --set train.iterations=200.",
    )(func)
    return func


def _resolve(ctx: click.Context, path: Path | None, overrides=(), enable=(), disable=()):
    from golf_core.stack import resolve

    return resolve(path, _catalog(ctx), overrides=list(overrides), enable=list(enable), disable=list(disable))


STACK_PATH = click.Path(dir_okay=False, path_type=Path)


@click.group(cls=GolfGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--plugins-dir",
    "plugins_dir",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Also load techniques from DIR: each sub-package or .py file is one technique (repeatable).",
)
@click.version_option(package_name="golf", prog_name="golf")
def cli(plugins_dir: tuple[Path, ...]) -> None:
    """golf: list, combine and train parameter-golf techniques.

    \b
    golf list                      techniques by stage
    golf show NAME                 one technique: params, hooks, legality
    golf check STACK               validation, legality and artifact-size estimate
    golf train [STACK]             train a stack (no STACK: the CPU demo)
    """


# ---------------------------------------------------------------------------------------------
# Catalog: list, show, plugins
# ---------------------------------------------------------------------------------------------


def _stage_key(entry) -> tuple:
    stage = entry.cls.stage
    return (STAGE_CHOICES.index(stage) if stage in STAGE_CHOICES else len(STAGE_CHOICES), not entry.cls.core_default, entry.name)


@cli.command("list")
@click.option("--stage", type=click.Choice(STAGE_CHOICES), help="Only techniques of this stage.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_cmd(ctx: click.Context, stage: str | None, as_json: bool) -> None:
    """Every technique: name, stage, summary, origin PR (core defaults marked *)."""
    entries = sorted((e for e in _catalog(ctx) if stage is None or e.cls.stage == stage), key=_stage_key)
    rows = [
        {
            "name": e.name,
            "stage": e.cls.stage,
            "summary": e.cls.summary(),
            "origin_pr": e.cls.origin_pr,
            "core_default": e.cls.core_default,
            "source": e.source,
        }
        for e in entries
    ]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo(f"no techniques{f' of stage {stage}' if stage else ''}")
        return
    table = [
        [r["name"] + ("*" if r["core_default"] else ""), r["stage"], f"#{r['origin_pr']}" if r["origin_pr"] else "-", r["summary"]]
        for r in rows
    ]
    click.echo(_table(table, ["NAME", "STAGE", "PR", "SUMMARY"]))
    if any(r["core_default"] for r in rows):
        click.echo("\n* core default: always registered, replaced by an enabled technique implementing the same hook")


def _describe(entry) -> dict[str, Any]:
    import inspect

    from golf_core.config import describe_fields

    cls = entry.cls
    try:
        source_file = inspect.getsourcefile(cls)
    except TypeError:
        source_file = None
    legality = cls.legality
    return {
        "name": entry.name,
        "stage": cls.stage,
        "summary": cls.summary(),
        "doc": inspect.getdoc(cls) or "",
        "origin_pr": cls.origin_pr,
        "credits": cls.credits,
        "core_default": cls.core_default,
        "params": describe_fields(cls.Params),
        "hooks": cls.hook_names(),
        "requires": list(cls.requires),
        "conflicts": list(cls.conflicts),
        "legality": {"reads": list(legality.reads), "breaks": list(legality.breaks), "reason": legality.reason, "compliant": legality.compliant},
        "source": entry.source,
        "version": entry.version,
        "location": entry.location,
        "file": source_file,
    }


@cli.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """One technique: docstring, every param (type, default, help), hooks, relations, legality."""
    from golf_core.technique import LEGALITY_CONDITIONS

    info = _describe(_catalog(ctx).get(name))
    if as_json:
        _emit_json(info)
        return
    out = [f"{info['name']}  ({info['stage']}{', core default' if info['core_default'] else ''})", ""]
    out += [info["doc"], ""]
    out.append(f"origin PR:  {'#' + str(info['origin_pr']) if info['origin_pr'] else '-'}")
    if info["credits"]:
        out.append(f"credits:    {info['credits']}")
    out.append(f"source:     {info['source']} {info['location']} (version {info['version'] or '-'})")
    if info["file"]:
        out.append(f"file:       {info['file']}")
    out.append(f"hooks:      {', '.join(info['hooks']) or '-'}")
    out.append(f"requires:   {', '.join(info['requires']) or '-'}")
    out.append(f"conflicts:  {', '.join(info['conflicts']) or '-'}")
    legality = info["legality"]
    state = "compliant" if legality["compliant"] else "NON-COMPLIANT: breaks " + ", ".join(
        f"{c} ({LEGALITY_CONDITIONS[c]})" if c in LEGALITY_CONDITIONS else c for c in legality["breaks"]
    )
    out.append(f"legality:   reads {', '.join(legality['reads'])}; {state}")
    if legality["reason"]:
        out.append(f"            {legality['reason']}")
    out.append("")
    if info["params"]:
        rows = [[p["name"], p["type"], _fmt(p["default"]), p["help"]] for p in info["params"]]
        out.append(_table(rows, ["PARAM", "TYPE", "DEFAULT", "HELP"]))
        out.append("")
        out.append("in a stack file:")
        out.append(f"  [techniques.{info['name']}]")
        out += [f"  {p['name']} = {_fmt(p['default'])}" for p in info["params"] if p["default"] is not None]
    else:
        out.append("params: none")
    click.echo("\n".join(out).rstrip())


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins_cmd(ctx: click.Context, as_json: bool) -> None:
    """Installed technique sources: core, builtin, entry point, plugins-dir; version and location."""
    rows = [{"name": e.name, "source": e.source, "version": e.version, "location": e.location} for e in _catalog(ctx)]
    if as_json:
        _emit_json(rows)
        return
    click.echo(_table([[r["name"], r["source"], r["version"] or "-", r["location"]] for r in rows], ["NAME", "SOURCE", "VERSION", "LOCATION"]))


# ---------------------------------------------------------------------------------------------
# Stacks: validate, show, diff, check
# ---------------------------------------------------------------------------------------------


@cli.group("stack")
def stack_group() -> None:
    """Validate, print and compare stack files."""


@stack_group.command("validate")
@click.argument("stacks", nargs=-1, required=True, type=STACK_PATH, metavar="STACK...")
@stack_options
@click.pass_context
def stack_validate(ctx: click.Context, stacks: tuple[Path, ...], overrides, enable, disable) -> None:
    """Validate each STACK, reporting every problem of every file; exit 2 if any is invalid."""
    failed = 0
    for path in stacks:
        try:
            stack = _resolve(ctx, path, overrides, enable, disable)
        except GolfError as err:
            failed += 1
            click.echo(f"error: {err}", err=True)
            continue
        names = list(stack.techniques)
        click.echo(f"ok: {path} ({stack.name}; {len(names)} technique{'s' if len(names) != 1 else ''}{': ' + ', '.join(names) if names else ''})")
    if failed:
        ctx.exit(2)


@stack_group.command("show")
@click.argument("stack_path", type=STACK_PATH, metavar="STACK")
@click.option("--resolved", is_flag=True, help="Flatten extends and write every value explicitly (defaults included).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@stack_options
@click.pass_context
def stack_show(ctx: click.Context, stack_path: Path, resolved: bool, as_json: bool, overrides, enable, disable) -> None:
    """Print STACK as TOML: the merged tables as written, or --resolved."""
    from golf_core.stack import dumps_toml

    stack = _resolve(ctx, stack_path, overrides, enable, disable)
    if resolved:
        data = stack.flat()
    else:
        data = {"schema": stack.merged["schema"]} if "schema" in stack.merged else {}
        data.update(stack.meta)
        data.update({k: v for k, v in stack.merged.items() if k != "schema"})
    if as_json:
        _emit_json(data)
        return
    chain = " -> ".join(p.name for p in stack.chain)
    click.echo(f"# {'resolved' if resolved else 'merged'}: {chain}\n" + dumps_toml(data), nl=False)


@stack_group.command("diff")
@click.argument("a", type=STACK_PATH, metavar="A")
@click.argument("b", type=STACK_PATH, metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@stack_options
@click.pass_context
def stack_diff(ctx: click.Context, a: Path, b: Path, as_json: bool, overrides, enable, disable) -> None:
    """What differs from stack A to B: techniques added/removed, parameters and core settings changed.

    Values are compared after resolution (extends, defaults), so two files that run the same
    stack show no setting difference. [stack]/[provenance] differences are listed apart. --json
    prints one row per difference: key, a, b and the kind of change.
    """
    from golf_core.stackdiff import diff

    result = diff(
        _resolve(ctx, a, overrides, enable, disable), _resolve(ctx, b, overrides, enable, disable),
        catalog=_catalog(ctx), include_meta=True, label_a=str(a), label_b=str(b),
    )
    if as_json:
        _emit_json(result.rows())
        return
    click.echo(result.format())


@stack_group.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path), metavar="SOURCE...")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Stack file to write.")
@click.option("--parent", metavar="STACK|auto", help="Write the difference from this stack (extends); 'auto' picks the stacks/*.toml with the smallest diff.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--mapping", is_flag=True, help="Print the record-setting -> golf mapping table after the report.")
@click.pass_context
def stack_import(ctx: click.Context, sources: tuple[Path, ...], output: Path, parent: str | None, force: bool, mapping: bool) -> None:
    """Turn a record's settings into a stack file, and report what did not map.

    \b
    SOURCE: a record log (its Hyperparameters dump), its README.md (the run command's
    NAME=VALUE assignments before torchrun), an env-var list file (NAME=VALUE lines), a record
    train_gpt.py (its defaults), or the record folder. Several are merged, the log winning;
    README/log disagreements are reported. A partial source (env list, README) needs --parent.
    """
    from golf_core.importer import import_record, mapping_table

    if output.exists() and not force:
        raise GolfError(f"{output} exists; pass --force to overwrite it")
    result = import_record(
        list(sources), _catalog(ctx), parent=parent, stacks_dir=Path(__file__).resolve().parent / "stacks", exclude=[output],
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(result.text(output), encoding="utf-8")
    click.echo(result.report())
    if mapping:
        rows = [[r["env"], r["kind"], r["target"]] for r in mapping_table()]
        click.echo(_table(rows, ["SETTING", "KIND", "GOLF"]))
    click.echo(f"written: {output}")


@cli.command("check")
@click.argument("stack_path", type=STACK_PATH, metavar="STACK")
@click.option("--strict", is_flag=True, help="Exit 1 when the stack is non-compliant or its estimate is over budget.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@stack_options
@click.pass_context
def check_cmd(ctx: click.Context, stack_path: Path, strict: bool, as_json: bool, overrides, enable, disable) -> None:
    """Validate STACK, summarize its legality and estimate its artifact size against the budget."""
    from golf_core.check import check_stack, format_check

    catalog = _catalog(ctx)
    report = check_stack(_resolve(ctx, stack_path, overrides, enable, disable), catalog)
    if as_json:
        _emit_json(report)
    else:
        click.echo(format_check(report))
    if strict and not (report["legality"]["compliant"] and report["artifact"]["within_budget"]):
        ctx.exit(1)


# ---------------------------------------------------------------------------------------------
# Train
# ---------------------------------------------------------------------------------------------


def default_stack_path() -> Path:
    """``stacks/tiny.toml`` beside the package: the CPU demo on the built-in sample corpus."""
    import golf_core

    path = Path(golf_core.__file__).resolve().parent.parent / "stacks" / "tiny.toml"
    if not path.is_file():
        raise GolfError(f"no STACK given and the demo stack {path} is missing; pass a stack file, e.g. `golf train stacks/baseline.toml`")
    return path


def _summary(report: dict[str, Any]) -> str:
    art = report["artifact"]
    pre = report.get("pre_quant", {}).get("val_bpb")
    lines = [
        "",
        "summary",
        f"  val_bpb     {report['val_bpb']:.4f}"
        + (f"   (pre-quant {pre:.4f}, post-quant {report['post_quant']['val_bpb']:.4f})" if pre is not None else ""),
        f"  artifact    {art['total_bytes']:,} B of {art['budget_bytes']:,} B  ({art['headroom_bytes']:+,} headroom; "
        f"model {art['model_bytes']:,} + code {art['code_bytes']:,})",
        f"  steps       {report['steps']}  ({report['tokens_per_second']:,.0f} tok/s)",
        f"  run dir     {report['run_dir']}",
    ]
    return "\n".join(lines)


@cli.command("train")
@click.argument("stack_path", required=False, type=STACK_PATH, metavar="[STACK]")
@stack_options
@click.option("--seed", type=int, help="Set run.seed.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Write the run here instead of a new directory under run.out_dir.")
@click.option("--nproc", type=int, help="Launch N processes (one per GPU) through torchrun; exit with torchrun's status.")
@click.option("--nnodes", help="torchrun --nnodes for a multi-node run (N or MIN:MAX); needs --rdzv-endpoint.")
@click.option("--node-rank", type=int, help="torchrun --node_rank: this machine's index in a multi-node run.")
@click.option("--rdzv-endpoint", help="torchrun --rdzv_endpoint HOST:PORT (c10d rendezvous) for a multi-node run.")
@click.option("--rdzv-id", help="torchrun --rdzv_id: a job id shared by the nodes of one run.")
@click.pass_context
def train_cmd(
    ctx: click.Context, stack_path: Path | None, overrides, enable, disable, seed: int | None, run_dir: Path | None,
    nproc: int | None, nnodes: str | None, node_rank: int | None, rdzv_endpoint: str | None, rdzv_id: str | None,
) -> None:
    """Train STACK end to end (default: stacks/tiny.toml, the CPU demo on the built-in corpus).

    Prints progress and a summary: val_bpb before and after quantization, artifact bytes
    against the budget, and the run directory (train.log, report.json, model.golf). With --nproc N
    the run is `torchrun --standalone --nproc_per_node N -m golf_core STACK <options>`.
    """
    from golf_core.launch import Nodes, launch, torchrun_command, train_arguments
    from golf_core.train import train

    path = stack_path if stack_path is not None else default_stack_path()
    nodes = Nodes(nnodes, node_rank, rdzv_endpoint, rdzv_id)
    if nodes.multi_node and nproc is None:
        raise GolfError("--nnodes/--node-rank/--rdzv-endpoint/--rdzv-id launch torchrun: give --nproc (processes per node) too")
    worker_args = train_arguments(path, overrides=overrides, enable=enable, disable=disable, seed=seed, run_dir=run_dir)
    overrides = [*overrides, *([f"run.seed={seed}"] if seed is not None else [])]
    stack = _resolve(ctx, path, overrides, enable, disable)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if stack.core.data.dataset == "sample":
        from golf_core.data import ensure_sample_dataset, sample_dataset_dir

        if not (sample_dataset_dir(vocab_size=stack.core.model.vocab_size) / "manifest.json").is_file() and is_main:
            click.echo("preparing the built-in sample corpus (first use only)")
        ensure_sample_dataset(vocab_size=stack.core.model.vocab_size, log=click.echo if is_main else None)
    if nproc is not None:  # the corpus is ready before the workers start (none of them builds it)
        plugins_dirs = ctx.find_root().params.get("plugins_dir") or ()
        ctx.exit(launch(torchrun_command(nproc, worker_args, nodes, plugins_dirs=plugins_dirs)))
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    report = train(stack, _catalog(ctx), run_dir=run_dir, echo=click.echo)
    if is_main:
        click.echo(_summary(report))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@cli.group("data")
def data_group() -> None:
    """Prepare and verify shard datasets."""


@data_group.command("prepare")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Corpus: .jsonl (a 'text' field per line) or .txt (blank-line separated), optionally .gz.")
@click.option("--tokenizer", type=click.Path(dir_okay=False, path_type=Path), help="Use this SentencePiece model (copied into the dataset).")
@click.option("--vocab", "--vocab-size", "vocab", type=int, help="Train a SentencePiece BPE tokenizer of exactly N pieces instead.")
@click.option("--val-docs", required=True, type=int, help="The first K documents become the validation split.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Dataset directory to create.")
@click.option("--max-docs", type=int, help="Read at most N documents.")
@click.option("--shard-tokens", type=int, default=10_000_000, show_default=True, help="Tokens per shard.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset directory.")
@click.option("--caseops", is_flag=True, help="Apply the CaseOps lossless case transform (PR #1729) and write the validation byte sidecar; needs a CaseOps tokenizer or --vocab.")
def data_prepare(input_path: Path, tokenizer: Path | None, vocab: int | None, val_docs: int, out_dir: Path, max_docs: int | None, shard_tokens: int, overwrite: bool, caseops: bool) -> None:
    """Tokenize a text corpus into train/val shards with a manifest (atomically: complete or absent)."""
    from golf_core.data import prepare_dataset

    manifest = prepare_dataset(
        input_path, out_dir, tokenizer_path=tokenizer, vocab_size=vocab, val_docs=val_docs,
        shard_tokens=shard_tokens, max_docs=max_docs, overwrite=overwrite, log=click.echo, caseops=caseops,
    )
    splits = manifest["splits"]
    click.echo(
        f"dataset {out_dir}: vocab {manifest['vocab_size']}, "
        f"train {splits['train'].get('documents', '?')} docs / {splits['train']['tokens']:,} tokens, "
        f"val {splits['val'].get('documents', '?')} docs / {splits['val']['tokens']:,} tokens"
    )


@data_group.command("verify")
@click.argument("data_dir", type=click.Path(path_type=Path), metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_verify(ctx: click.Context, data_dir: Path, as_json: bool) -> None:
    """Check DATA_DIR against its manifest and check the val byte count by decoding; exit 1 on a mismatch."""
    from golf_core.data import verify_dataset

    report = verify_dataset(data_dir)
    if as_json:
        _emit_json(report)
    else:
        click.echo(f"{data_dir}: vocab {report['vocab_size']}, {report['train_tokens']:,} train tokens, "
                   f"{report['val_tokens']:,} val tokens in {report['val_documents']} documents")
        click.echo(f"  val bytes: table {report['table_bytes']:,}, decoded {report['decoded_bytes']:,}, source {report['source_bytes']:,}")
        if report["sidecar_bytes"] is not None:
            click.echo(f"  byte sidecar: {report['sidecar_bytes']:,}")
        for problem in report["problems"]:
            click.echo(f"  problem: {problem}")
        click.echo("ok" if report["ok"] else "FAILED")
    if not report["ok"]:
        ctx.exit(1)


# ---------------------------------------------------------------------------------------------
# Experiments: ablations and run comparison
# ---------------------------------------------------------------------------------------------


@cli.command("ablate")
@click.argument("stack_path", required=False, type=STACK_PATH, metavar="[STACK]")
@click.option("--drop", multiple=True, metavar="NAME", help="A variant without this enabled technique (repeatable).")
@click.option("--add", multiple=True, metavar="NAME", help="A variant with this technique added (repeatable).")
@click.option("--seeds", default="3", show_default=True, help="A count (3 -> seeds 0,1,2) or a comma list (42,0,1234).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a stack value for every run.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Where the runs and ablation.json go (default: run.out_dir/ablate-<stack>).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def ablate_cmd(ctx: click.Context, stack_path: Path | None, drop, add, seeds: str, overrides, out_dir: Path | None, as_json: bool) -> None:
    """Run STACK and each --drop/--add variant over several seeds; report Δbpb, Δnats, Welch p and the record rule."""
    from golf_core.ablate import format_table, run_ablation
    from golf_core.train import train

    try:
        seed_list = list(range(int(seeds))) if "," not in seeds else [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise GolfError(f"--seeds {seeds!r}: expected a count like 3 or a list like 42,0,1234") from None
    path = stack_path if stack_path is not None else default_stack_path()
    catalog = _catalog(ctx)
    base = _resolve(ctx, path, overrides)
    out = out_dir or Path(base.core.run.out_dir) / f"ablate-{base.name}"
    result = run_ablation(
        path, catalog, drop=list(drop), add=list(add), seeds=seed_list, overrides=list(overrides), out_dir=out,
        train_fn=lambda stack, cat: train(stack, cat, quiet=True), echo=click.echo,
    )
    if as_json:
        _emit_json(result["summary"])
    else:
        click.echo(format_table(result["summary"]))
        click.echo(f"written: {result['path']}")


@cli.command("reproduce")
@click.argument("stack_path", type=STACK_PATH, metavar="STACK")
@click.option("--seeds", help="Comma list of seeds (default: the stack's [run] seeds).")
@click.option("--tolerance", type=float, default=0.003, show_default=True, help="Allowed |mean val_bpb - reported| in BPB.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Where the runs and reproduce.json go (default: run.out_dir/reproduce-<stack>).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@stack_options
@click.pass_context
def reproduce_cmd(ctx: click.Context, stack_path: Path, seeds: str | None, tolerance: float, out_dir: Path | None, as_json: bool, overrides, enable, disable) -> None:
    """Run STACK's recorded seeds and compare mean and spread of val_bpb and the artifact with [provenance].expect."""
    from golf_core.reproduce import format_table, parse_seeds, reproduce

    summary = reproduce(
        stack_path, _catalog(ctx), seeds=parse_seeds(seeds), overrides=overrides, enable=enable, disable=disable,
        out_dir=out_dir, tolerance=tolerance, echo=(lambda msg: click.echo(msg, err=True)) if as_json else click.echo,
    )
    if as_json:
        _emit_json(summary)
    else:
        click.echo(format_table(summary))
        click.echo(f"written: {summary['path']}")


@cli.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path), metavar="RUN_DIR...")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Write loss curves (vs step and vs wall clock) to this PNG; needs matplotlib.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare_cmd(run_dirs: tuple[Path, ...], plot_path: Path | None, as_json: bool) -> None:
    """Tabulate finished runs (stack, seed, steps, tok/s, val_bpb per phase, artifact, time per phase)."""
    from golf_core.compare import format_table, load_report, plot_curves, table_rows

    reports = [load_report(d) for d in run_dirs]
    rows = table_rows(reports)
    if as_json:
        _emit_json(rows)
    else:
        click.echo(format_table(rows))
    if plot_path is not None:
        click.echo(f"plot: {plot_curves(reports, plot_path)}", err=as_json)


# ---------------------------------------------------------------------------------------------
# Writing a technique, bundling a submission
# ---------------------------------------------------------------------------------------------


@cli.command("new")
@click.argument("name")
@click.option("--stage", type=click.Choice(("model", "optim", "loss", "quant", "eval")), default="model", show_default=True,
              help="Which hook the template implements: model (embedding transform), optim (LR schedule wrapper), "
                   "loss (loss wrapper), quant (golf_refine_quant), eval (eval adapter).")
@click.option("--dir", "dest", type=click.Path(file_okay=False, path_type=Path),
              help="Create it in DIR. Default: the repository's plugins/ folder (a built-in plugin); "
                   "any other folder gets a standalone distribution with its golf.plugins entry point.")
@click.pass_context
def new_cmd(ctx: click.Context, name: str, stage: str, dest: Path | None) -> None:
    """Scaffold technique NAME: class, Params, one working hook, README and a test that passes as generated."""
    from golf_core.scaffold import scaffold

    result = scaffold(name, stage, dest, catalog=_catalog(ctx))
    click.echo(f"created {result.path} ({result.layout}: {result.module}.{result.class_name}, stage {stage})")
    for path in result.files:
        click.echo(f"  {path}")
    click.echo("next:")
    for line in result.next_steps():
        click.echo(f"  {line}")


@cli.command("bundle")
@click.argument("stack_path", type=STACK_PATH)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Record folder to write: train_gpt.py, README.md, submission.json, requirements.txt.")
@click.option("--report", "reports", multiple=True, type=click.Path(path_type=Path), metavar="RUN",
              help="A run directory (or its report.json) of this stack; fills submission.json's results (repeatable, one per seed).")
@click.option("--author", default="", help="submission.json author (default: the stack's provenance.author).")
@click.option("--github-id", default="", help="submission.json github_id.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@stack_options
@click.pass_context
def bundle_cmd(ctx: click.Context, stack_path: Path, out_dir: Path, reports, author: str, github_id: str, overwrite: bool, as_json: bool, overrides, enable, disable) -> None:
    """Write STACK as a record folder: one self-contained train_gpt.py holding the core and only the enabled techniques.

    Prints the counted code bytes (raw, and compressed as submissions count them) and checks
    them, with the stack's model-size estimate, against the budget; exit 1 when over budget.
    """
    from golf_core.bundle import bundle, format_bundle

    summary = bundle(
        _resolve(ctx, stack_path, overrides, enable, disable), _catalog(ctx), out_dir,
        reports=list(reports), author=author, github_id=github_id, overwrite=overwrite,
    )
    if as_json:
        _emit_json(summary)
    else:
        click.echo(format_bundle(summary))
    if not summary["within_budget"]:
        ctx.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``golf``)."""
    cli.main(args=argv, prog_name="golf")


if __name__ == "__main__":
    main()
