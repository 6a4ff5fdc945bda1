"""Core default training loader: the challenge's sequential, rank-sliced token stream."""

from __future__ import annotations

from golf_core.data import DistributedTokenLoader
from golf_core.hookspecs import hookimpl
from golf_core.technique import Technique


class SequentialLoader(Technique):
    """Sequential stream over the sorted train shards; each step gives every rank a disjoint span."""

    name = "sequential_loader"
    stage = "data"
    origin_pr = 18
    core_default = True

    @hookimpl(trylast=True)
    def golf_data_loader(self, ctx):
        return DistributedTokenLoader(ctx.train_files, ctx.rank, ctx.world_size, ctx.device)
