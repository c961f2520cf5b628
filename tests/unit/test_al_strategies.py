"""The ``random_fg``, ``bald`` and ``clasp_pe`` next-sample strategies and the BALD score (no server; seconds).

In-memory datastores with hand-written ``dints_uncertainty`` entries; every random draw uses a fixed seed, so the
statistical assertions below are deterministic (they cannot flake) and their tolerances only say how far from the
design rate a correct implementation may land for these seeds.
"""

from __future__ import annotations

import random
import threading

import nibabel as nib
import numpy as np
import pytest
import torch

from lib.activelearning.scored_strategies import (BaldStrategy, ClaspPEStrategy, ClaspQuota, ForegroundRandomStrategy,
                                                  clasp_temperature, power_sample, predicted_tumour)
from lib.activelearning.strategies import Reservations, UncertaintyStrategy
from lib.scoring.dints_uncertainty import INFO_KEY, DiNTSUncertaintyScoring
from lib.scoring.tta import TTAOptions, mutual_information, uncertainty_from_samples
from support.fake_datastore import FakeDatastore as SharedFakeDatastore

MODEL = "m1"
NEW_STRATEGIES = (ForegroundRandomStrategy, BaldStrategy, ClaspPEStrategy)


class FakeDatastore(SharedFakeDatastore):
    """The shared stand-in, with this module's image names and score records."""

    def __init__(self, n: int, labelled=()):
        super().__init__(n, labelled, id_format="img{:02d}")

    def score(self, image_id, value, tumour_voxels=0, bald=None, model=MODEL, options=None):
        entry = {"score": value, "pancreas": value, "tumor": value, "bald": value if bald is None else bald,
                 "pancreas_voxels": 500, "tumor_voxels": tumour_voxels, "voxel_ml": 0.0125, "model": model}
        if options is not None:
            entry["options"] = options
        self.infos[image_id][INFO_KEY] = entry


def make(cls, reservations=None, seed=0, checksum=MODEL, **kw):
    return cls(lambda: checksum, reservations or Reservations(3600), seed=seed, **kw)


def scored_pool(n=20, tumour=(), labelled=(), seed=0) -> FakeDatastore:
    """``n`` images with distinct scores; ``tumour`` ones predicted to hold a tumour (40 voxels = 0.5 ml)."""
    ds = FakeDatastore(n, labelled)
    rng = np.random.default_rng(seed)
    for k, i in enumerate(ds.infos):
        ds.score(i, round(float(rng.uniform(0.05, 0.95)), 4), tumour_voxels=40 if k in tumour else 0)
    return ds


# ---- every strategy: unlabelled only, one annotator per image, fallback -----------------------------------------
@pytest.mark.parametrize("cls", NEW_STRATEGIES)
def test_hands_out_only_unlabelled_images(cls):
    ds = scored_pool(8, tumour=(0, 3), labelled={"img00", "img01", "img02"})
    for i in ("img00", "img01", "img02"):  # labelled ones score highest and hold tumours: still never offered
        ds.score(i, 0.99, tumour_voxels=400, bald=0.99)
    s = make(cls, Reservations(0))  # no reservation: every call chooses among all unlabelled images
    seen = {s({"strategy": s.name, "client_id": f"c{k}"}, ds)["id"] for k in range(60)}
    assert seen and seen <= set(ds.get_unlabeled_images())
    res = s({"strategy": s.name}, ds)
    assert res["selected_by"] == s.name and res["model"] == MODEL and "fallback" not in res
    ds.labelled = set(ds.infos)
    empty = s({"strategy": s.name}, ds)
    assert empty["id"] is None and empty["remaining"] == 0 and "Nothing left to label" in empty["message"]


@pytest.mark.parametrize("cls", NEW_STRATEGIES)
def test_never_the_same_image_to_two_annotators(cls):
    ds = scored_pool(6, tumour=(1, 4))
    s = make(cls)
    ids = [s({"strategy": s.name, "client_id": f"annotator_{k}"}, ds)["id"] for k in range(6)]
    assert sorted(ids) == sorted(ds.infos)  # six annotators, six different images
    again = s({"strategy": s.name, "client_id": "late"}, ds)
    assert again["id"] == ids[0] and "note" in again  # all out: the one handed out longest ago, said so


