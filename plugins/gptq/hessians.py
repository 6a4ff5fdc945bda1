"""Hessians ``H = X^T X / n_batches`` of the inputs of every quantized linear layer, from training batches.

Forward pre-hooks on each ``nn.Linear`` (``CastedLinear``) whose ``<module>.weight`` is a GPTQ
target see the layer input ``X`` (tokens x in_features) and accumulate ``X^T X`` in float32. The tied
embedding doubles as the output head, so its Hessian is that of the head's input: the model's
``head(h)`` is wrapped for the duration (or, for models without a ``head`` method, the output of
``final_norm`` is hooked, as the records do). A block that runs several times (depth recurrence)
adds its input once per pass, as in the records.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from golf_core.eval.scoring import autocast_for


def _accumulate(store: dict[str, Tensor], name: str, x: Tensor) -> None:
    x = x.detach().float().reshape(-1, x.shape[-1])
    h = store.get(name)
    if h is None:
        h = store[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
    h.addmm_(x.T, x)


def tied_head_weight(model: nn.Module) -> str | None:
    """State-dict name of the embedding that is also the output head, if the model ties them."""
    emb = getattr(model, "tok_emb", None)
    if isinstance(emb, nn.Embedding) and getattr(model, "lm_head", None) is None:
        return "tok_emb.weight"
    return None


@torch.no_grad()
def collect_hessians(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    targets: set[str],
    device: torch.device,
) -> tuple[dict[str, Tensor], int]:
    """Run ``model.forward_logits`` on ``batches`` and return ``({weight name: H}, n_batches)``.

    Only names in ``targets`` get a Hessian; targets that are neither a linear layer's weight nor
    the tied head simply get none (the caller falls back to round-to-nearest for them).
    """
    store: dict[str, Tensor] = {}
    handles = []
    for mod_name, module in model.named_modules():
        weight_name = f"{mod_name}.weight" if mod_name else "weight"
        if isinstance(module, nn.Linear) and weight_name in targets:
            handles.append(module.register_forward_pre_hook(
                lambda mod, args, _n=weight_name: _accumulate(store, _n, args[0])
            ))
    head_name = tied_head_weight(model)
    patched_head = False
    if head_name in targets:
        if callable(getattr(type(model), "head", None)):
            original = model.head

            def head(h: Tensor, *args, **kwargs) -> Tensor:
                _accumulate(store, head_name, h)
                return original(h, *args, **kwargs)

            model.head = head  # instance attribute shadows the method until removed below
            patched_head = True
        elif isinstance(getattr(model, "final_norm", None), nn.Module):
            handles.append(model.final_norm.register_forward_hook(
                lambda mod, args, out: _accumulate(store, head_name, out)
            ))
    was_training = model.training
    model.eval()
    n = 0
    try:
        for x, _y in batches:
            with autocast_for(device):
                model.forward_logits(x.to(device))
            n += 1
    finally:
        for handle in handles:
            handle.remove()
        if patched_head:
            del model.head
        model.train(was_training)
    return {name: h / max(n, 1) for name, h in store.items()}, n
