"""CPU memory layouts: each operator of a 3-D network in the layout its CPU kernel is fast in.

oneDNN's 3-D convolutions are fastest in channels-last-3d memory, but two operators around them are not: PyTorch's
trilinear upsampling is about 6x slower on the channels-first tensors DiNTS' cells hand it, and its instance norm
has no channels-last kernel at all (it copies to channels-first and back). Measured on the shipped DiNTS (2 x 96^3,
2-core Xeon): bf16 0.55 -> 0.28 s a batch, fp32 0.97 -> 0.67 s (also 1.46x with the CPU limited to AVX2, as on a
laptop), the scores the same to rounding. Used by the bf16 model (:mod:`lib.runtime.reduced_precision`) and by the
eager fp32 ``torch`` backend on the CPU (:mod:`lib.runtime.backends`). A change to what this module computes changes
what the bf16 gate measured: bump ``reduced_precision.LAYOUT_VERSION`` with it, so cached verdicts are measured again.
"""

from __future__ import annotations

import torch
from torch import nn

GROUP_NORM_MIN_CHANNELS = 16  # below this, channels-last group norm is slower than a channels-first round trip


def _to_channels_last(module, inputs):
    return (inputs[0].contiguous(memory_format=torch.channels_last_3d), *inputs[1:])


class ChannelsLastInstanceNorm(nn.Module):
    """Instance norm without leaving channels-last memory where that is fastest.

    PyTorch's CPU instance norm has no channels-last kernel: it copies the tensor to channels-first and back.
    Group norm with one channel per group is the same normalisation and has a channels-last kernel, 3-4x faster
    for 16 channels or more (2 x 16 x 48^3 bf16: 1.4 ms against 4.8 ms with the round trip, on a 2-core Xeon); for
    fewer channels the round trip is faster and is kept."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        n = self.norm
        if x.shape[1] >= GROUP_NORM_MIN_CHANNELS:
            return nn.functional.group_norm(x.contiguous(memory_format=torch.channels_last_3d), x.shape[1],
                                            n.weight, n.bias, n.eps)
        return n(x.contiguous()).contiguous(memory_format=torch.channels_last_3d)


def place_memory_formats(net: nn.Module) -> nn.Module:
    """Hand trilinear upsampling channels-last input and run instance norm as :class:`ChannelsLastInstanceNorm`, in
    place (give it a copy where the original network is shared). Convolutions stay channels-last."""
    for m in net.modules():
        if isinstance(m, nn.Upsample):
            m.register_forward_pre_hook(_to_channels_last)
    swaps = [(parent, name, child) for parent in net.modules() for name, child in parent.named_children()
             if isinstance(child, nn.InstanceNorm3d) and not child.track_running_stats]
    for parent, name, child in swaps:
        setattr(parent, name, ChannelsLastInstanceNorm(child))
    return net


class ChannelsLastModel(nn.Module):
    """The network with :func:`place_memory_formats`, fed channels-last-3d input (the CPU's eager fp32 path)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = place_memory_formats(net.to(memory_format=torch.channels_last_3d))

    def forward(self, x):
        return self.net(x.contiguous(memory_format=torch.channels_last_3d))