def test_simultaneous_requests_across_strategies_get_different_images():
    ds = scored_pool(6, tumour=(2,))
    shared = Reservations(3600)  # one window for every strategy of the server, as SegmentationConfig.strategy
    strategies = [make(cls, shared) for cls in NEW_STRATEGIES] + [UncertaintyStrategy(lambda: MODEL, shared)]
    results = []
    threads = [threading.Thread(target=lambda s=s, c=f"{s.name}_{k}": ask(s, c)) for s in strategies for k in range(2)][:6]
    barrier = threading.Barrier(len(threads))

    def ask(strategy, client):
        barrier.wait()
        results.append(strategy({"strategy": strategy.name, "client_id": client}, ds)["id"])

    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6 and len(set(results)) == 6, results


@pytest.mark.parametrize("cls", NEW_STRATEGIES)
def test_falls_back_to_random_while_scores_are_missing(cls):
    ds = FakeDatastore(5, labelled={"img00"})
    asked = []
    s = make(cls, on_not_ready=lambda: asked.append(1))
    res = s({"strategy": s.name}, ds)
    assert res["id"] in ds.get_unlabeled_images()
    assert res["fallback"] == "random" and res["selected_by"] == "random" and "not ready" in res["message"]
    assert "/scoring/dints_uncertainty" in res["message"] and asked == [1]
    # scores from another model (training published new weights since) are missing too
    for i in ds.infos:
        ds.score(i, 0.9, tumour_voxels=100, model="old")
    assert s({"strategy": s.name}, ds)["fallback"] == "random"
    # and without any weights at all
    none = make(cls, checksum=None)({"strategy": s.name}, ds)
    assert none["fallback"] == "random" and "no model weights" in none["message"]


@pytest.mark.parametrize("cls", NEW_STRATEGIES)
def test_scores_of_another_model_or_other_options_are_ignored(cls):
    ds = scored_pool(6, tumour=(0,))
    for i in ("img01", "img02", "img03", "img04", "img05"):
        ds.score(i, 0.99, tumour_voxels=400, bald=0.99, model="old")  # higher, tumour-holding, but stale
    s = make(cls, Reservations(0))
    picks = [s({"strategy": s.name}, ds) for _ in range(40)]
    assert all(r.get("fallback") is None and r["scored"] == 1 for r in picks)
    if cls is not ForegroundRandomStrategy:  # the scored strategies choose among current scores only
        assert {r["id"] for r in picks} == {"img00"}
    else:  # random_fg: stale tumour counts do not make an image tumour-predicted
        assert all(r["tumor_candidates"] == 1 for r in picks)
        assert all(r["predicted_tumor"] == (r["id"] == "img00") for r in picks)
    # a score computed with other scoring options counts as missing as well
    ds2 = FakeDatastore(3)
    for i in ds2.infos:
        ds2.score(i, 0.5, tumour_voxels=40, options="other")
    s2 = cls(lambda: MODEL, Reservations(3600), opts_hash="mine", seed=0)
    assert s2({"strategy": s2.name}, ds2)["fallback"] == "random"


# ---- random_fg -------------------------------------------------------------------------------------------------
def test_predicted_tumour_threshold():
    assert not predicted_tumour({"tumor_voxels": 0, "voxel_ml": 0.0125})
    assert not predicted_tumour({"tumor_voxels": 2, "voxel_ml": 0.0125})  # 0.025 ml: noise
    assert predicted_tumour({"tumor_voxels": 4, "voxel_ml": 0.0125})  # 0.05 ml
    assert predicted_tumour({"tumor_voxels": 3})  # no voxel size recorded: any voxel counts
    assert not predicted_tumour({})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_fg_picks_tumour_predicted_images_about_half_the_time(seed):
    # 3 of 20 images predicted to hold a tumour: plain random would pick one 15% of the time
    ds = scored_pool(20, tumour=(2, 9, 15), seed=seed)
    s = make(ForegroundRandomStrategy, Reservations(0), seed=seed)
    picks = [s({"strategy": "random_fg"}, ds) for _ in range(2000)]
    rate = np.mean([r["predicted_tumor"] for r in picks])
    assert 0.45 <= rate <= 0.55, rate  # design rate 1/2; binomial sd 0.011 at 2000 draws
    assert all(r["predicted_tumor"] == (r["group"] == "tumor") for r in picks)
    assert {r["id"] for r in picks} == set(ds.infos)  # still random over everything
    tumour_ids = [r["id"] for r in picks if r["group"] == "tumor"]
    for i in ("img02", "img09", "img15"):  # uniform within the tumour group
        assert abs(tumour_ids.count(i) / len(tumour_ids) - 1 / 3) < 0.06


