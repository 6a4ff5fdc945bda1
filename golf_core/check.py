"""``golf check``: is a stack valid, is it legal, and will its artifact fit?

Three answers, without reading data or training:

1. validation: the stack resolves (the caller resolves it; a :class:`~golf_core.stack.StackError`
   lists every problem) and its plugin manager builds (firstresult clashes, ``requires``,
   ``conflicts``, misspelled hooks);
2. legality: each enabled technique's :class:`~golf_core.technique.Legality` under the stack's
   Params (:meth:`Technique.legality_for <golf_core.technique.Technique.legality_for>`); the stack
   is compliant when none breaks a rule, else each broken condition is named with its code from
   :data:`~golf_core.technique.LEGALITY_CONDITIONS` and the technique's reason;
3. artifact size: the model is built through the model-build hooks (on the ``meta`` device, so
   a 17M-parameter model costs no memory or time; on CPU if a technique cannot build there),
   and every state-dict tensor is priced by the technique that owns ``golf_quantize`` through
   its optional plain method ``estimate_tensor_bytes(name, shape) -> int`` (1 byte per element
   when it has none). What that figure is comes from the quantizer's optional class attribute
   ``estimate_kind`` (:data:`ESTIMATE_KINDS`): ``"payload"`` (the default), uncompressed payload
   bytes, which brotli usually shrinks; ``"compressed"``, the expected size in the compressed
   artifact (gptq). Container headers and ``golf_refine_quant`` additions are in neither. Counted
   code bytes are the trainer's and ``golf bundle``'s (:func:`golf_core.train.counted_stack_code`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from golf_core.catalog import Catalog
from golf_core.context import RunContext
from golf_core.errors import GolfError
from golf_core.manager import enabled_plugins, make_plugin_manager
from golf_core.model.spec import ModelSpec
from golf_core.stack import ResolvedStack
from golf_core.technique import LEGALITY_CONDITIONS

FALLBACK_BYTES_PER_ELEMENT = 1
# A quantizer's ``estimate_kind`` -> how golf check labels its model figure.
ESTIMATE_KINDS = {"payload": "uncompressed payload estimate", "compressed": "expected compressed size"}


def legality_summary(stack: ResolvedStack, catalog: Catalog) -> dict[str, Any]:
    """Each enabled technique's legality under its Params and, when any breaks a rule, what and why."""
    rows = []
    broken = []
    for name, params in stack.techniques.items():
        legality = catalog.get(name).cls.legality_for(params)
        rows.append(
            {"name": name, "reads": list(legality.reads), "breaks": list(legality.breaks), "reason": legality.reason, "compliant": legality.compliant}
        )
        for condition in legality.breaks:
            broken.append(
                {
                    "technique": name,
                    "condition": condition,
                    # Free-text rules (not C1..C4) are their own description.
                    "description": LEGALITY_CONDITIONS.get(condition, condition),
                    "reason": legality.reason,
                }
            )
    return {"compliant": not broken, "techniques": rows, "broken": broken}


def _build(pm, ctx: RunContext, device: str) -> torch.nn.Module:
    with torch.device(device):
        spec = ModelSpec.from_config(ctx.cfg.model)
        spec.loss_fn = pm.hook.golf_loss_fn(ctx=ctx)
        pm.hook.golf_model_spec(spec=spec, ctx=ctx)
        problems = spec.check()
        if problems:
            raise GolfError("; ".join(problems))
        model = pm.hook.golf_build_model(spec=spec, ctx=ctx)
        pm.hook.golf_patch_model(model=model, ctx=ctx)
    return model


def build_for_estimate(stack: ResolvedStack, catalog: Catalog, pm=None) -> tuple[torch.nn.Module, str, Any]:
    """Build ``stack``'s model through its hooks; returns ``(model, device_used, pm)``.

    The ``meta`` device allocates nothing; a technique whose construction needs real values
    (an ``.item()``, a numpy round trip) fails there, and the model is then built on CPU.
    """
    pm = pm if pm is not None else make_plugin_manager(stack, catalog)
    ctx = RunContext(stack=stack, device=torch.device("cpu"), pm=pm, log=lambda msg, console=True: None)
    # Whatever seeds a technique draws must not depend on whether `golf check` ran first.
    with torch.random.fork_rng(devices=[]):
        try:
            return _build(pm, ctx, "meta"), "meta", pm
        except GolfError:
            raise
        except Exception:  # noqa: BLE001 - any failure on meta means "build it for real"
            return _build(pm, ctx, "cpu"), "cpu", pm


def quantizer_owner(pm) -> Any:
    """The plugin whose ``golf_quantize`` a run would call first (an enabled technique, else the default)."""
    impls = [i for i in pm.hook.golf_quantize.get_hookimpls() if not i.wrapper and not i.hookwrapper]
    # pluggy calls the last implementation in this list first.
    return impls[-1].plugin if impls else None


def estimate_kind(owner: Any) -> str:
    """The label of the quantizer's model figure, from its optional ``estimate_kind`` attribute."""
    kind = getattr(owner, "estimate_kind", "payload")
    if kind not in ESTIMATE_KINDS:
        raise GolfError(
            f"{getattr(owner, 'name', 'the quantizer')}.estimate_kind = {kind!r}: use one of {', '.join(map(repr, ESTIMATE_KINDS))}"
        )
    return ESTIMATE_KINDS[kind]


