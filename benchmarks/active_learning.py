"""Simulated annotation campaign: does ``uncertainty`` sampling beat ``random`` for this model?

    python benchmarks/active_learning.py --quick            # minutes on a 2-core CPU
    python benchmarks/active_learning.py                    # 3 seeds (longer)
    python benchmarks/active_learning.py --campaign --strategies random_fg random uncertainty bald clasp_pe
    # or one seed per process (a stopped run keeps its finished seeds), then the table over all of them:
    python benchmarks/active_learning.py --campaign --seeds 3 --out results/seed3 --strategies ...
    python benchmarks/active_learning.py --merge results/seed*/active_learning_campaign.json

For every seed:

* a pool of generated phantoms (``lib.data.phantom``, preset ``train``; seeds disjoint from the shipped
  sample datastore and from the shipped weights' training set) and a fixed held-out set;
* ``k`` pool volumes start labelled (the same ones for every strategy), and a network (the ``cpu``
  profile's compact DiNTS, fresh initialisation from the seed) is trained on them for ``--init-steps``
  steps; this round-0 model is shared by all strategies;
* each round, the strategy picks ``m`` more volumes from the rest of the pool, their ground truth is
  "submitted", and the model is fine-tuned on all labelled volumes for a FIXED number of steps
  (``--steps``; fine-tuning from the current weights, as the ``dints_pancreas`` trainer does);
* after every round, Dice per class (pancreas, tumour; NaN-free means) on the held-out set.

``uncertainty`` ranks the pool with :func:`lib.scoring.tta.score_volume` (the scoring method the server
uses) under the current model; ``random`` draws uniformly (its own RNG, seeded). ``random_fg``, ``bald`` and
``clasp_pe`` (``--strategies``; not run by default) apply the rules of the server's strategies of those names to
the same scores (``bald``: the TTA committee's mutual information). Output: the learning
curves per strategy (mean +- standard deviation over seeds), the normalised area under each curve
(trapezoid over the number of labelled volumes, divided by the x range), the paired per-seed AUC
difference, a JSON record and a PNG plot.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lib.data.seeds import AL_HELD_OUT_SEED_BASE, AL_POOL_SEED_BASE, seed_range  # noqa: E402

PRESETS = {
    #        pool heldout k  m  rounds init_steps steps crop channel_mul samples val_roi
    "quick": dict(pool=8, heldout=3, k=2, m=2, rounds=2, init_steps=60, steps=30, crop=48, channel_mul=0.125,
                  samples=3, val_roi=64, seeds=[0, 1]),
    "full": dict(pool=12, heldout=4, k=2, m=2, rounds=3, init_steps=200, steps=80, crop=48, channel_mul=0.125,
                 samples=3, val_roi=64, seeds=[0, 1, 2]),
    # every strategy against the foreground-aware random baseline over 5 seeds (paired t-tests, Holm)
    "campaign": dict(pool=12, heldout=4, k=2, m=2, rounds=3, init_steps=200, steps=80, crop=48, channel_mul=0.125,
                     samples=3, val_roi=64, seeds=[0, 1, 2, 3, 4]),
}
BASELINE = "random_fg"  # what a strategy must beat (nnActive: none reliably beats foreground-aware random)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- data -----------------------------------------------------------------------------------------------
def phantom_case(seed: int, preset: str) -> dict:
    """One generated phantom as channel-less MetaTensors. The explicit ``no_channel`` marker matters with
    MONAI 1.6: without it a MetaTensor built from an (x, y, z) array records 2 spatial dims, and RandZoomd /
    RandGaussianSmoothd then fail on the 3-D crops."""
    from monai.data import MetaTensor

    from lib.data.phantom import make_phantom

    ph = make_phantom(seed, preset=preset)
    affine = torch.as_tensor(ph.affine, dtype=torch.float64)
    meta = {"original_channel_dim": "no_channel"}
    return {
        "image": MetaTensor(torch.from_numpy(np.asarray(ph.image, dtype=np.float32)), affine=affine, meta=dict(meta)),
        "label": MetaTensor(torch.from_numpy(np.asarray(ph.label, dtype=np.uint8)), affine=affine.clone(), meta=dict(meta)),
        "seed": seed,
    }


def load_cases(seeds, spacing, crop, crop_masks: bool, preset: str):
    from lib.task import get_task
    from lib.trainers.phantom_fit import prepare

    return prepare(get_task("pancreas"), (phantom_case(s, preset) for s in seeds), spacing, (crop,) * 3, crop_masks=crop_masks,
                   progress=False)


# ---- strategies -----------------------------------------------------------------------------------------
STRATEGIES = ("uncertainty", "random", "random_fg", "bald", "clasp_pe")


def pick(strategy: str, net, pool: dict[int, dict], unlabelled: list[int], m: int, rng: np.random.Generator,
         spacing, samples: int, log_scores: list, state: dict | None = None, n_labelled: int = 0,
         seed: int = 0) -> list[int]:
    """``m`` pool indices by ``strategy``. ``random_fg``, ``bald`` and ``clasp_pe`` use the selection rules of the
    server's strategies (:mod:`lib.activelearning.scored_strategies`) on the same :func:`score_volume` results; ``state``
    carries ``clasp_pe``'s quota across rounds."""
    if strategy == "random":
        return [int(i) for i in rng.choice(unlabelled, size=min(m, len(unlabelled)), replace=False)]
    if strategy in ("uncertainty", "random_fg", "bald", "clasp_pe"):
        from lib.activelearning.scored_strategies import ClaspQuota, clasp_pick, predicted_tumour
        from lib.scoring.tta import TTAOptions, score_volume

        opts = TTAOptions(samples=samples)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        res = {i: {**score_volume(net, pool[i]["image"], spacing, opts), "voxel_ml": voxel_ml} for i in unlabelled}
        scores = {i: r["bald" if strategy == "bald" else "score"] for i, r in res.items()}
        tumour = {i for i, r in res.items() if predicted_tumour(r)}
        log_scores.append({str(k): round(v, 4) for k, v in scores.items()} if strategy == "uncertainty" else
                          {str(k): {"bald" if strategy == "bald" else "score": round(v, 4), "tumor": k in tumour}
                           for k, v in scores.items()})
        if strategy in ("uncertainty", "bald"):
            return sorted(unlabelled, key=lambda i: (-scores[i], i))[:m]
        left, chosen = list(unlabelled), []
        if strategy == "random_fg":  # ForegroundRandomStrategy's rule, with the campaign's RNG
            for _ in range(min(m, len(left))):
                t = [i for i in left if i in tumour]
                o = [i for i in left if i not in tumour]
                group = t if t and (not o or rng.random() < 0.5) else o
                chosen.append(int(rng.choice(group)))
                left.remove(chosen[-1])
            return chosen
        quota = (state if state is not None else {}).setdefault("quota", ClaspQuota())
        keys = {str(i): i for i in left}
        for _ in range(min(m, len(left))):
            r = clasp_pick([str(i) for i in left], {str(i): scores[i] for i in left}, {str(i) for i in tumour},
                           quota, n_labelled + len(chosen), seed)
            chosen.append(keys[r["id"]])
            left.remove(chosen[-1])
        return chosen
    raise ValueError(strategy)


