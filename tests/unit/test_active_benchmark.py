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
