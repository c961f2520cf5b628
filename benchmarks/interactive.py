"""How many prompts does it take? The robot user (:mod:`lib.robot_user`) against the served interactive models,
real CT first.

    python benchmarks/interactive.py --quick     # a few minutes on a 2-core CPU
    python benchmarks/interactive.py             # the figures in docs/benchmarks.md
    python benchmarks/interactive.py --latency-only   # only the 512 x 512 x 181 timings (run it on a quiet machine)

The tasks are called in process, request by request, as a client's requests reach them (each request carries
every prompt so far):

* **real CT, every organ** (``../shared/data/real-ct``: its multi-organ mask is another model's output, a
  reference, not expert truth): ``prompt_organ`` after 1..``--clicks`` robot points, the same with a *jittered*
  robot (points moved by a few mm, some across a boundary; mean of 3 seeds), and a box alone (the organ's
  bounding box). The walker's settings were chosen on spleen, left kidney, liver and gallbladder only
  (``TUNED_ON``); every other organ is held out;
* **real CT pancreas** with ``deepedit_pancreas`` as served (its network's automatic answer, then points);
* **held-out phantoms** (seeds 9500+, preset ``train``; never used for training, validation or the sample
  datastore): pancreas Dice after 0..``--clicks`` pancreas clicks with NoC@85/90/95, tumour Dice after
  0..``--tumour-clicks`` tumour clicks;
* **latency** on a 512 x 512 x 181 phantom (clinical grid): the first request and each later one, request to
  written label file, for ``deepedit_pancreas`` and for ``prompt_organ`` (whose first prompt needs no
  whole-volume pass).

``--conf KEY=VALUE`` passes app options to the interactive model (e.g. ``click_model=network``). Writes
``benchmarks/results/interactive_<mode>.json`` and its plot ``interactive_<mode>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.machine import cpu_description  # noqa: E402
from lib.data.seeds import HELD_OUT_SEED_BASE as HELDOUT_SEED_BASE  # noqa: E402

NOC_LEVELS = (0.85, 0.90, 0.95)  # NoC@85 / @90 are the field's; @95 shows what clicks add once @90 comes free
REAL_CT = REPO_ROOT.parent / "shared" / "data" / "real-ct"
MODES = {
    "quick": dict(cases=3, clicks=5, cap=8, tumour_clicks=3, latency_clicks=3),
    "full": dict(cases=10, clicks=10, cap=20, tumour_clicks=10, latency_clicks=10),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def spacing_of(affine: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0)))


def noc(curve, cap: int) -> dict:
    """NoC@85/90/95 of a Dice curve."""
    from lib.robot_user import clicks_to_reach

    return {f"noc{round(100 * x)}": clicks_to_reach(curve, x, cap) for x in NOC_LEVELS}


def click_curve(task, path: str, truth: np.ndarray, value: int, affine, n_clicks: int, cap: int, names: dict):
    """Dice of class ``value`` after 0..max(n_clicks, clicks to the highest NoC level or ``cap``) robot clicks, and
    the click times."""
    from lib.robot_user import dice, next_click

    task.cache.clear()
    label, res = task({"image": path, "result_write_to_file": False})
    curve, times, clicks = [dice(label, truth, value)], [], {}
    spacing = spacing_of(affine)
    for k in range(1, max(n_clicks, cap) + 1):
        if k > n_clicks and curve[-1] >= NOC_LEVELS[-1]:
            break
        click = next_click(label, truth, value, spacing)
        if click is None:
            curve.append(curve[-1])
            continue
        cls, point = click
        clicks.setdefault(names[cls], []).append([int(v) for v in point])
        t0 = time.perf_counter()
        label, res = task({"image": path, "result_write_to_file": False, **clicks})
        times.append(time.perf_counter() - t0)
        curve.append(dice(label, truth, value))
    return curve, times, res["inference"]


def latency(task, path: str, truth: np.ndarray, n: int, names: dict) -> dict:
    """Request-to-file time of the first request and of each click after it (label file written, as served)."""
    from lib.robot_user import next_click

    task.cache.clear()
    t0 = time.perf_counter()
    out, res = task({"image": path})
    first = time.perf_counter() - t0
    label = np.asarray(nib.load(out).dataobj)
    os.remove(out)
    times, clicks = [], {}
    for _ in range(n):
        click = next_click(label, truth, 1, spacing_of(nib.load(path).affine))
        if click is None:
            break
        clicks.setdefault(names[click[0]], []).append([int(v) for v in click[1]])
        t0 = time.perf_counter()
        out, res = task({"image": path, **clicks})
        times.append(time.perf_counter() - t0)
        label = np.asarray(nib.load(out).dataobj)
        os.remove(out)
    from lib.runtime.click_cache import image_key

    key = image_key(path, task.served.checksum())
    base = task.cache.base(key)
    states = [task.cache.start(key, s) for s in task.cache.click_sets(key)]
    cache = {"base_mb": round(base.nbytes / (1 << 20), 1) if base is not None else None,
             "click_state_mb": round(states[-1].nbytes / (1 << 20), 1) if states else None,
             "click_states": len(states), "total_mb": round(task.cache.total_bytes() / (1 << 20), 1)}
    return {"first_request_seconds": round(first, 2), "click_seconds": [round(t, 3) for t in times],
            "median_click_seconds": round(statistics.median(times), 3) if times else None, "cache": cache}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    organs = results.get("real_ct_organs") or {}
    for name, entry in organs.items():  # real CT first: the prompt model, robot user, every organ of the reference
        c = entry["curve"]
        axes[0].plot(range(len(c)), c, "-" if entry["tuned_on"] else "--", label=name + (" (tuned on)" if entry["tuned_on"] else ""))
    axes[0].axhline(0.85, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="prompts", ylabel="Dice", title="real CT, prompt_organ (vs. TotalSegmentator masks)", ylim=(0, 1))
    axes[0].legend(loc="lower right", fontsize=6)
    for ax, key, title in ((axes[1], "pancreas", "phantoms: pancreas clicks"), (axes[2], "tumour", "phantoms: tumour clicks")):
        curves = [c["curve"] for c in results["phantoms"][key]]
        if curves:
            n = min(len(c) for c in curves)
            arr = np.array([c[:n] for c in curves])
            ax.plot(range(n), arr.mean(0), "o-", label=f"phantoms (mean of {len(curves)})")
            ax.fill_between(range(n), arr.min(0), arr.max(0), alpha=0.2)
        if key == "pancreas" and results.get("real_ct"):
            c = results["real_ct"]["curve"]
            ax.plot(range(len(c)), c, "s--", label="real CT pancreas, deepedit_pancreas")
        ax.axhline(0.9 if key == "pancreas" else 0.7, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("clicks")
        ax.set_ylabel("Dice")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right")
    fig.suptitle(f"robot user; deepedit_pancreas with --conf {results.get('conf')} ({results['machine']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach", 7: "pancreas",
          4: "gallbladder", 52: "aorta", 63: "inferior_vena_cava", 19: "duodenum", 21: "urinary_bladder"}
TUNED_ON = ("spleen", "kidney_left", "liver", "gallbladder")  # the walker's settings were chosen on these alone


def jittered(point, truth_value: int, spacing, rng, shape) -> tuple[int, ...]:
    """A less careful user: the click moved by a few mm (sd 2 mm per axis, one in five by 6 mm), so some land on the
    wrong side of a boundary; the class stays what the user meant."""
    sd = 6.0 if rng.random() < 0.2 else 2.0
    moved = np.rint(np.asarray(point) + rng.normal(0.0, sd, 3) / np.asarray(spacing)).astype(int)
    return tuple(int(v) for v in np.clip(moved, 0, np.asarray(shape) - 1))


def prompt_curve(task, path: str, truth: np.ndarray, spacing, n: int, jitter_seed: int | None = None):
    """Dice after 1..n robot points on the class-agnostic prompt task (``foreground``/``background``), and the times."""
    from lib.robot_user import dice, next_click

    rng = np.random.default_rng(jitter_seed) if jitter_seed is not None else None
    pred = np.zeros(truth.shape, np.uint8)
    curve, times, fg, bg = [0.0], [], [], []
    for _ in range(n):
        click = next_click(pred, truth, 1, spacing)
        if click is None:
            curve.append(curve[-1])
            continue
        point = click[1] if rng is None else jittered(click[1], click[0], spacing, rng, truth.shape)
        (fg if click[0] == 1 else bg).append([int(v) for v in point])
        if not fg:
            curve.append(0.0)
            continue
        t0 = time.perf_counter()
        pred, _ = task({"image": path, "result_write_to_file": False, "foreground": fg, "background": bg})
        times.append(time.perf_counter() - t0)
        curve.append(dice(pred, truth, 1))
    return curve, times


def real_ct_organs(n: int) -> dict:
    """Every organ of the real CT's multi-organ reference: the prompt task with the robot and the jittered robot,
    a box alone (the organ's bounding box), and for the pancreas the default DeepEdit model (walker clicks)."""
    from lib.infers.prompt import prompt_tasks
    from lib.robot_user import dice

    real = REAL_CT / "example_ct.nii.gz"
    ref = np.asarray(nib.load(str(REAL_CT / "example_ct_totalseg_reference.nii.gz")).dataobj)
    spacing = spacing_of(nib.load(str(real)).affine)
    task = prompt_tasks()["prompt_organ"]
    out = {}
    for value, name in ORGANS.items():
        truth = (ref == value).astype(np.uint8)
        curve, times = prompt_curve(task, str(real), truth, spacing, n)
        jcurve = [np.asarray(prompt_curve(task, str(real), truth, spacing, n, jitter_seed=s)[0]) for s in range(3)]
        idx = np.argwhere(truth)
        box = [int(v) for a in range(3) for v in (idx[:, a].min(), idx[:, a].max())]
        pred, _ = task({"image": str(real), "result_write_to_file": False, "roi": box})
        out[name] = {"voxels": int(truth.sum()), "tuned_on": name in TUNED_ON, "curve": [round(d, 4) for d in curve],
                     "jittered_curve": [round(float(d), 4) for d in np.mean(jcurve, 0)], **noc(curve, n),
                     "box_only": round(dice(pred, truth, 1), 4),
                     "median_prompt_seconds": round(statistics.median(times), 3) if times else None}
        log(f"real CT {name:20s} Dice after 1/3/5/10: {[out[name]['curve'][k] for k in (1, 3, 5, n)]} jittered "
            f"{[out[name]['jittered_curve'][k] for k in (1, 3, 5, n)]} box {out[name]['box_only']}")
    return out


def prompt_latency(path: str, truth: np.ndarray, spacing, n: int) -> dict:
    """The prompt task on a new 512 x 512 x 181 image: the first prompt (reading the image included), then each later one."""
    from lib.infers.prompt import prompt_tasks

    task = prompt_tasks()["prompt_organ"]
    import tracemalloc

    tracemalloc.start()
    curve, times = prompt_curve(task, path, truth, spacing, n)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"first_prompt_seconds": round(times[0], 2) if times else None,
            "median_later_prompt_seconds": round(statistics.median(times[1:]), 3) if len(times) > 1 else None,
            "prompt_seconds": [round(t, 3) for t in times], "dice": [round(d, 4) for d in curve],
            "peak_python_mb": round(peak / (1 << 20), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model-dir", default=str(REPO_ROOT / "model"))
    ap.add_argument("--cases", type=int, default=None, help="held-out phantoms (default: 3 quick, 10 full)")
    ap.add_argument("--seed-base", type=int, default=HELDOUT_SEED_BASE,
                    help="first phantom seed (default %(default)s, the reported set; tune settings on another, e.g. 9600)")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="an app --conf option for the interactive model (e.g. click_scope=window); repeatable")
    ap.add_argument("--skip-real", action="store_true", help="leave out the real CT (e.g. while tuning)")
    ap.add_argument("--skip-latency", action="store_true", help="leave out the 512x512x181 latency run")
    ap.add_argument("--latency-only", action="store_true",
                    help="only the 512x512x181 latency of both models (to measure it on a quiet machine)")
    ap.add_argument("--replot", default=None, metavar="JSON", help="redraw the plot of a results file and stop")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/interactive_<mode>.json)")
    args = ap.parse_args(argv)
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), Path(args.replot).with_suffix(".png"))
        return 0
    mode = "quick" if args.quick else "full"
    m = dict(MODES[mode])
    if args.cases:
        m["cases"] = args.cases
    if args.latency_only:
        m["cases"], args.skip_real, args.skip_latency = 0, True, False

    from lib.clicks import click_names
    from lib.configs.interactive import InteractiveConfig
    from lib.data.phantom import make_phantom

    cfg = InteractiveConfig()
    conf = {"profile": "cpu"}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--conf wants KEY=VALUE, not {item!r}")
        conf[key.strip()] = value.strip()
    cfg.init("deepedit_pancreas", args.model_dir, conf, None)
    task = cfg.infer()["deepedit_pancreas"]
    if task.served.path() is None:
        print("no interactive weights in", args.model_dir, "(scripts/train_cpu_weights.py --interactive)")
        return 1
    names = {v: k for k, v in click_names(cfg.task.labels).items()}
    refiner = task.refiner.checksum if task.refiner is not None else None
    results = {"mode": mode, "machine": cpu_description(), "weights": task.model_info(), "boundary_refiner": refiner,
               "settings": m, "conf": conf, "seed_base": args.seed_base,
               "phantoms": {"pancreas": [], "tumour": []}}
    log(f"{results['machine']}; weights {results['weights']}; boundary refiner {refiner or 'off'}")
    if not args.skip_real and (REAL_CT / "example_ct_totalseg_reference.nii.gz").exists():
        results["real_ct_organs"] = real_ct_organs(m["clicks"])
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(m["cases"]):
            seed = args.seed_base + i
            ph = make_phantom(seed, preset="train")
            path = os.path.join(tmp, f"case{seed}.nii.gz")
            nib.save(nib.Nifti1Image(ph.image.astype(np.int16), ph.affine), path)
            curve, times, _ = click_curve(task, path, ph.label, 1, ph.affine, m["clicks"], m["cap"], names)
            entry = {"seed": seed, "shape": list(ph.image.shape), "curve": [round(d, 4) for d in curve],
                     **noc(curve, m["cap"]), "median_click_seconds": round(statistics.median(times), 3) if times else None}
            results["phantoms"]["pancreas"].append(entry)
            log(f"pancreas {seed} {ph.image.shape}: Dice {entry['curve'][:m['clicks'] + 1]} "
                + " ".join(f"NoC@{round(100 * x)} {entry[f'noc{round(100 * x)}']}" for x in NOC_LEVELS))
            if (ph.label == 2).any():
                curve, times, _ = click_curve(task, path, ph.label, 2, ph.affine, m["tumour_clicks"], m["tumour_clicks"], names)
                results["phantoms"]["tumour"].append({"seed": seed, "curve": [round(d, 4) for d in curve]})
                log(f"tumour   {seed}: Dice {[round(d, 3) for d in curve]}")
        if args.skip_latency:
            results["latency"] = {"first_request_seconds": None, "median_click_seconds": None}
        else:
            ph = make_phantom(HELDOUT_SEED_BASE + 99, preset="realistic", shape=(512, 512, 181))
            path = os.path.join(tmp, "clinical.nii.gz")
            nib.save(nib.Nifti1Image(ph.image.astype(np.int16), ph.affine), path)
            results["latency"] = {"shape": [512, 512, 181], **latency(task, path, ph.label, m["latency_clicks"], names)}
            results["prompt_latency"] = {"shape": [512, 512, 181],
                                         **prompt_latency(path, (ph.label == 1).astype(np.uint8), spacing_of(ph.affine),
                                                          m["latency_clicks"])}
            log(f"prompt latency on 512x512x181: {results['prompt_latency']}")
            log(f"latency on 512x512x181: {results['latency']}")
    real = REAL_CT / "example_ct.nii.gz"
    if args.skip_real:
        results["real_ct"] = None
    elif real.exists():
        truth = (np.asarray(nib.load(str(REAL_CT / "example_ct_pancreas_reference.nii.gz")).dataobj) > 0).astype(np.uint8)
        affine = nib.load(str(real)).affine
        curve, times, _ = click_curve(task, str(real), truth, 1, affine, m["clicks"], m["cap"], names)
        results["real_ct"] = {"file": real.name, "curve": [round(d, 4) for d in curve], **noc(curve, m["cap"]),
                              "median_click_seconds": round(statistics.median(times), 3) if times else None}
        log(f"real CT: Dice {results['real_ct']['curve']} NoC@85 {results['real_ct']['noc85']}")
    else:
        results["real_ct"] = None
        log(f"real CT skipped: {real} not found")

    pan = results["phantoms"]["pancreas"]
    tum = results["phantoms"]["tumour"]

    def mean_at(entries, k):
        vals = [e["curve"][min(k, len(e["curve"]) - 1)] for e in entries]
        return round(float(np.mean(vals)), 4) if vals else None

    results["summary"] = {
        "pancreas_dice_by_clicks": [mean_at(pan, k) for k in range(m["clicks"] + 1)],
        **{f"pancreas_noc{round(100 * x)}_mean": round(float(np.mean([e[f"noc{round(100 * x)}"] for e in pan])), 2)
           for x in NOC_LEVELS},
        "tumour_dice_by_clicks": [mean_at(tum, k) for k in range(m["tumour_clicks"] + 1)],
        "tumour_cases": len(tum),
        "median_click_seconds_512x512x181": results["latency"]["median_click_seconds"],
        "first_request_seconds_512x512x181": results["latency"]["first_request_seconds"],
    }
    log(f"summary: {json.dumps(results['summary'])}")
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / f"interactive_{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    plot(results, out.with_suffix(".png"))
    log(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