# ---- one campaign -----------------------------------------------------------------------------------------
def campaign(seed: int, strategies: list[str], cfg: dict, heldout: list[dict], spacing) -> dict:
    from monai.utils import set_determinism

    from lib.networks.compact_arch import compact_cpu_arch
    from lib.networks.factory import build_dints
    from lib.task import get_task
    from lib.trainers.phantom_fit import fit, validate

    task = get_task("pancreas")

    pool_seeds = list(seed_range(AL_POOL_SEED_BASE + 1000 * seed, cfg["pool"]))
    t0 = time.time()
    pool = dict(enumerate(load_cases(pool_seeds, spacing, cfg["crop"], True, cfg["preset"])))
    log(f"seed {seed}: pool of {len(pool)} phantoms ready in {time.time() - t0:.0f}s")
    rng0 = np.random.default_rng(seed)
    initial = sorted(int(i) for i in rng0.choice(list(pool), size=cfg["k"], replace=False))

    def train(net, labelled, steps, tag):
        set_determinism(seed=seed * 7919 + len(labelled))
        t = time.time()
        res = fit(net, task, [pool[i] for i in labelled], (), crop=cfg["crop"], batch=2, minutes=1e6, max_steps=steps,
                  lr=cfg["lr"], log=lambda _m: None)
        log(f"seed {seed} {tag}: trained {res.steps} steps on {len(labelled)} volumes in {time.time() - t:.0f}s")

    def evaluate(net):
        d = validate(net, heldout, roi=(cfg["val_roi"],) * 3, overlap=0.25)
        return {k: float(v) for k, v in d.items()}

    torch.manual_seed(seed)
    net0 = build_dints(compact_cpu_arch(), cfg["channel_mul"], task.num_classes)
    train(net0, initial, cfg["init_steps"], "round 0")
    d0 = evaluate(net0)
    log(f"seed {seed} round 0 ({len(initial)} labelled): {d0}")
    out = {"seed": seed, "initial": initial, "pool_seeds": pool_seeds, "curves": {}}
    for strategy in strategies:
        net = copy.deepcopy(net0)
        labelled = list(initial)
        rng = np.random.default_rng(10_000 + seed)
        curve = [{"labelled": len(labelled), **d0}]
        picks, scores_log, state = [], [], {}
        for r in range(1, cfg["rounds"] + 1):
            unlabelled = [i for i in pool if i not in labelled]
            if not unlabelled:
                break
            t = time.time()
            chosen = pick(strategy, net, pool, unlabelled, cfg["m"], rng, spacing, cfg["samples"], scores_log,
                          state=state, n_labelled=len(labelled), seed=seed)
            log(f"seed {seed} {strategy} round {r}: picked {chosen} in {time.time() - t:.0f}s")
            picks.append(chosen)
            labelled += chosen
            train(net, labelled, cfg["steps"], f"{strategy} round {r}")
            d = evaluate(net)
            curve.append({"labelled": len(labelled), **d})
            log(f"seed {seed} {strategy} round {r} ({len(labelled)} labelled): {d}")
        out["curves"][strategy] = {"curve": curve, "picks": picks, "scores": scores_log}
    return out


