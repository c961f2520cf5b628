"""``scripts/train_cpu_weights.py``, the reproducible training of the shipped weights: a tiny interactive run
writes a checkpoint the app loads (4 input channels, its training record), phantoms prepared in several
processes are the very volumes prepared in one, and a GPU asked for where there is none is a clear refusal."""

from __future__ import annotations

import sys

import pytest
import torch

from support.repo import MODEL_DIR, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import train_cpu_weights  # noqa: E402

from lib.data.seeds import TRAIN_SEED_BASE, seed_range  # noqa: E402
from lib.networks.arch_code import load_arch_code  # noqa: E402
from lib.networks.factory import load_network  # noqa: E402
from lib.task import get_task  # noqa: E402
from lib.trainers.distributed import resolve_device  # noqa: E402
from lib.trainers.phantom_fit import prepare_phantoms  # noqa: E402


@pytest.mark.slow  # an offline training script
def test_tiny_interactive_run_writes_a_checkpoint_the_app_loads(tmp_path, capsys):
    out = tmp_path / "deepedit.pt"
    rc = train_cpu_weights.main([
        "--interactive", "--init", str(MODEL_DIR / "pretrained_dints_pancreas_cpu.pt"), "--train-cases", "2",
        "--val-cases", "1", "--crop", "32", "--max-steps", "3", "--val-every", "3", "--minutes", "10",
        "--device", "cpu", "--workers", "2", "--threads", "2", "--out", str(out),
    ])
    assert rc == 0
    log = capsys.readouterr().out
    assert "training on cpu" in log and "done: 3 steps" in log
    net, meta = load_network(out, load_arch_code(str(MODEL_DIR / "dints_pancreas_cpu_arch.pth")), 0.25, 3,
                             in_channels=4)
    assert meta["interactive"] is True and meta["in_channels"] == 4 and meta["step"] == 3
    assert set(meta["validation_dice"]) >= {"pancreas", "tumor"}
    with torch.no_grad():
        assert net(torch.zeros(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


@pytest.mark.slow  # an offline training script
def test_phantoms_prepared_in_several_processes_are_the_same_volumes():
    task = get_task("pancreas")
    seeds = list(seed_range(TRAIN_SEED_BASE, 2))
    one = prepare_phantoms(task, seeds, (2.0, 2.0, 2.0), (32, 32, 32), workers=1)
    two = prepare_phantoms(task, seeds, (2.0, 2.0, 2.0), (32, 32, 32), workers=2)
    assert [p["seed"] for p in two] == seeds
    for a, b in zip(one, two):
        for key in ("image", "label"):
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU")
def test_cuda_asked_for_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(SystemExit) as exc:
        train_cpu_weights.main(["--device", "cuda", "--out", str(tmp_path / "x.pt")])
    assert exc.value.code == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
