"""``benchmarks/active_learning.py`` runs end to end and prints both learning curves (tiny sizes)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # runs the benchmark end to end: a heavier check
def test_benchmark_prints_both_curves(tmp_path, capsys):
    from benchmarks.active_learning import main

    rc = main(["--quick", "--seeds", "0", "--pool", "3", "--heldout", "1", "--rounds", "1", "--init-steps", "3",
               "--steps", "2", "--samples", "2", "--threads", "2", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "pancreas Dice" in out and "tumor Dice" in out and "AUC(uncertainty) - AUC(random)" in out
    for strategy in ("uncertainty", "random"):
        assert any(line.strip().startswith(strategy) for line in out.splitlines())
    record = json.loads((tmp_path / "active_learning_quick.json").read_text())
    assert set(record["summary"]["strategies"]) == {"uncertainty", "random"}
    assert record["summary"]["strategies"]["random"]["labelled"] == [2, 3]
    assert (tmp_path / "active_learning_quick.png").stat().st_size > 0


def test_strategies_are_compared_with_foreground_aware_random_paired_and_holm_adjusted():

    from benchmarks.active_learning import BASELINE, holm, paired_tests

    # Holm: the smallest p times 3, the next times 2 (never below the one before), the largest times 1
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    per_seed = {BASELINE: [0.50, 0.52, 0.48, 0.51, 0.49], "better": [0.56, 0.57, 0.55, 0.58, 0.55],
                "same": [0.50, 0.53, 0.47, 0.51, 0.49]}
    summary = {"strategies": {s: {m: {"auc_per_seed": v} for m in ("pancreas", "tumor", "mean")} for s, v in per_seed.items()}}
    rows = paired_tests(summary, list(per_seed))["pancreas"]
    assert BASELINE not in rows and rows["better"]["wins"] == 5 and rows["better"]["mean"] == pytest.approx(0.062)
    assert rows["better"]["p_holm"] < 0.01 < rows["same"]["p_holm"]
    assert rows["better"]["p_holm"] >= rows["better"]["p"]  # the adjustment never makes a test more significant


def _record(seeds, steps=80, strategies=("random_fg", "bald")):
    runs = []
    for s in seeds:
        curves = {}
        for k, name in enumerate(strategies):
            curve = [{"labelled": n, "pancreas": 0.1 * n + 0.01 * k + 0.001 * s, "tumor": 0.01 * n * k} for n in (2, 4, 6)]
            curves[name] = {"curve": curve, "picks": [], "scores": []}
        runs.append({"seed": s, "curves": curves})
    cfg = {"k": 2, "m": 2, "steps": steps}
    return {"mode": "campaign", "config": cfg, "spacing": [2.0, 2.0, 2.0], "minutes": 1.5, "runs": runs}


def test_separate_seed_runs_merge_into_one_paired_table(tmp_path, capsys):
    """A campaign run one seed per process (so a stopped run keeps its finished seeds) gives one table."""
    from benchmarks.active_learning import main

    paths = []
    for i, seeds in enumerate(([0, 1], [2], [3, 4])):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(_record(seeds)))
        paths.append(str(p))
    assert main(["--merge", *paths, "--out", str(tmp_path / "merged")]) == 0
    record = json.loads((tmp_path / "merged" / "active_learning_campaign.json").read_text())
    assert record["seeds"] == [0, 1, 2, 3, 4] and record["minutes"] == 4.5
    bald = record["summary"]["against_baseline"]["tumor"]["bald"]
    assert bald["wins"] == 5 and bald["p_holm"] < 0.01  # the fake bald is better on every seed
    assert (tmp_path / "merged" / "active_learning_campaign.png").stat().st_size > 0


def test_merge_refuses_records_of_another_configuration_or_a_seed_twice(tmp_path, capsys):
    from benchmarks.active_learning import main

    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_record([0])))
    b.write_text(json.dumps(_record([1], steps=40)))
    c.write_text(json.dumps(_record([0])))
    assert main(["--merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 2
    assert "another mode, configuration or strategy list" in capsys.readouterr().err
    assert main(["--merge", str(a), str(c), "--out", str(tmp_path / "m")]) == 2
    assert "a seed appears twice" in capsys.readouterr().err
    assert not (tmp_path / "m" / "active_learning_campaign.json").exists()