# ---- summary ----------------------------------------------------------------------------------------------
def auc(xs, ys) -> float:
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2 or xs[-1] == xs[0]:
        return float(ys.mean())
    return float(np.trapezoid(ys, xs) / (xs[-1] - xs[0])) if hasattr(np, "trapezoid") else float(np.trapz(ys, xs) / (xs[-1] - xs[0]))


METRICS = ("pancreas", "tumor", "mean")


def _value(point: dict, metric: str) -> float:
    if metric == "mean":
        vals = [point[k] for k in ("pancreas", "tumor") if point[k] == point[k]]
        return float(np.mean(vals)) if vals else float("nan")
    return float(point[metric]) if point[metric] == point[metric] else 0.0


def summarise(runs: list[dict], strategies: list[str]) -> dict:
    summary: dict = {"strategies": {}, "paired_auc_difference": {}}
    for s in strategies:
        curves = [r["curves"][s]["curve"] for r in runs if s in r["curves"]]
        xs = [p["labelled"] for p in curves[0]]
        entry = {"labelled": xs}
        for metric in METRICS:
            ys = np.array([[_value(p, metric) for p in c] for c in curves])
            aucs = np.array([auc(xs, y) for y in ys])
            entry[metric] = {"mean": ys.mean(0).round(4).tolist(), "std": ys.std(0).round(4).tolist(),
                             "auc_mean": round(float(aucs.mean()), 4), "auc_std": round(float(aucs.std()), 4),
                             "auc_per_seed": aucs.round(4).tolist()}
        summary["strategies"][s] = entry
    if BASELINE in strategies and len(runs) >= 2:
        summary["against_baseline"] = paired_tests(summary, strategies)
    if "uncertainty" in strategies and "random" in strategies:
        for metric in METRICS:
            diff = np.array(summary["strategies"]["uncertainty"][metric]["auc_per_seed"]) - np.array(
                summary["strategies"]["random"][metric]["auc_per_seed"])
            summary["paired_auc_difference"][metric] = {
                "mean": round(float(diff.mean()), 4), "std": round(float(diff.std()), 4),
                "per_seed": diff.round(4).tolist(), "uncertainty_wins": int((diff > 0).sum()), "seeds": int(len(diff))}
    return summary