def test_random_fg_without_tumour_predictions_is_uniform_and_says_so():
    ds = scored_pool(4)
    res = make(ForegroundRandomStrategy)({"strategy": "random_fg"}, ds)
    assert res["group"] == "other" and res["tumor_candidates"] == 0 and "note_groups" in res
    # partly scored: unscored images are in the "other" group, chosen among with the note about scores
    ds2 = FakeDatastore(4)
    ds2.score("img00", 0.3, tumour_voxels=40)
    s = make(ForegroundRandomStrategy, Reservations(0), seed=5)
    picks = [s({"strategy": "random_fg"}, ds2) for _ in range(400)]
    assert {r["id"] for r in picks} == set(ds2.infos) and all("note_scores" in r for r in picks)
    assert 0.42 <= np.mean([r["id"] == "img00" for r in picks]) <= 0.58


# ---- BALD ------------------------------------------------------------------------------------------------------
def committee(members: list[list[float]], shape=(2, 2, 2)) -> torch.Tensor:
    """(T, C, *shape) probabilities: member t gives every voxel the class probabilities ``members[t]``."""
    p = torch.tensor(members, dtype=torch.float32)
    return p[:, :, None, None, None].expand(*p.shape, *shape).clone()


def test_bald_is_zero_when_the_committee_agrees_and_grows_with_disagreement():
    agree = committee([[0.2, 0.5, 0.3]] * 4)
    assert torch.allclose(mutual_information(agree), torch.zeros(2, 2, 2), atol=1e-6)
    some = committee([[0.2, 0.5, 0.3], [0.3, 0.4, 0.3], [0.2, 0.6, 0.2], [0.25, 0.45, 0.3]])
    much = committee([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]])
    mi_some, mi_much = float(mutual_information(some).mean()), float(mutual_information(much).mean())
    assert 0.0 < mi_some < mi_much <= np.log2(3) + 1e-6
    # hand check, two members, two classes: H(0.5) - (H(0.9) + H(0.1)) / 2 bits
    h = lambda q: -(q * np.log2(q) + (1 - q) * np.log2(1 - q))  # noqa: E731
    two = committee([[0.1, 0.9], [0.9, 0.1]])
    assert float(mutual_information(two)[0, 0, 0]) == pytest.approx(h(0.5) - h(0.9), abs=1e-5)
    # uncertain but unanimous members: high predictive entropy, zero BALD
    unsure = committee([[0.34, 0.33, 0.33]] * 3)
    assert float(mutual_information(unsure).max()) < 1e-6


def test_bald_score_per_image_and_voxel_counts():
    opts = TTAOptions(dilate=0)
    base = torch.zeros(3, 3, 6, 6, 6)
    base[:, 0] = 1.0
    base[:, 0, 1:4, 1:4, 1:4], base[:, 1, 1:4, 1:4, 1:4] = 0.1, 0.9  # 27 voxels pancreas
    base[:, 1, 2, 2, 2], base[:, 2, 2, 2, 2] = 0.1, 0.8  # 1 of them tumour
    calm = uncertainty_from_samples(base, opts)
    assert calm["bald"] == pytest.approx(0.0, abs=1e-5)
    assert calm["pancreas_voxels"] == 26 and calm["tumor_voxels"] == 1
    shaky = base.clone()
    shaky[1, :, 1:4, 1:4, 1:4] = torch.tensor([0.6, 0.3, 0.1])[:, None, None, None]  # one member disagrees
    res = uncertainty_from_samples(shaky, opts)
    assert 0.0 < res["bald"] <= 1.0 and res["bald_sum"] > 0 and res["bald"] > calm["bald"]
    nothing = uncertainty_from_samples(torch.stack([torch.stack([torch.ones(4, 4, 4), *torch.zeros(2, 4, 4, 4)])] * 2),
                                       opts)
    assert nothing["no_pancreas_found"] and nothing["bald"] == 1.0 and nothing["tumor_voxels"] == 0


