"""Unit tests of the TTA uncertainty scores and of the strategies' rules (no server; seconds)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from lib.activelearning.strategies import FirstStrategy, RandomStrategy, Reservations, UncertaintyStrategy
from lib.scoring.dints_uncertainty import INFO_KEY
from lib.scoring.tta import TTAOptions, score_volume, tta_samples, uncertainty_from_samples
from support.fake_datastore import FakeDatastore as SharedFakeDatastore


class FakeDatastore(SharedFakeDatastore):
    """The shared stand-in, with this module's image names and score records."""

    def __init__(self, n: int, labelled=()):
        super().__init__(n, labelled, id_format="img{}")

    def score(self, image_id, value, model="m1"):
        self.infos[image_id][INFO_KEY] = {"score": value, "pancreas": value, "tumor": value, "model": model}


class Blob(torch.nn.Module):
    """A translation-equivariant stand-in network: 'pancreas' where the image is bright, soft edges."""

    def forward(self, x):
        fg = (x - 0.5) * 20.0
        return torch.cat([-fg, fg, torch.full_like(x, -10.0)], dim=1)


def blob_image(shape=(72, 64, 48)) -> torch.Tensor:
    img = torch.full((1, *shape), 0.2)
    img[:, 30:45, 25:40, 15:30] = 0.9
    return img


def test_shift_tta_is_aligned_back_onto_the_roi():
    # with an equivariant network and no intensity change, every shifted sample must agree exactly
    opts = TTAOptions(samples=4, max_shift=3, intensity_scale=0.0, intensity_shift=0.0, noise_std=0.0, min_roi=32)
    img = blob_image()
    lo, hi = np.array([10, 10, 5]), np.array([60, 55, 40])
    probs = tta_samples(Blob(), img, lo, hi, opts)
    assert probs.shape[0] == 4
    assert torch.allclose(probs[1:], probs[0].expand_as(probs[1:]), atol=1e-5)
    res = uncertainty_from_samples(probs, opts)
    assert res["disagreement"] == pytest.approx(0.0, abs=1e-6)


def test_scores_in_range_and_higher_when_the_samples_disagree():
    img = blob_image()
    calm = score_volume(Blob(), img, (2, 2, 2), TTAOptions(samples=4, intensity_scale=0.0, intensity_shift=0.0,
                                                           noise_std=0.0, min_roi=32))
    shaky = score_volume(Blob(), img, (2, 2, 2), TTAOptions(samples=4, intensity_scale=0.4, intensity_shift=0.3,
                                                            noise_std=0.2, min_roi=32))
    for r in (calm, shaky):
        assert 0 <= r["score"] <= 1 and 0 <= r["pancreas"] <= 1 and 0 <= r["tumor"] <= 1
        assert not r["no_pancreas_found"]
    assert shaky["pancreas"] > calm["pancreas"]
    assert shaky["disagreement"] > calm["disagreement"]


def test_nothing_found_scores_highest():
    res = score_volume(Blob(), torch.full((1, 40, 40, 40), 0.2), (2, 2, 2), TTAOptions(samples=2, min_roi=32))
    assert res["no_pancreas_found"] and res["score"] == 1.0


def test_uncertainty_picks_highest_current_score_and_ignores_stale_ones():
    ds = FakeDatastore(4, labelled={"img3"})
    ds.score("img0", 0.2)
    ds.score("img1", 0.7)
    ds.score("img2", 0.9, model="old")  # computed with a previous model: not used
    ds.score("img3", 1.0)  # labelled: never offered
    s = UncertaintyStrategy(lambda: "m1", Reservations(3600))
    res = s({"strategy": "uncertainty"}, ds)
    assert res["id"] == "img1" and res["score"] == 0.7 and res["model"] == "m1"
    assert res["scored"] == 2 and "note_scores" in res


def test_uncertainty_falls_back_to_random_and_says_so():
    ds = FakeDatastore(3)
    ds.score("img0", 0.5, model="old")
    asked = []
    s = UncertaintyStrategy(lambda: "m1", Reservations(3600), on_not_ready=lambda: asked.append(1))
    res = s({"strategy": "uncertainty"}, ds)
    assert res["id"] in ds.infos and res["fallback"] == "random" and res["selected_by"] == "random"
    assert "not ready" in res["message"] and asked == [1]


def test_reservations_spread_requests_and_wrap_around():
    ds = FakeDatastore(3)
    r = Reservations(3600)
    first, rnd = FirstStrategy(r), RandomStrategy(r, seed=0)
    ids = [first({"strategy": "first", "client_id": "a"}, ds)["id"], rnd({"strategy": "random", "client_id": "b"}, ds)["id"],
           first({"strategy": "first", "client_id": "c"}, ds)["id"]]
    assert sorted(ids) == ["img0", "img1", "img2"]  # nobody gets an image someone else has
    again = first({"strategy": "first"}, ds)
    assert again["id"] == ids[0] and "note" in again  # all out: the one handed out longest ago
    # stamps written by the REST layer into the image info count too
    ds2 = FakeDatastore(2)
    ds2.infos["img0"]["strategy"] = {"random": {"ts": int(time.time()), "client_id": "x"}}
    assert FirstStrategy(Reservations(3600))({"strategy": "first"}, ds2)["id"] == "img1"


def test_empty_answer_when_everything_is_labelled():
    ds = FakeDatastore(2, labelled={"img0", "img1"})
    for s in (FirstStrategy(), RandomStrategy(), UncertaintyStrategy(lambda: "m1")):
        res = s({"strategy": s.name}, ds)
        assert res["id"] is None and res["remaining"] == 0 and "Nothing left to label" in res["message"]
