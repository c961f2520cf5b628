"""A DiNTS forward pass with the architecture resolved to Python constants, for tracing and compiling.

MONAI's ``DiNTS.forward`` branches on tensor values (``if self.node_a[0][d]``, ``arch_code_a[...].data``),
which makes ``torch.jit.trace`` warn and specialise silently and makes ``torch.compile`` break the graph
and recompile per cell shape until its recompile limit (then it runs eagerly with guard overhead). The
architecture is fixed at inference time, so :class:`StaticDiNTS` reads it once into Python lists and runs
the very same sub-modules (shared parameters, no copy) in the same order: the output is identical to the
wrapped network's, and the graph has no data-dependent control flow left. (``ModuleDict`` cells still
cannot be *scripted*, MONAI issue #6079; tracing this wrapper is the supported export.)
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiNTS
from torch import nn


def _flag(value) -> bool:
    return bool(value.item() if isinstance(value, torch.Tensor) else value)


class StaticDiNTS(nn.Module):
    def __init__(self, net: DiNTS):
        super().__init__()
        self.net = net
        space = net.dints_space
        self.num_depths = int(net.num_depths)
        self.num_blocks = int(net.num_blocks)
        node_a = net.node_a
        self.stem_active = [_flag(node_a[0][d]) for d in range(self.num_depths)]
        arch_a = space.arch_code_a
        self.cells: list[list[tuple[str, int, int]]] = []
        for blk in range(self.num_blocks):
            row = []
            for res_idx, activation in enumerate(arch_a[blk]):
                if _flag(activation):
                    row.append((str((blk, res_idx)), int(space.arch_code2in[res_idx]), int(space.arch_code2out[res_idx])))
            self.cells.append(row)
        self.last_active = [_flag(node_a[self.num_blocks][d]) for d in range(self.num_depths)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        inputs: list = []
        for d in range(self.num_depths):
            x_out = net.stem_down[str(d)](x)
            inputs.append(x_out if self.stem_active[d] else torch.zeros_like(x_out))
        tree = net.dints_space.cell_tree
        for row in self.cells:
            outputs: list = [None] * self.num_depths
            for key, i, o in row:
                out = tree[key](inputs[i], None)
                outputs[o] = out if outputs[o] is None else outputs[o] + out
            inputs = outputs
        temp = None
        for res_idx in range(self.num_depths - 1, -1, -1):
            up = net.stem_up[str(res_idx)]
            if temp is not None:
                temp = up(temp if inputs[res_idx] is None else inputs[res_idx] + temp)
            elif self.last_active[res_idx]:
                temp = up(inputs[res_idx])
        return net.stem_finals(temp)


def static_network(net: nn.Module) -> nn.Module:
    """``StaticDiNTS`` for a DiNTS network; any other module is returned unchanged."""
    if isinstance(net, StaticDiNTS):
        return net
    return StaticDiNTS(net) if isinstance(net, DiNTS) else net
