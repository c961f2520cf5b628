"""Every ``--conf KEY VALUE`` option of the app, in one table: documentation data, read by nobody at run time.

``scripts/make_reference.py`` writes ``docs/reference/configuration.md`` from :data:`OPTIONS` and
:data:`SECTIONS`; ``tests/test_docs.py`` fails when an option the code reads (``conf.get("name"``, ``conf["name"]``,
``"name" in conf``, or ``conf_prefix + "name"``, in ``lib/`` and ``apps/``) is missing here, or when the committed
reference differs from what the generator writes. The code reads its options where it always did
(:mod:`lib.configs.segmentation`, :mod:`lib.configs.interactive`, ``apps/dints_pancreas/main.py``,
:mod:`lib.server.install`, :mod:`lib.server.authentication`, :mod:`lib.server.uploads`, :mod:`lib.trainers.auto`);
change a default there and here together.

``default`` is what the user would write on the command line (or, in words, what happens without the option);
``meaning`` is Markdown, and its links are relative to ``docs/reference/``.
"""

from __future__ import annotations

from typing import NamedTuple


class Option(NamedTuple):
    name: str
    default: str
    section: str
    meaning: str


# (key, title, one-line introduction) in the order the reference lists them
SECTIONS: list[tuple[str, str, str]] = [
    ("model", "Model and input",
     "What is segmented, by which network and weights, and which inputs are refused before any work."),
    ("interactive", "Interactive model",
     "The click model `deepedit_<task>` ([design](../explanation/design.md#interactive-annotation)). It shares the "
     "automatic model's task, profile, window, limits and labelled images; it always runs the DiNTS network eagerly, "
     "so `network`, `backend` and `background_compile` do not apply to it."),
    ("prompts", "Prompts", "The class-agnostic prompt models (points, box, scribbles)."),
    ("pacs", "PACS", "With `--studies http(s)://.../dicom-web` ([PACS guide](../getting-started/pacs.md))."),
    ("server", "Server", "Memory, sessions and what `/info` tells the clients."),
    ("speed", "Inference speed",
     "Backends and the CPU fast path ([design](../explanation/design.md#fast-inference), "
     "[GPUs](../how-to/gpu.md))."),
    ("training", "Training", "Automatic retraining ([training guide](../how-to/train.md))."),
    ("active", "Active learning",
     "Background uncertainty scoring and *Next Sample* ([design](../explanation/design.md#active-learning))."),
    ("security", "Security and uploads", "Who may call the server and how much it accepts ([security](../how-to/security.md))."),
]

