"""The SmearGate embedding transform (an ordinary nn.Module, run inside the compiled forward)."""

from __future__ import annotations

import zlib

import torch
from torch import Tensor, nn

from golf_core.model.gpt import CastedLinear
from golf_core.optim.roles import set_role


class SmearGateModule(nn.Module):
    """``forward(x, input_ids)``: x_t + lambda * sigmoid(W x_t[:window]) * x_{t-1} [* 1(ids_t != BOS)].

    Parameter names follow the records (``smear_gate.weight``, ``smear_lambda``) so name-based
    routing (control tensors, quantization passthrough) finds them.
    """

    def __init__(self, window: int, mask_bos: bool = True, bos_id: int = 1) -> None:
        super().__init__()
        self.window = window
        self.mask_bos = mask_bos
        self.bos_id = bos_id
        self.smear_gate = CastedLinear(window, 1, bias=False)
        self.smear_gate._zero_init = True
        nn.init.zeros_(self.smear_gate.weight)
        self.smear_lambda = nn.Parameter(torch.zeros(1, dtype=torch.float32))
        # Small control tensors: Adam (scalar group), never Muon.
        set_role(self.smear_gate.weight, "scalar")
        set_role(self.smear_lambda, "scalar")

    def forward(self, x: Tensor, input_ids: Tensor) -> Tensor:
        lam = self.smear_lambda.to(dtype=x.dtype)
        # .contiguous() on the slice keeps torch.compile(fullgraph=True) on one graph (as in the records).
        g = lam * torch.sigmoid(self.smear_gate(x[:, 1:, : self.window].contiguous()))
        smeared = g * x[:, :-1]
        if self.mask_bos:
            smeared = smeared * (input_ids[:, 1:] != self.bos_id).to(x.dtype).unsqueeze(-1)
        return torch.cat((x[:, :1], x[:, 1:] + smeared), dim=1)


def build_smear_gate(spec, *, window: int, mask_bos: bool, bos_id: int) -> SmearGateModule:
    """Embed-transform factory. Built under a private RNG stream: ``CastedLinear`` draws its (then
    overwritten) default init from the global generator, which would shift every core parameter
    initialised after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(b"smear_gate")) % 2**63)
        return SmearGateModule(window, mask_bos=mask_bos, bos_id=bos_id)
