"""The CPU layouts (:mod:`lib.runtime.cpu_layouts`) change speed, never scores: the same network with upsampling in
channels-last and instance norm as channels-last group norm must give the untouched network's scores, through the
served ``torch`` backend too."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from support.tiny_models import ROI, infer, tiny_task

from lib.networks.factory import NetworkSpec
from lib.runtime import backends as B
from lib.runtime import cpu_layouts as L


def test_operator_layouts_change_speed_not_scores(files):
    """Upsampling is moved to channels-last and instance norm kept there (group norm) or sent to channels-first and
    back: in fp32 the scores must stay those of the untouched network (to rounding), and every output stays
    channels-last for the next convolution."""
    weights, _ = files
    net, _ = NetworkSpec("dints", 3, 0.125, None).load(weights)
    net.eval()
    placed = L.place_memory_formats(copy.deepcopy(net).to(memory_format=torch.channels_last_3d))
    seen = []
    for m in placed.modules():
        if isinstance(m, (torch.nn.Upsample, L.ChannelsLastInstanceNorm)):
            m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, i[0], o)))
    x = torch.rand(2, 1, *ROI, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = net(x), placed(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert {kind for kind, _, _ in seen} == {"Upsample", "ChannelsLastInstanceNorm"}  # the tiny DiNTS has both
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) and not isinstance(p, L.ChannelsLastInstanceNorm)
                   for p in placed.modules() for m in p.children())  # every instance norm was wrapped
    for kind, inp, o in seen:
        assert o.is_contiguous(memory_format=torch.channels_last_3d)
        if kind == "Upsample":
            assert inp.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("channels", [4, L.GROUP_NORM_MIN_CHANNELS, 48])
def test_channels_last_instance_norm_is_instance_norm(channels):
    """Both of its paths (a channels-first round trip below 16 channels, group norm from 16 on) give instance norm's
    values, with the affine terms."""
    norm = torch.nn.InstanceNorm3d(channels, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
        norm.bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(2))
    x = 3.0 * torch.randn(2, channels, 9, 7, 5, generator=torch.Generator().manual_seed(0)) + 1.0
    with torch.no_grad():
        out = L.ChannelsLastInstanceNorm(norm)(x.contiguous(memory_format=torch.channels_last_3d))
        torch.testing.assert_close(out, norm(x), rtol=1e-4, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)


def test_the_cpu_torch_backend_runs_in_fast_layouts_and_leaves_the_shared_network_alone(files):
    """``torch`` on the CPU serves the network in its fast layouts, from a copy: the network the other backends and
    the bf16 gate share keeps its own modules; the served scores are the plain network's."""
    weights, image = files
    task = tiny_task(weights, backend="torch")
    label, result = infer(task, image, fast_path=False)
    assert result["inference"]["backend"] == "torch" and np.asarray(label).any()
    shared = task.served.network("cpu")
    prepared = B.prepare(shared, "torch", "cpu", task.backend_options)
    assert prepared.backend == "torch" and isinstance(prepared.forward, L.ChannelsLastModel)
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in shared.modules())
    assert not any(isinstance(m, L.ChannelsLastInstanceNorm) for m in shared.modules())
    x = torch.rand(2, 1, *ROI, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(prepared.forward(x), shared(x), rtol=1e-4, atol=1e-4)