def test_bald_strategy_picks_the_highest_current_bald():
    ds = scored_pool(5, labelled={"img04"})
    for i, v in zip(("img00", "img01", "img02", "img03", "img04"), (0.1, 0.4, 0.3, 0.2, 0.9)):
        ds.infos[i][INFO_KEY]["bald"] = v
    ds.infos["img00"][INFO_KEY]["score"] = 0.99  # the highest entropy is not the highest BALD
    res = make(BaldStrategy)({"strategy": "bald"}, ds)
    assert res["id"] == "img01" and res["bald"] == 0.4 and res["selected_by"] == "bald"
    # scores stored before BALD existed (no "bald" field) are missing for this strategy
    ds2 = FakeDatastore(2)
    ds2.score("img00", 0.5)
    del ds2.infos["img00"][INFO_KEY]["bald"]
    assert make(BaldStrategy)({"strategy": "bald"}, ds2)["fallback"] == "random"


# ---- ClaSP-PE --------------------------------------------------------------------------------------------------
def test_clasp_quota_sequence_and_temperature_schedule():
    q = ClaspQuota(2 / 3)
    turns = []
    for _ in range(9):
        turns.append(q.tumour_turn())
        q.record(turns[-1])
    assert turns == [True, True, False] * 3
    assert clasp_temperature(0) == 1.0 and clasp_temperature(10) == pytest.approx(0.5)
    assert clasp_temperature(20) == pytest.approx(1 / 3) and clasp_temperature(10_000) == 0.05
    temps = [clasp_temperature(n) for n in range(0, 300, 7)]
    assert all(a >= b for a, b in zip(temps, temps[1:]))


def test_power_sample_is_proportional_to_score_power():
    scores = {"a": 0.8, "b": 0.4, "c": 0.2}
    r = random.Random(0)
    draws = [power_sample(list(scores), scores, 0.5, r)[0] for _ in range(4000)]  # weights 0.64 : 0.16 : 0.04
    expected = {"a": 0.64 / 0.84, "b": 0.16 / 0.84, "c": 0.04 / 0.84}
    for k, p in expected.items():
        assert abs(draws.count(k) / len(draws) - p) < 0.03
    assert power_sample(["x", "y"], {"x": 0.0, "y": 0.0}, 0.1, r)[1] == 0.5  # all zero: uniform


@pytest.mark.parametrize("seed", [0, 7])
def test_clasp_pe_respects_its_quota_over_many_picks(seed):
    ds = scored_pool(24, tumour=(1, 5, 11, 17), seed=seed)
    s = make(ClaspPEStrategy, Reservations(0), seed=seed)
    picks = [s({"strategy": "clasp_pe"}, ds) for _ in range(300)]
    slots = [r["quota"] for r in picks]
    assert slots.count("tumor") == 200  # exactly two thirds of the picks are tumour slots
    assert all(r["predicted_tumor"] for r in picks if r["quota"] == "tumor")
    assert np.mean([r["predicted_tumor"] for r in picks]) >= 2 / 3  # score slots may pick tumour images too
    score_ids = {r["id"] for r in picks if r["quota"] == "score"}
    assert any(not ds.infos[i][INFO_KEY]["tumor_voxels"] for i in score_ids)
    # power noise (T = 1 with nothing labelled: probability proportional to the score): the score slots favour
    # high scores without always taking the top one
    scores = {i: ds.infos[i][INFO_KEY]["score"] for i in ds.infos}
    picked = [scores[r["id"]] for r in picks if r["quota"] == "score"]
    assert np.mean(picked) > np.mean(list(scores.values())) + 0.05
    assert len(score_ids) > 3


def test_clasp_pe_is_seeded_and_gets_greedier_as_labels_accumulate():
    ds = scored_pool(12, tumour=(3, 8))
    first = make(ClaspPEStrategy, Reservations(0), seed=3)({"strategy": "clasp_pe"}, ds)["id"]
    runs = []
    for _ in range(2):
        s = make(ClaspPEStrategy, Reservations(0), seed=3)
        runs.append([s({"strategy": "clasp_pe"}, ds)["id"] for _ in range(30)])
    assert runs[0] == runs[1] and runs[0][0] == first  # deterministic per call
    best = max((i for i in ds.infos), key=lambda i: ds.infos[i][INFO_KEY]["score"])

    def best_rate(n_labelled):
        big = scored_pool(12 + n_labelled, tumour=(), labelled={f"img{12 + k:02d}" for k in range(n_labelled)})
        for i in ds.infos:
            big.infos[i] = ds.get_image_info(i)
            big.infos[i][INFO_KEY] = {**ds.infos[i][INFO_KEY], "tumor_voxels": 0}
        s = make(ClaspPEStrategy, Reservations(0), seed=1)
        picks = [s({"strategy": "clasp_pe"}, big) for _ in range(300)]
        assert picks[0]["labelled"] == n_labelled
        assert picks[0]["temperature"] == pytest.approx(clasp_temperature(n_labelled), abs=1e-4)
        return np.mean([r["id"] == best for r in picks])

    def expected(n_labelled):  # P(best) = best ** (1/T) / sum(score ** (1/T)) of the schedule's T
        w = {i: ds.infos[i][INFO_KEY]["score"] ** (1 / clasp_temperature(n_labelled)) for i in ds.infos}
        return w[best] / sum(w.values())

    rates = {n: best_rate(n) for n in (0, 80)}
    for n, rate in rates.items():
        assert abs(rate - expected(n)) < 0.08, (n, rate, expected(n))  # sd of 300 draws is at most 0.029
    assert expected(0) < 0.2 and expected(80) > 0.35 and rates[80] > rates[0] + 0.15


