"""Muon: momentum SGD whose 2-D update is orthogonalized (Keller Jordan; as in openai/parameter-golf).

Per matrix ``W`` with gradient ``G``, per step (group options in brackets)::

    buf = momentum * buf + G
    U   = G + momentum * buf            [nesterov; else U = buf]
    U   = U / max(||U_row||_2, 1e-7)    [row_normalize: MuonEq-R, row norms in float32]
    O   = orthogonalize(U, backend_steps)
    W   = W * (1 - lr * weight_decay)   [decoupled; lr is the *scheduled* lr, so it decays too]
    W   = W - lr * sqrt(max(1, rows / cols)) * O

This is the order of the records (PR #1855 ``Muon.step``: row normalization after Nesterov,
immediately before Newton-Schulz; weight decay with the scheduled lr, before the update; a
parameter without a gradient is left alone, decay included). The baseline is the same with
``weight_decay = 0`` and ``row_normalize = False``. A parameter may be a batch of matrices
(leading dims, as the records' weight banks): rows/cols are then its last two dims.

The orthogonalizer comes from the ``golf_orthogonalizer`` hook, so Polar Express or any other
map drops in without touching this class. With torch.distributed initialized, rank r
orthogonalizes parameters ``r, r + world, ...`` and one all-reduce shares the updates, as the
baseline does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor


class Muon(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        *,
        lr: float,
        momentum: float,
        backend_steps: int,
        orthogonalize: Callable[[Tensor, int], Tensor],
        nesterov: bool = True,
        weight_decay: float = 0.0,
        row_normalize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
            weight_decay=weight_decay, row_normalize=row_normalize,
        )
        super().__init__(params, defaults)
        self.orthogonalize = orthogonalize

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed = dist.is_available() and dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            total = sum(int(p.numel()) for p in params)
            updates = torch.zeros(total, device=params[0].device, dtype=torch.bfloat16)
            offset = 0
            for i, p in enumerate(params):
                if i % world_size == rank and p.grad is not None:
                    g = p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(g)
                    if group["nesterov"]:
                        g = g.add(buf, alpha=group["momentum"])
                    else:
                        g = buf
                    if group["row_normalize"]:
                        # MuonEq-R: equalize row norms before orthogonalizing (clamped, as in the records).
                        g = g / g.float().norm(dim=-1, keepdim=True).clamp_min(1e-7).to(g.dtype)
                    g = self.orthogonalize(g, group["backend_steps"])
                    g = g * max(1, g.size(-2) / g.size(-1)) ** 0.5
                    updates[offset : offset + p.numel()] = g.reshape(-1)
                offset += p.numel()
            if distributed:
                dist.all_reduce(updates, op=dist.ReduceOp.SUM)
            offset = 0
            for p in params:
                if p.grad is not None:
                    update = updates[offset : offset + p.numel()].view_as(p).to(dtype=p.dtype)
                    if group["weight_decay"]:
                        p.mul_(1.0 - group["lr"] * group["weight_decay"])
                    p.add_(update, alpha=-group["lr"])
                offset += p.numel()
        return loss