OPTIONS: list[Option] = [
    # ---- model and input -------------------------------------------------------------------------------
    Option("task", "`pancreas`", "model",
           "what is segmented: `pancreas` (labels `pancreas: 1`, `tumor: 2`) or `spleen` (`spleen: 1`); "
           "see [other tasks and networks](../how-to/tasks-and-networks.md)"),
    Option("network", "`dints`", "model",
           "`dints` or `unet` (the seed bundle's UNet); the model is named `<network>_<task>`"),
    Option("profile", "`gpu` with CUDA, else `cpu`", "model",
           "network size, model spacing and sliding window ([profiles](../explanation/design.md#models-and-profiles))"),
    Option("model_dir", "`model/` of the repository", "model",
           "folder of architecture files, weights, the train/validation split, training logs and compiled engines"),
    Option("arch_file", "the profile's: `dints_pancreas_cpu_arch.pth`; `arch_code.pth` or a single `search_code_*.pt` for `gpu`",
           "model", "DiNTS architecture-code file, relative to `model_dir` or absolute"),
    Option("model_file", "`pretrained_<network>_<task>_<profile>.pt`", "model",
           "starting weights of the automatic model, relative to `model_dir` or absolute (`dints_pancreas`: the shipped "
           "`pretrained_dints_pancreas_cpu.pt`; on `gpu` the [bundle's](../how-to/model-zoo-bundle.md) `model.pt`)"),
    Option("use_pretrained_only", "`false`", "model",
           "`true`: always serve `model_file` and ignore weights published by training"),
    Option("roi_size", "the profile's (`96,96,96`)", "model", "sliding-window size in voxels, e.g. `96,96,96`"),
    Option("spacing", "the task's for the profile", "model", "model spacing in mm, e.g. `2,2,2`"),
    Option("sw_batch_size", "the profile's", "model", "sliding windows per forward pass"),
    Option("sw_overlap", "the profile's", "model", "sliding-window overlap, 0..0.95"),
    Option("channel_mul", "the profile's", "model", "DiNTS width multiplier; must match the weights"),
    Option("max_voxels", "`400000000`", "model",
           "refuse (413) an input with more voxels than this, in the file or after resampling to the model spacing; "
           "checked from the header before the voxels are read"),
    Option("check_hu", "`true`", "model",
           "refuse (422) images whose intensities are not Hounsfield units (no air or fat below -300 HU, or no soft "
           "tissue above 0 HU)"),
    Option("max_sw_batch_size", "`64`", "model", "largest `sw_batch_size` a request may ask for (400 above it or below 1)"),
    Option("max_windows", "`2000`", "model",
           "largest number of sliding windows one request may run (400 above it: lower `sw_overlap`); the `cpu` profile "
           "needs 36 for a 512x512x300 CT, the `gpu` profile at overlap 0.625 about 650"),
    Option("min_component_fraction", "`0.25`", "model",
           "after the softmax, drop every connected foreground component (all labels together) smaller than this "
           "fraction of the largest; `0` keeps everything, `1` only the largest; a request may override it "
           "(400 outside 0..1)"),
    # ---- interactive model -----------------------------------------------------------------------------
    Option("interactive", "`true`", "interactive",
           "serve and train `deepedit_<task>` beside the automatic model; `false` leaves it out"),
    Option("interactive_model_file", "`pretrained_deepedit_<task>_<profile>.pt`", "interactive",
           "its starting weights, relative to `model_dir` or absolute"),
    Option("guidance_sigma_mm", "`5`", "interactive",
           "Gaussian sigma (mm) of a click's guidance channel; the shipped weights were trained with 5"),
    Option("click_cache_mb", "`1024`", "interactive",
           "memory for the per-image bases (preprocessed volume and automatic answer: 125 MB for a 512x512x181 CT) "
           "and the per-click-set answers (about 7 MB there after 5 clicks), together; least recently used go first"),
    Option("click_model", "`walker`", "interactive",
           "how points are answered: `walker` (the image decides, random walker; the network gives only the automatic "
           "answer) or `network` (one DiNTS window per new click with DeepEdit guidance)"),
    Option("click_scope", "`connected`", "interactive",
           "with `click_model network`: `connected` (only changes connected to the click are kept) or `window` "
           "(everything the click's blended window changes)"),
    Option("boundary_refine", "`false`", "interactive",
           "`true`: re-decide the organ's surface voxels on the image's own grid with the boundary refiner; only on "
           "spacings it was fitted on (1.6-2.4 mm in-plane, 2.4-5.0 mm slices); off by default because it learnt the "
           "phantoms' labelling rule ([why](../explanation/design.md#the-boundary-refiner))"),
    Option("boundary_refiner_file", "`boundary_refiner_<task>_<profile>.pt`", "interactive",
           "the refiner's weights, relative to `model_dir` or absolute; a missing or unreadable file turns refinement "
           "off (logged) and the network answers alone"),
    # ---- prompts ---------------------------------------------------------------------------------------
    Option("prompts", "`true`", "prompts",
           "serve `prompt_organ` (points, box) and `prompt_scribbles` (strokes); no weights, no training; `false` "
           "leaves them out"),
    # ---- PACS ------------------------------------------------------------------------------------------
    Option("dicomweb_refresh_seconds", "`10`", "pacs",
           "how old the cached series list and label index may get before the PACS is asked again (MONAI Label's own "
           "cache: 2 hours); a label saved through the app is seen at once"),
    # ---- server ----------------------------------------------------------------------------------------
    Option("malloc_arena_max", "`2`", "server",
           "glibc malloc arenas of the server process (`0`: glibc's default, 8 per core); fewer arenas keep the "
           "resident memory of concurrent inferences lower ([figures](../benchmarks.md#memory-and-malloc-arenas))"),
    Option("session_max_count", "`20`", "server",
           "live sessions (`PUT /session/`: Slicer's upload of a volume not in the datastore); one more is a 503 "
           "before its upload is read"),
    Option("session_max_per_user", "`5`", "server",
           "with authentication on, live sessions per user (one more: 429); with it off only `session_max_count` "
           "applies"),
    Option("session_max_mb", "`1024`", "server",
           "largest session upload, all files together: written to disk as it arrives and cut off with 413 the "
           "moment it passes this"),
    Option("session_idle_seconds", "`1800`", "server",
           "a session not inferred on for this long expires (files removed; a request naming it gets 404 and Slicer "
           "uploads again); MONAI Label's `MONAI_LABEL_SESSION_EXPIRY` stays an upper bound"),
    Option("background_position", "`last`", "server",
           "where `/info`'s `labels` list `background`: `last` (as MONAI Label's sample apps; 3D Slicer's numbering "
           "then agrees with its `idx`) or `first` (a label both numberings fit differently, e.g. only a tumour, is "
           "refused with 422); another value stops the start-up"),
    # ---- inference speed -------------------------------------------------------------------------------
    Option("backend", "`auto`", "speed",
           "`auto`, `torch`, `amp`, `compile`, `aot`, `torchscript` or `tensorrt` "
           "([backends](../how-to/gpu.md#backends)); a request may override it with `{\"backend\": ...}`"),
    Option("background_compile", "`true`", "speed",
           "on the CPU, `auto` builds the network's compiled package (`aot`) in a low-priority process at start-up "
           "and after new weights appear, runs eagerly until it is there, then uses it; `false`: `auto` stays eager "
           "on the CPU"),
    Option("trt_precision", "`fp16`", "speed", "TensorRT precision, `fp16` or `fp32`"),
    Option("trt_max_batch", "`8`", "speed", "TensorRT dynamic batch range is 1..N"),
    Option("engine_dir", "`<model_dir>/engines`", "speed",
           "cache of TorchScript and TensorRT files and compiled CPU packages (`.pt2`)"),
    Option("fast_path", "`true`", "speed",
           "skip air-only windows and, on large grids, run only the windows near a coarse pass's finding; the label "
           "equals the full sliding window's; `false` runs every window"),
    Option("fine_overlap", "the profile's overlap", "speed", "overlap of the fast path's sliding window"),
    Option("fast_margin_mm", "`24`", "speed", "margin around the coarse pass's finding inside which windows are run"),
    Option("num_threads", "`0` (torch's default)", "speed", "torch CPU threads for inference"),
    # ---- training --------------------------------------------------------------------------------------
    Option("auto_train_after", "`0` (off)", "training",
           "start training the `<network>_<task>` model by itself after N new `final` labels (one more run is queued "
           "while one runs)"),
    Option("auto_train_params", "`{}`", "training",
           "JSON request parameters for those runs, e.g. `'{\"epochs\": 50}'`"),
    # ---- active learning -------------------------------------------------------------------------------
    Option("auto_scoring", "`true`", "active",
           "score unlabelled images in the background at start-up, after new labels and after a new model"),
    Option("scoring_watch_seconds", "`10`", "active",
           "how often the server looks for newly published weights to rescore with (`0`: never)"),
    Option("scoring_samples", "`4`", "active", "test-time-augmentation samples per image"),
    Option("scoring_max_shift", "`4`", "active", "largest random shift of a sample, in voxels of the model grid"),
    Option("scoring_flips", "`false`", "active", "also flip samples (off: left/right anatomy is a cue the model uses)"),
    Option("scoring_tumor_weight", "`1.0`", "active",
           "weight of the tumour's uncertainty against the organ's in the combined score"),
    Option("scoring_spacing", "the profile's spacing", "active", "grid the scoring runs on (coarser is cheaper)"),
    Option("scoring_threads", "`1`", "active", "torch threads of the background scoring process"),
    Option("scoring_nice", "`10`", "active", "niceness of the background scoring process, so that `/infer` keeps the CPU"),
    Option("al_reserve_seconds", "`3600`", "active",
           "an image handed out by *Next Sample* is not handed to anyone else for this long"),
    # ---- security and uploads --------------------------------------------------------------------------
    Option("auth_tokens", "none: authentication off unless `MONAI_LABEL_AUTH_ENABLE=true`", "security",
           "a token file (one line per person: name, role, SHA-256 of the token; made by "
           "`python -m lib.server.token_file add FILE NAME ROLE`); every route but the viewer's files, the API page "
           "and `/auth/` then needs `Authorization: Bearer <token>`; the file is read again when it changes"),
    Option("auth_timeout_seconds", "`3`", "security",
           "with an identity provider: how long fetching its keys or a password-grant token may take; a failed fetch "
           "is remembered for 30 s"),
    Option("allowed_hosts", "`localhost`, `127.0.0.1`, `::1`, the machine's names and the `--host` address", "security",
           "comma-separated names the server may be reached by (the `Host` header); any other gets 400 (DNS "
           "rebinding); `*` allows any, only behind a reverse proxy that checks it"),
    Option("cors_origins", "none", "security",
           "comma-separated web origins (e.g. `https://viewer.example.org`) whose pages may call the server from a "
           "browser; requests from every other site get 403, whatever their method"),
    Option("max_upload_mb", "`4096`", "security",
           "largest request body for images, sessions, inference uploads and weights (413 before or while it arrives)"),
    Option("max_label_upload_mb", "`1024`", "security", "largest label upload (`PUT /datastore/label`)"),
    Option("upload_idle_seconds", "`60`", "security", "a request body that stops arriving for this long gets 408"),
    Option("upload_min_kbps", "`10`", "security",
           "a request body arriving slower than this (KB/s, averaged once `upload_idle_seconds` have passed) gets 408"),
    Option("header_timeout_seconds", "`10`", "security",
           "a connection that has not sent complete request headers by then is closed"),
]


def by_name() -> dict[str, Option]:
    return {option.name: option for option in OPTIONS}
