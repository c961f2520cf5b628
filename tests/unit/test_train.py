"""DiNTS search and training tasks in-process, at tiny sizes: the published files, the stable split,
the architecture diagram, and a 2-process ``gloo`` run giving the same file format as one process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from lib.networks.arch_code import load_arch_code
from lib.networks.factory import build_dints, load_checkpoint, load_network
from lib import params as P
from lib.trainers import datalist, distributed
from support.training import TINY_SEARCH, TINY_TRAIN, local_datastore, make_studies, segmentation_tasks

SEARCH_FILE_KEYS = {"node_a", "arch_code_a", "arch_code_a_max", "arch_code_c", "best_dsc", "best_epoch", "complete", "search",
                    "history", "images", "saved"}


@pytest.fixture(scope="module")
def tiny_studies(module_tmp) -> Path:
    return make_studies(module_tmp / "studies")


# ---- unit ------------------------------------------------------------------------------------------------
def test_stable_split_keeps_sides_and_new_labels_go_to_training(tmp_path):
    path = tmp_path / "split.json"
    ids = [f"case_{i:03d}" for i in range(10)]
    train, val, _ = datalist.stable_split(ids, path, val_split=0.3)
    assert val and set(train) | set(val) == set(ids) and not set(train) & set(val)
    # same ids in another order: same split; hash-keyed, not order-keyed
    assert datalist.stable_split(list(reversed(ids)), path, 0.3)[:2] == (train, val)
    # new labels go to training, earlier images keep their side
    train2, val2, _ = datalist.stable_split(ids + ["new_a", "new_b"], path, 0.3)
    assert val2 == val and set(train2) == set(train) | {"new_a", "new_b"}
    # a fresh split of the same ids (no file) is the same split: keyed by id
    assert datalist.stable_split(ids, tmp_path / "other.json", 0.3)[1] == val
    # the user fixes the split; it stays fixed
    train3, val3, info = datalist.stable_split(ids, path, 0.3, val_ids=["case_001", "case_002"])
    assert val3 == ["case_001", "case_002"] and info["fixed"]
    assert datalist.stable_split(ids + ["new_c"], path, 0.3)[1] == ["case_001", "case_002"]
    with pytest.raises(ValueError):
        datalist.stable_split(ids, path, 0.3, val_ids=["no_such_image"])


def test_request_parameters_parse_strings_and_defaults():
    from lib.trainers.tasks import SEARCH_PARAMS, TRAIN_PARAMS

    cfg = P.parse_request(SEARCH_PARAMS, {"crop_size": "32", "epochs": "3", "multi_gpu": "true", "channel_mul": 0.25})
    assert cfg["crop_size"] == (32, 32, 32) and cfg["epochs"] == 3 and cfg["multi_gpu"] is True
    assert cfg["warmup_epochs"] == 715 and cfg["ram_cost_factor"] == 0.8 and cfg["lr_arch"] == 0.001
    cfg = P.parse_request(TRAIN_PARAMS, {})
    assert cfg["lr"] == 0.025 and cfg["epochs"] == 400 and cfg["publish_policy"] == "improve"
    with pytest.raises(ValueError):
        P.parse_request(TRAIN_PARAMS, {"epochs": "many"})
    assert "| `ram_cost_factor` | `0.8` |" in P.params_markdown(SEARCH_PARAMS)


def test_train_config_is_typed_and_built_in_one_place(tiny_studies, model_dir):
    from dataclasses import fields

    from lib.trainers.tasks import COMMON_PARAMS, INTERACTIVE_PARAMS, TRAIN_PARAMS
    from lib.trainers.train_config import TrainConfig

    assert {p.name for p in TRAIN_PARAMS + COMMON_PARAMS + INTERACTIVE_PARAMS} <= {f.name for f in fields(TrainConfig)}
    _, _, train = segmentation_tasks(model_dir)
    ds = local_datastore(tiny_studies)
    cfg = train.train_config({"epochs": "3", "amp": "false", "crop_size": "32"}, ds)
    assert isinstance(cfg, TrainConfig) and cfg.epochs == 3 and cfg.amp is False and cfg.crop_size == (32, 32, 32)
    # what the request leaves to the profile, and the click settings' defaults for a model without clicks
    assert cfg.sw_overlap == train.profile.sw_overlap and tuple(cfg.val_roi_size) == tuple(train.profile.roi_size)
    assert cfg.no_click_prob == 0.3 and cfg.deepest_prob == 0.0 and not cfg.interactive and cfg.in_channels == 1
    assert cfg.items_train and cfg.items_val and cfg.world_size == 1 and cfg.stats_base["request"]["epochs"] == 3
    for bad, what in (({"publish_policy": "sometimes"}, "publish_policy"), ({"amp": "maybe"}, "amp")):
        with pytest.raises(ValueError, match=what):
            train.train_config(bad, ds)


def test_partition_even_and_uneven():
    assert distributed.partition([1, 2, 3], 0, 2) == [1, 3] and distributed.partition([1, 2, 3], 1, 2) == [2, 1]
    assert distributed.partition([1, 2, 3], 1, 2, even=False) == [2]


def test_architecture_diagram(cvpr_arch, tmp_path):
    from lib.visualize.arch_diagram import draw_architecture, path_endpoints

    arch = load_arch_code(cvpr_arch)
    files = draw_architecture(arch, tmp_path / "arch.pth")
    assert [Path(f).suffix for f in files] == [".svg", ".png"]
    assert all(os.path.getsize(f) > 1000 for f in files)
    # path numbering agrees with MONAI's TopologyConstruction
    net = build_dints(arch, 0.25, 3)
    code2in, code2out = path_endpoints(arch.num_depths)
    assert code2in == list(net.dints_space.arch_code2in) and code2out == list(net.dints_space.arch_code2out)


# ---- search and train, one process (the server test covers the same through HTTP) ----------------------
@pytest.mark.slow
def test_search_then_train_in_process(tiny_studies, model_dir):
    _, search, train = segmentation_tasks(model_dir)
    ds = local_datastore(tiny_studies)

    t0 = time.time()
    stats = search(dict(TINY_SEARCH), ds)
    search_s = time.time() - t0
    search_epochs = [h["seconds"] for h in stats["history"]]
    assert stats["status"] == "DONE", stats
    out = Path(stats["arch_file"])
    assert out == model_dir / "dints_pancreas_cpu_arch_searched.pth" and out.exists()
    assert set(load_checkpoint(out)) == SEARCH_FILE_KEYS
    arch = load_arch_code(out)
    assert (arch.num_blocks, arch.num_depths) == (4, 3)
    net = build_dints(arch, 0.25, 3)  # TopologyInstance + DiNTS
    assert net(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    after_warmup = [h for h in stats["history"] if h["epoch"] > 1]
    assert after_warmup and all(h["ram_cost"] > 0 and h["entropy_a"] > 0 and h["entropy_c"] > 0 and h["topology"] > 0
                                for h in after_warmup)
    assert "arch_loss" not in stats["history"][0]  # warm-up trains the weights only
    assert stats["history"][-1]["arch_weight"] == pytest.approx(0.5)
    assert all(Path(p).exists() for p in stats["diagram"])
    # the weights half, the architecture half and validation are disjoint
    assert not set(stats["weights_ids"]) & set(stats["architecture_ids"])
    assert not (set(stats["weights_ids"]) | set(stats["architecture_ids"])) & set(stats["validation_ids"])

    t0 = time.time()
    stats = train(dict(TINY_TRAIN), ds)
    train_s = time.time() - t0
    assert stats["status"] == "DONE", stats
    assert stats["arch_file"] == str(out)  # the searched architecture is trained when present
    published = model_dir / "dints_pancreas_cpu.pt"
    assert stats["published_file"] == str(published) and published.exists()
    loaded, meta = load_network(published, None, 0.25, 3)
    assert meta["epoch"] >= 1 and meta["trained_on"] == stats["training_ids"]
    assert len(stats["history"]) == 2 and all("dice" in h and "loss" in h for h in stats["history"])
    assert os.listdir(stats["tensorboard"])  # event files
    print(f"\nsearch {search_s:.1f}s (epochs {search_epochs} s), train {train_s:.1f}s (epochs {[h['seconds'] for h in stats['history']]} s)")


def test_train_improve_policy_keeps_better_current_model(tiny_studies, model_dir):
    """``publish_policy improve``: a run that does not beat the current model publishes nothing."""
    _, _, train = segmentation_tasks(model_dir)
    ds = local_datastore(tiny_studies)
    trained = model_dir / "dints_pancreas_cpu.pt"
    assert not trained.exists()
    # lr 0 cannot improve on the starting (current, shipped) model
    stats = train(dict(TINY_TRAIN, epochs=1, publish_policy="improve", lr=0.0, arch="shipped"), ds)
    assert stats["status"] == "DONE" and stats["start"].startswith("fine-tuning")
    assert stats["baseline_mean_dice"] is not None
    assert stats["published_file"] is None and not trained.exists()
    assert "never beat" in stats["not_published_reason"]


# ---- two processes (gloo) ------------------------------------------------------------------------------
def test_two_process_gloo_search_and_train_same_format(tiny_studies, model_dir, tmp_path):
    _, search, train = segmentation_tasks(model_dir)
    ds = local_datastore(tiny_studies)
    stats = search(dict(TINY_SEARCH, epochs=2, multi_gpu=True, num_processes=2), ds)
    assert stats["status"] == "DONE" and stats["world_size"] == 2
    assert set(load_checkpoint(stats["arch_file"])) == SEARCH_FILE_KEYS  # what one process writes, too
    arch = load_arch_code(stats["arch_file"])
    build_dints(arch, 0.25, 3)

    stats = train(dict(TINY_TRAIN, epochs=1, multi_gpu=True, num_processes=2), ds)
    assert stats["status"] == "DONE" and stats["world_size"] == 2
    assert stats["history"][0]["lr"] == pytest.approx(0.05)  # lr x world size, as the bundle's multi_gpu config
    ckpt = load_checkpoint(stats["published_file"])
    assert set(ckpt) == {"model", "arch", "meta"}
    assert not any(k.startswith("module.") for k in ckpt["model"])
    load_network(stats["published_file"], None, 0.25, 3)


def test_interactive_model_trains_on_simulated_clicks_and_publishes_its_own_file(tiny_studies, model_dir):
    """``POST /train/deepedit_pancreas`` in process: 1 + 3 input channels, its own weights file, fine-tuned the second time."""
    from lib.configs.interactive import InteractiveConfig

    cfg = InteractiveConfig()
    cfg.init("deepedit_pancreas", str(model_dir), {"profile": "cpu"}, None)
    (model_dir / "pretrained_deepedit_pancreas_cpu.pt").unlink(missing_ok=True)  # start from nothing
    train = cfg.trainer()
    assert {"no_click_prob", "initial_clicks", "click_rounds"} <= set(train.config())
    ds = local_datastore(tiny_studies)
    stats = train(dict(TINY_TRAIN, epochs=1, no_click_prob=0.0), ds)
    assert stats["status"] == "DONE", stats
    published = model_dir / "deepedit_pancreas_cpu.pt"
    assert stats["published_file"] == str(published) and stats["start"].startswith("from scratch")
    net, meta = load_network(published, None, 0.25, 3, in_channels=4)
    assert meta["in_channels"] == 4 and meta["interactive"] is True
    assert net(torch.zeros(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    with pytest.raises(Exception, match="input channels"):  # never served as the automatic model
        load_network(published, None, 0.25, 3)
    assert not (model_dir / "dints_pancreas_cpu.pt").exists()  # the automatic model's file is not touched
    stats = train(dict(TINY_TRAIN, epochs=1), ds)
    assert stats["status"] == "DONE" and stats["start"].startswith("fine-tuning deepedit_pancreas_cpu.pt"), stats["start"]
