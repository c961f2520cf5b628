"""A MONAI model-zoo bundle directory, as downloaded, read with MONAI's own bundle parser.

A bundle is ``configs/`` (``inference.json|yaml``, ``metadata.json``, ``train.json|yaml``) and ``models/model.pt``
(plus the DiNTS architecture code, ``models/search_code_*.pt``). Everything the app needs is read from those files
through :class:`monai.bundle.ConfigParser` (references and ``$`` expressions resolved as ``monai.bundle run``
would, with ``bundle_root`` set to the directory), never re-typed here:

* the network (``network_def``): DiNTS (``dints_space`` width, architecture file) or UNet (its arguments);
* the labels (``metadata.json``: ``network_data_format.outputs.pred.channel_def``);
* the model spacing, orientation and intensity window (``preprocessing``: ``Spacingd``, ``Orientationd``,
  ``ScaleIntensityRanged``) and the sliding window (``inferer``);
* the training recipe (``train``: optimizer, learning rate, weight decay, loss ``include_background``, StepLR step,
  crop sampling), when the bundle has a train config.

Only the values are taken: the network is built by :mod:`lib.networks.factory` and served through the app's own
pipeline (fast path, restore, backends). Nothing here instantiates the bundle's ``device`` expressions (the
pancreas bundle's ``dints_space`` asks for ``cuda``), so a bundle reads the same on a laptop.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
OPTIMIZERS = {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw", "Novograd": "novograd"}
NETWORKS = {"DiNTS": "dints", "UNet": "unet"}
UNET_ARGS = ("channels", "strides", "num_res_units", "norm", "kernel_size", "up_kernel_size", "act", "dropout")


class BundleError(ValueError):
    """A bundle directory that cannot be served, with the file at fault in the message."""


@dataclass(frozen=True)
class TrainRecipe:
    """What a bundle's train config says about training (the app's trainer follows it)."""

    optimizer: str = "sgd"  # sgd | adam | adamw | novograd
    lr: float = 0.025
    weight_decay: float = 0.0
    momentum: float = 0.9
    include_background: bool = False
    lr_step_epochs: int = 0  # StepLR step_size (0: no StepLR in the bundle)
    crop_size: tuple[int, int, int] | None = None
    crop_ratios: tuple[float, ...] = ()  # per class, background first (RandCropByPosNegLabeld: neg, pos)


@dataclass(frozen=True)
class ZooBundle:
    root: Path
    name: str  # the model name it is served under (the directory's name)
    title: str  # metadata "name" where there is one
    version: str
    labels: dict[str, int]  # name -> value, background left out
    network: str  # dints | unet
    network_options: dict[str, Any]  # UNet arguments (DiNTS: none, its shape is the architecture code)
    channel_mul: float
    arch_file: str | None
    weights: str  # models/model.pt (may be absent: an untrained bundle)
    spacing: tuple[float, float, float]
    orientation: str
    hu_window: tuple[float, float]
    roi_size: tuple[int, int, int]
    sw_batch_size: int
    sw_overlap: float
    recipe: TrainRecipe | None = None

    def describe(self) -> dict:
        """What ``/info`` shows of the bundle."""
        return {"bundle": str(self.root), "name": self.title, "version": self.version, "labels": dict(self.labels),
                "network": self.network, "spacing": list(self.spacing), "hu_window": list(self.hu_window),
                "roi_size": list(self.roi_size), "sw_overlap": self.sw_overlap,
                "recipe": None if self.recipe is None else {"optimizer": self.recipe.optimizer, "lr": self.recipe.lr,
                                                            "include_background": self.recipe.include_background}}


def _config_file(root: Path, stem: str, required: bool) -> Path | None:
    for suffix in CONFIG_SUFFIXES:
        path = root / "configs" / f"{stem}{suffix}"
        if path.is_file():
            return path
    if required:
        raise BundleError(f"{root}: no configs/{stem}.json or configs/{stem}.yaml (is this a model-zoo bundle directory?)")
    return None


class _Config:
    """One bundle config file in MONAI's parser, with errors that name the file and the entry."""

    def __init__(self, path: Path, root: Path):
        from monai.bundle import ConfigParser

        self.path = path
        self.parser = ConfigParser()
        try:
            self.parser.read_config(str(path))
        except Exception as exc:
            raise BundleError(f"{path}: not a readable bundle config ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        self.parser["bundle_root"] = str(root)

    def has(self, key: str) -> bool:
        try:
            self.parser[key]
            return True
        except (KeyError, IndexError, TypeError, ValueError):
            return False

    def raw(self, key: str, default: Any = None) -> Any:
        return self.parser[key] if self.has(key) else default

    def value(self, key: str, default: Any = ...) -> Any:
        """The entry with its references and expressions resolved (never instantiated)."""
        if not self.has(key):
            if default is ...:
                raise BundleError(f"{self.path}: no '{key.replace('#', '.')}' entry")
            return default
        try:
            return self.parser.get_parsed_content(key, instantiate=False)
        except Exception as exc:
            raise BundleError(f"{self.path}: cannot evaluate '{key.replace('#', '.')}' "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None

    def transforms(self, *keys: str) -> list[tuple[str, str]]:
        """(short target name, config id) of every transform listed under the first of ``keys`` that is a list."""
        for key in keys:
            items = self.raw(key)
            if isinstance(items, dict):
                key, items = f"{key}#transforms", items.get("transforms")
            if isinstance(items, list):
                return [(str(t.get("_target_", "")).rsplit(".", 1)[-1], f"{key}#{i}") for i, t in enumerate(items)
                        if isinstance(t, dict)]
        return []


def _short_target(cfg: _Config, key: str) -> str:
    target = cfg.raw(f"{key}#_target_")
    if not isinstance(target, str):
        raise BundleError(f"{cfg.path}: '{key}' has no _target_")
    return target.rsplit(".", 1)[-1]


def _metadata(metadata: Path) -> tuple[dict, dict[str, int]]:
    """``metadata.json`` as read, and the labels of its ``channel_def``."""
    try:
        meta = json.loads(metadata.read_text(encoding="utf-8"))
        channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    except FileNotFoundError:
        raise BundleError(f"{metadata}: missing (the bundle's labels are read from it)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{metadata}: no network_data_format.outputs.pred.channel_def ({type(exc).__name__}: {exc})") from None
    labels = {}
    for value, name in channels.items():
        try:
            value = int(value)
        except ValueError:
            raise BundleError(f"{metadata}: channel_def key {value!r} is not a channel number") from None
        if value != 0:
            labels[str(name).strip()] = value
    if not labels or sorted(labels.values()) != list(range(1, len(labels) + 1)):
        raise BundleError(f"{metadata}: channel_def must name the channels 1..n (found {channels})")
    return meta, labels


def _arch_file(cfg: _Config, root: Path) -> str:
    path = cfg.value("arch_ckpt_path", None)
    if isinstance(path, str) and Path(path).is_file():
        return path
    found = sorted((root / "models").glob("search_code_*.pt"))
    if found:  # older bundles hard-code the arch path of the machine they were made on
        return str(found[-1])
    raise BundleError(f"{cfg.path}: the DiNTS architecture file {path or '(arch_ckpt_path)'} does not exist, and there is "
                      f"no models/search_code_*.pt in {root}")


def _network(cfg: _Config, root: Path, num_classes: int) -> dict:
    kind = _short_target(cfg, "network_def")
    if kind not in NETWORKS:
        raise BundleError(f"{cfg.path}: network_def is a {kind}; the app serves {' and '.join(NETWORKS)} bundles")
    out = {"network": NETWORKS[kind], "network_options": {}, "channel_mul": 1.0, "arch_file": None}
    classes_key = "network_def#num_classes" if kind == "DiNTS" else "network_def#out_channels"
    classes = int(cfg.value(classes_key))
    if classes != num_classes:
        raise BundleError(f"{cfg.path}: the network predicts {classes} channels, metadata.json names {num_classes}")
    in_channels = int(cfg.value("network_def#in_channels", 1))
    if in_channels != 1:
        raise BundleError(f"{cfg.path}: the network takes {in_channels} input channels; the app serves CT bundles (1)")
    if kind == "DiNTS":  # its blocks and depths are those of the architecture code
        space = cfg.raw("network_def#dints_space")
        space_key = space[1:] if isinstance(space, str) and space.startswith("@") else "network_def#dints_space"
        out["channel_mul"] = float(cfg.value(f"{space_key}#channel_mul", 1.0))
        out["arch_file"] = _arch_file(cfg, root)
    else:
        if int(cfg.value("network_def#spatial_dims", 3)) != 3:
            raise BundleError(f"{cfg.path}: a {cfg.value('network_def#spatial_dims')}-D UNet; the app serves 3-D networks")
        opts = {}
        for arg in UNET_ARGS:
            if cfg.has(f"network_def#{arg}"):
                v = cfg.value(f"network_def#{arg}")
                opts[arg] = tuple(v) if isinstance(v, list) else v
        out["network_options"] = opts
    return out


def _preprocessing(cfg: _Config) -> dict:
    found: dict[str, Any] = {}
    for target, key in cfg.transforms("preprocessing"):
        if target == "Spacingd":
            found["spacing"] = tuple(float(s) for s in cfg.value(f"{key}#pixdim"))
        elif target == "Orientationd":
            found["orientation"] = str(cfg.value(f"{key}#axcodes"))
        elif target == "ScaleIntensityRanged":
            found["hu_window"] = (float(cfg.value(f"{key}#a_min")), float(cfg.value(f"{key}#a_max")))
    missing = [t for t, k in (("Spacingd", "spacing"), ("ScaleIntensityRanged", "hu_window")) if k not in found]
    if missing:
        raise BundleError(f"{cfg.path}: the preprocessing has no {' and no '.join(missing)} (the app needs the model "
                          f"spacing and the CT intensity window)")
    if len(found["spacing"]) != 3:
        raise BundleError(f"{cfg.path}: Spacingd pixdim {found['spacing']} is not 3-D")
    found.setdefault("orientation", "RAS")
    return found


def _inferer(cfg: _Config) -> dict:
    if _short_target(cfg, "inferer") != "SlidingWindowInferer":
        raise BundleError(f"{cfg.path}: the inferer is a {_short_target(cfg, 'inferer')}; the app runs SlidingWindowInferer")
    roi = tuple(int(r) for r in cfg.value("inferer#roi_size"))
    return {"roi_size": roi, "sw_batch_size": int(cfg.value("inferer#sw_batch_size", 1)),
            "sw_overlap": float(cfg.value("inferer#overlap", 0.25))}


def _recipe(cfg: _Config, num_classes: int) -> TrainRecipe:
    kind = _short_target(cfg, "optimizer")
    if kind not in OPTIMIZERS:
        raise BundleError(f"{cfg.path}: optimizer {kind}; the app trains with {', '.join(OPTIMIZERS)}")
    fields: dict[str, Any] = {"optimizer": OPTIMIZERS[kind], "lr": float(cfg.value("optimizer#lr")),
                              "weight_decay": float(cfg.value("optimizer#weight_decay", 0.0)),
                              "momentum": float(cfg.value("optimizer#momentum", 0.0 if kind == "SGD" else 0.9)),
                              "include_background": bool(cfg.value("loss#include_background", True))}
    if cfg.has("lr_scheduler#_target_") and _short_target(cfg, "lr_scheduler") == "StepLR":
        fields["lr_step_epochs"] = int(cfg.value("lr_scheduler#step_size"))
    for target, key in cfg.transforms("train#random_transforms", "train#preprocessing"):
        if target == "RandCropByPosNegLabeld":
            fields["crop_size"] = tuple(int(s) for s in cfg.value(f"{key}#spatial_size"))
            pos, neg = float(cfg.value(f"{key}#pos", 1.0)), float(cfg.value(f"{key}#neg", 1.0))
            fields["crop_ratios"] = (neg,) + (pos / max(1, num_classes - 1),) * (num_classes - 1)
        elif target == "RandCropByLabelClassesd":
            fields["crop_size"] = tuple(int(s) for s in cfg.value(f"{key}#spatial_size"))
            ratios = cfg.value(f"{key}#ratios", None)
            if ratios is not None:
                fields["crop_ratios"] = tuple(float(r) for r in ratios)
    return TrainRecipe(**fields)


_SLUG = re.compile(r"[^A-Za-z0-9_]+")


def read_bundle(path: str | Path) -> ZooBundle:
    """Read a bundle directory (BundleError, naming the file, for anything that cannot be served)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    infer_path = _config_file(root, "inference", required=True)
    meta, labels = _metadata(root / "configs" / "metadata.json")
    infer = _Config(infer_path, root)
    net = _network(infer, root, 1 + len(labels))
    recipe = None
    train_path = _config_file(root, "train", required=False)
    if train_path is not None:
        recipe = _recipe(_Config(train_path, root), 1 + len(labels))
    name = _SLUG.sub("_", root.name).strip("_") or "bundle"
    return ZooBundle(root=root, name=name, title=str(meta.get("name", root.name)), version=str(meta.get("version", "")),
                     labels=labels, weights=str(root / "models" / "model.pt"), recipe=recipe, **net,
                     **_preprocessing(infer), **_inferer(infer))


def bundle_dirs(value: str | None) -> list[str]:
    """``--conf bundle``: one directory, or several separated by commas (``--conf`` keeps one value per key)."""
    return [p.strip() for p in str(value or "").split(",") if p.strip()]
