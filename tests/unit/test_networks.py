"""Architecture files and checkpoints: every published format loads safely, and bad files say why."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.profiles import PROFILES
from lib.networks.arch_code import ArchCodeError, load_arch_code, safe_torch_load, save_arch_code
from lib.networks.compact_arch import compact_cpu_arch
from lib.networks.factory import CheckpointError, build_dints, count_parameters, load_network, save_checkpoint


def test_published_cvpr_arch_loads_without_unpickling_code(cvpr_arch):
    with pytest.raises(Exception):  # torch >= 2.6 refuses numpy arrays by default ...
        torch.load(str(cvpr_arch), weights_only=True)
    arch = load_arch_code(cvpr_arch)  # ... our loader allow-lists exactly the numpy globals
    assert (arch.num_blocks, arch.num_depths) == (12, 4)
    assert arch.node_a.shape == (13, 4) and arch.arch_code_c.max() <= 4


def test_gpu_profile_builds_the_bundle_network(cvpr_arch):
    gpu = PROFILES["gpu"]
    net = build_dints(load_arch_code(cvpr_arch), gpu.channel_mul, 3)
    assert count_parameters(net) == pytest.approx(152.4e6, rel=0.01)  # the figure published with the arch


def test_auto3dseg_keys_are_accepted(tmp_path):
    arch = compact_cpu_arch()
    path = tmp_path / "arch_code.pth"
    torch.save({"code_a": arch.arch_code_a, "code_c": arch.arch_code_c, "node_a": arch.node_a}, path)
    loaded = load_arch_code(path)
    np.testing.assert_array_equal(loaded.arch_code_c, arch.arch_code_c)


def test_saved_arch_round_trips_in_bundle_format(tmp_path):
    arch = compact_cpu_arch()
    path = tmp_path / "a.pth"
    save_arch_code(arch, path, history=[1, 2])
    raw = safe_torch_load(path)
    assert set(raw) >= {"node_a", "arch_code_a", "arch_code_c"}
    assert isinstance(raw["arch_code_a"], np.ndarray)  # what the tutorial/bundle code expects
    assert load_arch_code(path).describe() == arch.describe()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"node_a": _Evil()}, path)
    with pytest.raises(ArchCodeError, match="not a readable architecture file"):
        load_arch_code(path)
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "payload, words",
    [
        ({"node_a": np.ones((5, 4)), "arch_code_a": np.ones((4, 10))}, "missing 'arch_code_c'"),
        ({"node_a": np.ones((5, 4)), "arch_code_a": np.ones((4, 9)), "arch_code_c": np.ones((4, 9))}, "expected (4, 10)"),
        ({"node_a": np.ones((5, 4)), "arch_code_a": np.ones((4, 10)), "arch_code_c": np.full((4, 10), 7)}, "operation indices"),
    ],
)
def test_inconsistent_arch_is_explained(tmp_path, payload, words):
    path = tmp_path / "bad.pth"
    torch.save(payload, path)
    with pytest.raises(ArchCodeError) as err:
        load_arch_code(path)
    assert words in str(err.value)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ArchCodeError, match="not found"):
        load_arch_code(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ArchCodeError, match="not a readable"):
        load_arch_code(garbage)


def test_bundle_style_state_dict_loads_unchanged(tmp_path):
    """model.pt of the bundle is a bare state dict (ignite unwraps a single object); DDP adds 'module.'."""
    arch = compact_cpu_arch()
    net = build_dints(arch, 0.125, 3)
    bare = tmp_path / "model.pt"
    torch.save(net.state_dict(), bare)
    loaded, _ = load_network(bare, arch, 0.125, 3)
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    ddp = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, ddp)
    load_network(ddp, arch, 0.125, 3)


def test_weights_that_do_not_fit_the_architecture_are_explained(tmp_path):
    arch = compact_cpu_arch()
    path = tmp_path / "model.pt"
    torch.save(build_dints(arch, 0.125, 3).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit the architecture"):
        load_network(path, arch, 0.25, 3)
    with pytest.raises(CheckpointError, match="no architecture"):
        load_network(path, None, 0.125, 3)


def test_published_checkpoint_carries_its_architecture_and_is_fp16(tmp_path):
    arch = compact_cpu_arch()
    net = build_dints(arch, 0.125, 3)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(net, arch, path, meta={"channel_mul": 0.125}, half=True)
    raw = torch.load(path, weights_only=True)  # plain tensors and lists: no allow-list needed
    assert all(v.dtype == torch.float16 for v in raw["model"].values() if v.is_floating_point())
    loaded, meta = load_network(path, None, 1.0, 3)  # arch and channel_mul come from the file
    assert meta["channel_mul"] == 0.125
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x), atol=2e-2, rtol=2e-2)
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"
