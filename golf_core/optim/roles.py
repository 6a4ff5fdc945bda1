"""Parameter roles: the one place that decides which optimizer group a parameter joins.

Roles: ``embed`` (token embedding, tied head included), ``head`` (untied output head),
``matrix`` (2-D weights inside the blocks: Muon), ``scalar`` (norm gains, mixes, gates and every
other small tensor: Adam). A module may pin a parameter's role by setting ``param._golf_role``;
otherwise the rule below applies, using the records' control-tensor names.
"""

from __future__ import annotations

from torch import nn

from golf_core.model.gpt import is_control_tensor

ROLES = ("embed", "head", "matrix", "scalar")


def set_role(param: nn.Parameter, role: str) -> nn.Parameter:
    if role not in ROLES:
        raise ValueError(f"unknown parameter role {role!r}; one of {ROLES}")
    param._golf_role = role  # type: ignore[attr-defined]
    return param


def role_of(name: str, param: nn.Parameter) -> str:
    pinned = getattr(param, "_golf_role", None)
    if pinned:
        return pinned
    if name == "tok_emb.weight":
        return "embed"
    if name == "lm_head.weight":
        return "head"
    if name.startswith("blocks.") and param.ndim == 2 and not is_control_tensor(name):
        return "matrix"
    return "scalar"


def params_by_role(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {role: [] for role in ROLES}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[role_of(name, param)].append((name, param))
    return groups
