"""``ctx.request_recompile()``: what the trainer relies on when it answers with ``torch._dynamo.reset()``.

The trainer keeps running the module it compiled at set-up (inside DDP under torchrun) and only
resets dynamo. That is enough because the reset drops every cached graph, so the compiled module
the DDP wrapper holds re-traces on its next call; a change dynamo does not guard on (a forward
hook registered after compilation) is otherwise never seen.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).sum()


def test_reset_makes_the_ddp_wrapped_compiled_module_run_the_new_graph(tmp_path) -> None:
    traces = []

    def backend(gm, example_inputs):
        traces.append(gm)
        return gm.forward

    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        base = Tiny()
        model = DDP(torch.compile(base, backend=backend, fullgraph=True))
        x = torch.randn(2, 4)
        before = model(x).detach()
        assert len(traces) == 1
        # A change the compiled graph does not guard on: the old graph keeps running.
        base.lin.register_forward_hook(lambda module, args, out: out * 2)
        assert torch.equal(model(x).detach(), before) and len(traces) == 1
        # The trainer's answer to request_recompile(): the same wrapper now runs a new trace.
        torch._dynamo.reset()
        after = model(x).detach()
        assert len(traces) == 2
        torch.testing.assert_close(after, 2 * before)
        torch.testing.assert_close(after, base(x).detach())
    finally:
        torch._dynamo.reset()
        if owns_group:
            dist.destroy_process_group()
