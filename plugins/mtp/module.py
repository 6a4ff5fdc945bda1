"""Multi-token prediction heads: an auxiliary training loss on tokens 2..n+1 ahead."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from golf_core.model.gpt import CastedLinear, softcapped_cross_entropy
from golf_core.optim.roles import set_role


class MTPHeads(nn.Module):
    """``loss_weight * mean_k CE(head_k(h_t), y_{t+k+1})`` over ``k = 0..num_heads-1``, training only.

    ``y`` are the usual targets (``y_t`` = token ``t+1``), so head ``k`` predicts the token ``k+2``
    positions after its input; its logits are softcapped like the main head's and scored with the
    run's loss function. Heads whose offset does not fit in the sequence are skipped. The heads are
    ``mtp_heads.{k}.weight`` ``[vocab, dim]``, zero-initialized, trained by Muon (role ``matrix``),
    and removed from the model at train end, so they never reach quantization or the artifact.
    """

    def __init__(self, dim: int, vocab_size: int, num_heads: int, loss_weight: float, loss_fn, softcap: float) -> None:
        super().__init__()
        self.mtp_heads = nn.ModuleList([CastedLinear(dim, vocab_size, bias=False) for _ in range(num_heads)])
        for head in self.mtp_heads:
            nn.init.zeros_(head.weight)
            set_role(head.weight, "matrix")  # Muon, as in the pre-banking records (PR #265-#414)
        self.loss_weight = loss_weight
        self.loss_fn = loss_fn
        self.softcap = softcap

    def forward(self, h: Tensor, target_ids: Tensor) -> Tensor:
        seqlen, dim = h.size(1), h.size(2)
        total = torch.zeros((), device=h.device, dtype=torch.float32)
        count = 0
        for k, head in enumerate(self.mtp_heads):
            valid = seqlen - (k + 1)
            if valid <= 0:
                continue
            logits = head(h[:, :valid, :].reshape(-1, dim))
            total = total + self.loss_fn(logits, target_ids[:, k + 1 :].reshape(-1), self.softcap)
            count += 1
        return self.loss_weight * (total / count) if count else total


def build_mtp_heads(spec, num_heads: int, loss_weight: float) -> MTPHeads:
    loss_fn = spec.loss_fn or softcapped_cross_entropy
    return MTPHeads(spec.model_dim, spec.vocab_size, num_heads, loss_weight, loss_fn, spec.logit_softcap)
