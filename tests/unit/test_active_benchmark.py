"""``benchmarks/active_learning.py`` runs end to end and prints both learning curves (tiny sizes)."""

from __future__ import annotations

import json


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
