"""The four parallel-residual forms of the record lineage, as ``GPT.lanes`` modules.

Each module follows the ``residual_lanes`` contract of ``golf_core.model.spec``: ``claims`` says
which positions it runs, ``forward`` runs one block at such a position on the running stream
(a tensor, or a ``(lane0, lane1)`` tuple once split) and ``readout`` turns the lanes back into one
stream. The sublayer math is the block's own (``block.mix``, ``block.attn_branch``,
``block.mlp_branch``), so LN scale, gates, XSA and TTT adapters apply unchanged; only the residual
arithmetic lives here. ``i`` is always the physical layer index.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from golf_core.optim.roles import set_role


def _lanes(stream) -> tuple[Tensor, Tensor]:
    return stream if isinstance(stream, tuple) else (stream, stream)


class TwoLaneResiduals(nn.Module):
    """PR #1855 (PR #1529/#1530 refinement of #1204): attention and MLP read the block-input lanes.

    For decoder positions with ``i >= start``, lanes start as copies of the stream; the U-Net skip
    enters lane 0 only; then, with ``a = attn_scale * Attn(N(mix(lane0, x0)) s)`` and
    ``f = mlp_scale * MLP(N(lane1) s)``::

        lane0 <- rho[i,0] lane0 + P[i,0,0] a + P[i,1,0] f
        lane1 <- rho[i,1] lane1 + P[i,0,1] a + P[i,1,1] f

    ``P = parallel_post_lambdas`` (init 1), ``rho = parallel_resid_lambdas`` (init 1.1); the readout
    is the mean of the lanes (or one lane).
    """

    splits = True

    def __init__(self, num_layers: int, start_layer: int, resid_init: float, final_lane: str) -> None:
        super().__init__()
        self.start_layer = start_layer
        self.final_lane = final_lane
        self.parallel_post_lambdas = set_role(nn.Parameter(torch.ones(num_layers, 2, 2, dtype=torch.float32)), "scalar")
        self.parallel_resid_lambdas = set_role(
            nn.Parameter(torch.full((num_layers, 2), float(resid_init), dtype=torch.float32)), "scalar"
        )

    def claims(self, i: int, encoder: bool) -> bool:
        return not encoder and i >= self.start_layer

    def forward(self, block, i, stream, x0, skip, merge_skip, adapters):
        lane0, lane1 = _lanes(stream)
        if skip is not None:
            lane0 = merge_skip(lane0, skip)
        a = block.attn_branch(block.mix(lane0, x0), adapters)
        f = block.mlp_branch(lane1, adapters)
        resid = self.parallel_resid_lambdas[i].to(dtype=lane0.dtype)
        post = self.parallel_post_lambdas[i].to(dtype=lane0.dtype)
        new0 = resid[0] * lane0 + post[0, 0] * a + post[1, 0] * f
        new1 = resid[1] * lane1 + post[0, 1] * a + post[1, 1] * f
        return new0, new1

    def readout(self, stream) -> Tensor:
        lane0, lane1 = stream
        if self.final_lane == "attn":
            return lane0
        if self.final_lane == "mlp":
            return lane1
        return 0.5 * (lane0 + lane1)


class SequentialLaneResiduals(TwoLaneResiduals):
    """PR #1204 (msisovic): two lanes, but attention and MLP update them one after the other.

    From physical layer ``start`` on, encoder positions included; skips enter both lanes (a skip
    pushed by a split encoder position is a lane pair)::

        a = attn_scale * Attn(N(mix(lane0, x0)) s);  lane_j <- sqrt(rho[i,0]) lane_j + P[i,0,j] a
        f = mlp_scale * MLP(N(mix(lane1, x0)) s);    lane_j <- sqrt(rho[i,1]) lane_j + P[i,1,j] f

    ``parallel_resid_lambdas`` start at ``sqrt(resid_init)`` (1204: sqrt(1.1)), applied twice.
    """

    def __init__(self, num_layers: int, start_layer: int, resid_init: float, final_lane: str) -> None:
        super().__init__(num_layers, start_layer, math.sqrt(resid_init), final_lane)

    def claims(self, i: int, encoder: bool) -> bool:
        return i >= self.start_layer

    def forward(self, block, i, stream, x0, skip, merge_skip, adapters):
        lane0, lane1 = _lanes(stream)
        if skip is not None:
            skip0, skip1 = _lanes(skip)
            lane0, lane1 = merge_skip(lane0, skip0), merge_skip(lane1, skip1)
        resid = self.parallel_resid_lambdas[i].to(dtype=lane0.dtype)
        post = self.parallel_post_lambdas[i].to(dtype=lane0.dtype)
        a = block.attn_branch(block.mix(lane0, x0), adapters)
        lane0, lane1 = resid[0] * lane0 + post[0, 0] * a, resid[0] * lane1 + post[0, 1] * a
        f = block.mlp_branch(block.mix(lane1, x0), adapters)
        return resid[1] * lane0 + post[1, 0] * f, resid[1] * lane1 + post[1, 1] * f


class IsolatedLaneResiduals(nn.Module):
    """PR #1334 / #1477: lane 0 only ever receives attention, lane 1 only the MLP; learned merge.

    At the first decoder position with ``i >= start`` the skip is merged into the stream, which is
    then copied into both lanes; later skips enter lane 0 (PR #1477) or are lost (``late_skips =
    "drop"``: PR #1334's code adds them to the stale pre-split stream). Per block::

        x_in = mix(lane0, x0);  lane0 <- x_in + attn_scale * Attn(N(x_in) s)
        lane1 <- lane1 + mlp_scale * MLP(N(lane1) s)

    readout ``m lane0 + (1 - m) lane1`` with the learned scalar ``lane_merge`` m (init 0.5).
    """

    splits = True

    def __init__(self, start_layer: int, late_skips: str) -> None:
        super().__init__()
        self.start_layer = start_layer
        self.late_skips = late_skips
        self.lane_merge = set_role(nn.Parameter(torch.tensor(0.5, dtype=torch.float32)), "scalar")

    def claims(self, i: int, encoder: bool) -> bool:
        return not encoder and i >= self.start_layer

    def forward(self, block, i, stream, x0, skip, merge_skip, adapters):
        if isinstance(stream, tuple):
            lane0, lane1 = stream
            if skip is not None and self.late_skips == "lane0":
                lane0 = merge_skip(lane0, skip)
        else:
            x = merge_skip(stream, skip) if skip is not None else stream
            lane0, lane1 = x, x
        x_in = block.mix(lane0, x0)
        lane0 = x_in + block.attn_branch(x_in, adapters)
        lane1 = lane1 + block.mlp_branch(lane1, adapters)
        return lane0, lane1

    def readout(self, stream) -> Tensor:
        lane0, lane1 = stream
        m = self.lane_merge.to(dtype=lane0.dtype)
        return m * lane0 + (1 - m) * lane1


class GPTJResiduals(nn.Module):
    """PR #1412 / #1493 / #1514: one stream, attention and MLP both read the block input (GPT-J).

    For every position with ``i >= start``: ``x_in = mix(x, x0)``,
    ``x <- x_in + attn_scale * Attn(N(x_in) s) + mlp_scale * MLP(N(x_in) s)``. No parameters.
    """

    splits = False

    def __init__(self, start_layer: int) -> None:
        super().__init__()
        self.start_layer = start_layer

    def claims(self, i: int, encoder: bool) -> bool:
        return i >= self.start_layer

    def forward(self, block, i, stream, x0, skip, merge_skip, adapters):
        x = merge_skip(stream, skip) if skip is not None else stream
        x_in = block.mix(x, x0)
        return x_in + block.attn_branch(x_in, adapters) + block.mlp_branch(x_in, adapters)

    def readout(self, stream) -> Tensor:
        return stream


FORMS = ("two_lane", "sequential", "isolated", "gptj")


def build_lanes(spec, form: str, start_layer: int, resid_init: float, final_lane: str, late_skips: str) -> nn.Module:
    if form == "two_lane":
        return TwoLaneResiduals(spec.num_layers, start_layer, resid_init, final_lane)
    if form == "sequential":
        return SequentialLaneResiduals(spec.num_layers, start_layer, resid_init, final_lane)
    if form == "isolated":
        return IsolatedLaneResiduals(start_layer, late_skips)
    if form == "gptj":
        return GPTJResiduals(start_layer)
    raise ValueError(f"unknown parallel residual form {form!r}; one of {FORMS}")