def holm(pvalues: dict) -> dict:
    """Holm's step-down adjustment of a family of p-values (keys kept)."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    adjusted, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[key]))
        adjusted[key] = running
    return adjusted


def paired_tests(summary: dict, strategies: list[str]) -> dict:
    """Per metric, every strategy's AUBC against the baseline's, paired by seed: the mean difference, a two-sided
    paired t-test (a Wilcoxon test cannot go below p = 0.0625 with 5 seeds) and Holm's adjustment over the
    strategies compared."""
    from scipy import stats

    out = {}
    for metric in METRICS:
        base = np.array(summary["strategies"][BASELINE][metric]["auc_per_seed"])
        rows, raw = {}, {}
        for s in strategies:
            if s == BASELINE:
                continue
            aubc = np.array(summary["strategies"][s][metric]["auc_per_seed"])
            diff = aubc - base
            p = float(stats.ttest_rel(aubc, base).pvalue) if np.any(diff != diff[0]) else (0.0 if diff[0] else 1.0)
            raw[s] = 1.0 if p != p else p
            rows[s] = {"mean": round(float(diff.mean()), 4), "std": round(float(diff.std()), 4),
                       "wins": int((diff > 0).sum()), "seeds": int(len(diff)), "p": round(raw[s], 4)}
        for s, p in holm(raw).items():
            rows[s]["p_holm"] = round(p, 4)
        out[metric] = rows
    return out


def print_summary(summary: dict, seeds) -> None:
    print()
    print(f"Active-learning simulation, {len(seeds)} seeds ({', '.join(map(str, seeds))}); Dice on held-out phantoms, "
          "mean +- std over seeds")
    for metric in METRICS:
        print(f"\n  {metric} Dice" + (" (mean of pancreas and tumour)" if metric == "mean" else ""))
        first = next(iter(summary["strategies"].values()))
        print("    labelled      " + "".join(f"{x:>14d}" for x in first["labelled"]) + "      AUC (norm.)")
        for s, e in summary["strategies"].items():
            m = e[metric]
            row = "".join(f"{mu:>8.3f}+-{sd:<5.3f}" for mu, sd in zip(m["mean"], m["std"]))
            print(f"    {s:<13} {row}   {m['auc_mean']:.3f} +- {m['auc_std']:.3f}")
    for metric, rows in (summary.get("against_baseline") or {}).items():
        print(f"\n  {metric}: AUBC(strategy) - AUBC({BASELINE}), paired by seed (t-test, Holm over strategies)")
        for s, d in rows.items():
            print(f"    {s:<13} {d['mean']:+.4f} +- {d['std']:.4f}  better in {d['wins']} of {d['seeds']} seeds  "
                  f"p {d['p']:.3f}  Holm {d['p_holm']:.3f}")
    if summary["paired_auc_difference"]:
        print("\n  AUC(uncertainty) - AUC(random), paired by seed:")
        for metric, d in summary["paired_auc_difference"].items():
            print(f"    {metric:<9} {d['mean']:+.3f} +- {d['std']:.3f}  (uncertainty better in {d['uncertainty_wins']} "
                  f"of {d['seeds']} seeds; per seed {d['per_seed']})")


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colours = {"uncertainty": "tab:red", "random": "tab:blue", "first": "tab:green", "random_fg": "tab:purple",
               "bald": "tab:orange", "clasp_pe": "tab:brown"}
    for ax, metric in zip(axes, METRICS):
        for s, e in summary["strategies"].items():
            xs, m = np.array(e["labelled"]), e[metric]
            mu, sd = np.array(m["mean"]), np.array(m["std"])
            ax.plot(xs, mu, "o-", color=colours.get(s), label=f"{s} (AUC {m['auc_mean']:.3f})")
            ax.fill_between(xs, mu - sd, mu + sd, color=colours.get(s), alpha=0.15)
        ax.set_xlabel("labelled volumes")
        ax.set_ylabel(f"{metric} Dice (held-out)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small pool, few steps, 2 seeds: minutes on CPU")
    ap.add_argument("--campaign", action="store_true",
                    help=f"5 seeds, every strategy against {BASELINE} (paired t-tests with Holm): hours on 2 cores")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--strategies", nargs="+", default=["uncertainty", "random"], choices=list(STRATEGIES))
    for key in ("pool", "heldout", "k", "m", "rounds", "init_steps", "steps", "crop", "samples", "val_roi"):
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    ap.add_argument("--channel-mul", type=float, default=None)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--preset", default="train", help="phantom preset (lib.data.phantom)")
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    ap.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                    help="summarise the records of separate runs (one seed each, same mode and strategies) together")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))

    mode = "quick" if args.quick else "campaign" if args.campaign else "full"
    cfg = dict(PRESETS[mode])
    for key in ("pool", "heldout", "k", "m", "rounds", "init_steps", "steps", "crop", "samples", "val_roi", "channel_mul"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    cfg["lr"], cfg["preset"] = args.lr, args.preset
    seeds = args.seeds if args.seeds is not None else cfg.pop("seeds")
    cfg.pop("seeds", None)
    torch.set_num_threads(args.threads)

    from lib.task import get_task

    spacing = get_task("pancreas").spacing_for("cpu")
    log(f"mode {mode}: {cfg}; seeds {seeds}; strategies {args.strategies}; spacing {spacing}")
    t0 = time.time()
    heldout = load_cases(list(seed_range(AL_HELD_OUT_SEED_BASE, cfg["heldout"])), spacing, cfg["crop"], False, cfg["preset"])
    log(f"held-out set of {len(heldout)} phantoms ready in {time.time() - t0:.0f}s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        runs.append(campaign(seed, args.strategies, cfg, heldout, spacing))
        # partial record after every seed: a long run that is stopped still leaves its finished seeds
        partial = {"mode": mode, "config": cfg, "seeds_done": [r["seed"] for r in runs], "spacing": spacing,
                   "summary": summarise(runs, args.strategies), "runs": runs}
        (out / f"active_learning_{mode}.partial.json").write_text(json.dumps(partial, indent=1))
        log(f"seed {seed} done; partial summary in {out / f'active_learning_{mode}.partial.json'}")
    summary = summarise(runs, args.strategies)
    print_summary(summary, seeds)
    record = {"mode": mode, "config": cfg, "seeds": seeds, "spacing": spacing, "minutes": round((time.time() - t0) / 60, 1),
              "summary": summary, "runs": runs}
    (out / f"active_learning_{mode}.json").write_text(json.dumps(record, indent=1))
    title = (f"Active learning on phantoms ({mode}): start {cfg['k']}, +{cfg['m']} per round, {cfg['steps']} fine-tuning "
             f"steps per round, {len(seeds)} seeds, mean +- std")
    plot(summary, out / f"active_learning_{mode}.png", title)
    log(f"wrote {out / f'active_learning_{mode}.json'} and {out / f'active_learning_{mode}.png'} "
        f"({record['minutes']} min)")
    return 0


def merge(paths: list[str], out: Path) -> int:
    """One table over the seeds of several records, which must share mode, configuration and strategies."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    first = records[0]
    strategies = list(first["runs"][0]["curves"])
    for p, r in zip(paths, records):
        if r["mode"] != first["mode"] or r["config"] != first["config"] or list(r["runs"][0]["curves"]) != strategies:
            print(f"error: {p} was run with another mode, configuration or strategy list than {paths[0]}", file=sys.stderr)
            return 2
    runs = [run for r in records for run in r["runs"]]
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        print(f"error: a seed appears twice among the records: {sorted(seeds)}", file=sys.stderr)
        return 2
    summary = summarise(runs, strategies)
    print_summary(summary, seeds)
    mode = first["mode"]
    record = {"mode": mode, "config": first["config"], "seeds": seeds, "spacing": first["spacing"],
              "minutes": round(sum(r.get("minutes", 0.0) for r in records), 1), "merged_from": list(paths),
              "summary": summary, "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"active_learning_{mode}.json").write_text(json.dumps(record, indent=1))
    cfg = first["config"]
    title = (f"Active learning on phantoms ({mode}): start {cfg['k']}, +{cfg['m']} per round, {cfg['steps']} fine-tuning "
             f"steps per round, {len(seeds)} seeds, mean +- std")
    plot(summary, out / f"active_learning_{mode}.png", title)
    log(f"merged {len(seeds)} seeds into {out / f'active_learning_{mode}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