def test_clasp_pe_without_tumour_predictions_uses_score_slots():
    ds = scored_pool(5)
    s = make(ClaspPEStrategy, Reservations(0))
    picks = [s({"strategy": "clasp_pe"}, ds) for _ in range(6)]
    assert all(r["quota"] == "score" for r in picks)
    ds.score("img02", 0.5, tumour_voxels=80)  # tumour slots catch up once a tumour is predicted
    later = [s({"strategy": "clasp_pe"}, ds) for _ in range(3)]
    assert [r["quota"] for r in later] == ["tumor", "tumor", "tumor"] and {r["id"] for r in later} == {"img02"}


# ---- the scoring method records what the strategies need ------------------------------------------------------
class Blob(torch.nn.Module):
    """'pancreas' where the image is bright, 'tumour' where it is brightest."""

    def forward(self, x):
        fg = (x - 0.5) * 20.0
        tu = (x - 0.9) * 200.0
        return torch.cat([-fg, fg, tu], dim=1)


class StubServed:
    weights = ["w.pt"]

    def __init__(self, checksum):
        self.value = checksum

    def path(self):
        return "w.pt"

    def checksum(self, path=None):
        return self.value


class MemoryDatastore(FakeDatastore):
    def __init__(self, uris: dict[str, str]):
        super().__init__(0)
        self.uris = uris
        self.infos = {i: {} for i in uris}

    def get_image_uri(self, image_id):
        return self.uris[image_id]

    def update_image_info(self, image_id, info):
        self.infos[image_id].update(info)


def test_scoring_stores_bald_and_voxel_counts_with_the_model_checksum(tmp_path):
    from lib.task import get_task

    img = np.full((24, 24, 16), -1000, np.int16)
    img[4:20, 4:20, 2:14] = 30
    img[8:16, 8:16, 5:11] = 120  # 'pancreas' on the 0..1 window
    img[10:13, 10:13, 7:9] = 199  # 'tumour'
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(img, np.diag([3.0, 3.0, 4.0, 1.0])), str(path))
    ds = MemoryDatastore({"case": str(path)})
    served = StubServed("m1")
    scorer = DiNTSUncertaintyScoring(served, get_task("pancreas"), (3.0, 3.0, 4.0),
                                     options=TTAOptions(samples=2, min_roi=32, max_roi=32, noise_std=0.0),
                                     network_loader=lambda _p: Blob())
    out = scorer({"lower_priority": False}, ds)
    entry = ds.infos["case"][INFO_KEY]
    assert out["scored"] == 1 and entry["model"] == "m1" and entry["options"] == scorer.opts_hash
    assert 0.0 <= entry["bald"] <= 1.0 and entry["bald_sum"] >= 0.0
    assert entry["pancreas_voxels"] > 0 and entry["tumor_voxels"] > 0 and entry["voxel_ml"] == pytest.approx(0.036)
    s = BaldStrategy(served.checksum, Reservations(3600), opts_hash=scorer.opts_hash)
    res = s({"strategy": "bald"}, ds)
    assert res["id"] == "case" and res.get("fallback") is None and res["bald"] == entry["bald"]
    # training publishes new weights: the stored scores become missing, and stale for the next scoring run
    served.value = "m2"
    assert scorer.stale_images(ds) == ["case"]
    s2 = ClaspPEStrategy(served.checksum, Reservations(3600), opts_hash=scorer.opts_hash)
    assert s2({"strategy": "clasp_pe"}, ds)["fallback"] == "random"