def estimate_artifact(stack: ResolvedStack, catalog: Catalog, pm=None, code: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameter count and the artifact-size estimate (model bytes + counted code) vs the budget.

    ``code``: the stack's counted code when the caller has it already (``golf bundle``).
    """
    from golf_core.train import counted_stack_code

    model, built_on, pm = build_for_estimate(stack, catalog, pm)
    params = sum(p.numel() for p in model.parameters())
    owner = quantizer_owner(pm)
    estimator = getattr(owner, "estimate_tensor_bytes", None)
    notes = []
    if callable(estimator):
        kind = estimate_kind(owner)
    else:
        estimator = None
        kind = ESTIMATE_KINDS["payload"]
        notes.append(
            f"{getattr(owner, 'name', 'the quantizer')} has no estimate_tensor_bytes(); "
            f"assumed {FALLBACK_BYTES_PER_ELEMENT} byte per element"
        )
    tensors = []
    model_bytes = 0
    for name, tensor in model.state_dict().items():
        shape = tuple(int(d) for d in tensor.shape)
        nbytes = int(estimator(name, shape)) if estimator else FALLBACK_BYTES_PER_ELEMENT * math.prod(shape)
        tensors.append({"name": name, "shape": list(shape), "bytes": nbytes})
        model_bytes += nbytes
    refiners = [
        pm.get_name(i.plugin)
        for i in pm.hook.golf_refine_quant.get_hookimpls()
        if not getattr(i.plugin, "core_default", False)
    ]
    if refiners:
        notes.append(f"bytes added by golf_refine_quant ({', '.join(refiners)}) are not included")
    code = code if code is not None else counted_stack_code(stack, catalog)
    budget = stack.core.artifact.budget_bytes
    total = model_bytes + code["code_bytes"]
    return {
        "params": params,
        "tensors": len(tensors),
        "tensor_bytes": tensors,
        "quantizer": getattr(owner, "name", "") or type(owner).__name__,
        "estimated_per_tensor": estimator is not None,
        "built_on": built_on,
        "model_bytes": model_bytes,
        "code_bytes": code["code_bytes"],
        "code_files": code["files"],
        "code_modules": code.get("modules"),
        "total_bytes": total,
        "budget_bytes": budget,
        "headroom_bytes": budget - total,
        "within_budget": total <= budget,
        "kind": kind,
        "notes": notes,
    }


def check_stack(stack: ResolvedStack, catalog: Catalog) -> dict[str, Any]:
    """Everything ``golf check`` reports, as a JSON-ready dict."""
    pm = make_plugin_manager(stack, catalog)
    return {
        "stack": stack.name,
        "path": str(stack.path) if stack.path else None,
        "valid": True,
        "techniques": [p.name for p in enabled_plugins(pm) if not p.core_default],
        "legality": legality_summary(stack, catalog),
        "artifact": estimate_artifact(stack, catalog, pm),
    }


def format_check(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`check_stack`'s report."""
    lines = [f"stack {report['stack']}" + (f" ({report['path']})" if report["path"] else ""), "validation: ok"]
    techniques = report["techniques"]
    lines.append(f"techniques ({len(techniques)}): {', '.join(techniques) if techniques else '(core defaults only)'}")

    legality = report["legality"]
    lines.append("")
    lines.append("legality:")
    for row in legality["techniques"]:
        state = "compliant" if row["compliant"] else "breaks " + ", ".join(row["breaks"])
        lines.append(f"  {row['name']}: reads {', '.join(row['reads'])}; {state}")
    if legality["compliant"]:
        lines.append("  stack is COMPLIANT with conditions C1-C4 (no enabled technique breaks a rule)")
    else:
        lines.append("  stack is NON-COMPLIANT:")
        for b in legality["broken"]:
            code = f"{b['condition']} ({b['description']})" if b["description"] != b["condition"] else b["condition"]
            lines.append(f"    {b['technique']} breaks {code}" + (f": {b['reason']}" if b["reason"] else ""))

    a = report["artifact"]
    lines.append("")
    lines.append(f"artifact ({a['kind']}; quantizer {a['quantizer']}, model built on {a['built_on']}):")
    lines.append(f"  parameters     {a['params']:>14,}")
    model = "model (compr.)" if a["kind"] == ESTIMATE_KINDS["compressed"] else "model payload "
    lines.append(f"  {model} {a['model_bytes']:>14,} B  ({a['tensors']} tensors)")
    if a.get("code_modules") is not None:  # the modules a run imports, bundled as golf bundle writes them
        shipped = f"{a['code_modules']} modules in the bundled train_gpt.py"
    else:
        shipped = f"{a['code_files']} files of artifact.code_files"
    lines.append(f"  counted code   {a['code_bytes']:>14,} B  ({shipped}, compressed as shipped)")
    lines.append(f"  total          {a['total_bytes']:>14,} B")
    lines.append(f"  budget         {a['budget_bytes']:>14,} B")
    verdict = "fits" if a["within_budget"] else "OVER BUDGET"
    lines.append(f"  headroom       {a['headroom_bytes']:>+14,} B  ({verdict})")
    for note in a["notes"]:
        lines.append(f"  note: {note}")
    if a["kind"] == ESTIMATE_KINDS["compressed"]:
        lines.append(f"  the model figure is {a['quantizer']}'s expected compressed size; the run's report has the exact bytes")
    else:
        lines.append("  the model figure is uncompressed payload; the compressed artifact is usually smaller")
    return "\n".join(lines)


__all__ = [
    "ESTIMATE_KINDS", "build_for_estimate", "check_stack", "estimate_artifact", "estimate_kind", "format_check",
    "legality_summary", "quantizer_owner",
]
