"""Strategies on the stored scores, beside ``uncertainty`` (:mod:`lib.activelearning.strategies`: the reservation
rule, the fallback to random while scores are missing):

* ``random_fg`` (:class:`ForegroundRandomStrategy`): random, but half the picks among images predicted to hold
  a tumour;
* ``bald`` (:class:`BaldStrategy`): the highest committee mutual information of the TTA samples;
* ``clasp_pe`` (:class:`ClaspPEStrategy`): class-stratified quota plus power-noised predictive entropy.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Callable

from lib.activelearning.strategies import Reservations, _Base
from lib.scoring.dints_uncertainty import INFO_KEY, stored_score

logger = logging.getLogger(__name__)

# ---- strategies on the stored scores: random_fg, bald, clasp_pe ----------------------------------------------
DEFAULT_MIN_TUMOR_ML = 0.05  # about a 4.6 mm sphere: fewer predicted lesion voxels than this is noise


def predicted_tumour(score: dict, min_ml: float = DEFAULT_MIN_TUMOR_ML) -> bool:
    """Whether a stored score says the model predicts a tumour in the image: ``tumor_voxels`` > 0 and, where the
    score records ``voxel_ml``, at least ``min_ml`` millilitres of them."""
    try:
        voxels = float(score.get("tumor_voxels") or 0.0)
    except (TypeError, ValueError):
        return False
    if voxels <= 0:
        return False
    voxel_ml = score.get("voxel_ml")
    if voxel_ml is None:
        return True
    try:
        return voxels * float(voxel_ml) >= min_ml
    except (TypeError, ValueError):
        return True


def power_sample(ids: list[str], scores: dict[str, float], temperature: float, rng: random.Random) -> tuple[str, float]:
    """One of ``ids`` drawn with probability proportional to ``score ** (1 / temperature)`` (power noise); also
    its probability. Computed in log space (no underflow); scores <= 0 weigh nothing unless all do (uniform)."""
    ids = sorted(ids)
    t = max(float(temperature), 1e-6)
    logs = [math.log(max(float(scores[i]), 1e-12)) / t for i in ids]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    if all(float(scores[i]) <= 0 for i in ids):
        weights = [1.0] * len(ids)
    total = sum(weights)
    u = rng.random() * total
    acc = 0.0
    for i, w in zip(ids, weights):
        acc += w
        if u < acc:
            return i, w / total
    return ids[-1], weights[-1] / total


class _ScoredStrategy(_Base):
    """A strategy on the ``dints_uncertainty`` scores of the current model, random while there are none."""

    score_field = "score"
    score_title = "Uncertainty scores"

    def __init__(
        self,
        description: str,
        checksum: Callable[[], str | None],
        reservations: Reservations | None = None,
        on_not_ready: Callable[[], Any] | None = None,
        opts_hash: str | None = None,
        seed: int | None = None,
    ):
        super().__init__(description, reservations)
        self.checksum = checksum
        self.on_not_ready = on_not_ready
        self.opts_hash = opts_hash
        self.seed = seed
        self.rng = random.Random(seed)

    def current(self, ids, infos, checksum) -> dict[str, dict]:
        """Scores of ``ids`` from model ``checksum`` (and these options) that hold ``score_field``."""
        out = {}
        for i in ids:
            s = stored_score(infos[i], checksum, self.opts_hash)
            if s is not None and s.get(self.score_field) is not None:
                out[i] = s
        return out

    def not_ready(self, candidates, infos, checksum) -> dict:
        """The random fallback (scoring is asked to start), saying why in ``message`` and ``fallback``."""
        if self.on_not_ready is not None:
            try:
                self.on_not_ready()
            except Exception as exc:
                logger.warning(f"{self.name}: could not start scoring: {exc}")
        reason = ("no model weights are available" if checksum is None else
                  f"none of the {len(infos)} unlabelled images has a score for the current model ({checksum}) yet")
        logger.info(f"{self.name}: scores not ready ({reason}); falling back to random")
        return {
            "id": self.rng.choice(candidates), "selected_by": "random", "fallback": "random",
            "message": f"{self.score_title} are not ready ({reason}); scoring has been started in the background "
                       f"(or start it with POST /scoring/{INFO_KEY}). Picked an image at random.",
            "scored": 0, "model": checksum,
        }

    def choose(self, candidates, infos, request):
        checksum = self.checksum()
        scored = self.current(candidates, infos, checksum)
        if not scored:
            return self.not_ready(candidates, infos, checksum)
        all_scored = len(self.current(list(infos), infos, checksum))
        res = {"selected_by": self.name, "model": checksum, "scored": all_scored, **self.pick(candidates, scored)}
        if all_scored < len(infos):
            res["note_scores"] = f"{all_scored} of {len(infos)} unlabelled images scored so far"
        return res

    def pick(self, candidates: list[str], scored: dict[str, dict]) -> dict:
        raise NotImplementedError


class ForegroundRandomStrategy(_ScoredStrategy):
    """``random_fg``: random, with a fixed chance of an image the current model predicts to hold a tumour.

    Exactly: the free unlabelled images are split into T, those whose current score records a predicted tumour
    (``tumor_voxels`` of at least ``min_tumor_ml`` millilitres, :func:`predicted_tumour`), and O, all the others
    (no tumour predicted, or not scored yet). With probability ``tumour_probability`` (1/2) the pick is uniform
    over T, otherwise uniform over O; when one of the two is empty the pick is uniform over the other. So while
    both hold images, each pick is a tumour-predicted image with probability exactly 1/2, however rare they are
    in the pool. With no score of the current model at all it is plain random (``"fallback": "random"``).
    """

    name = "random_fg"
    score_field = "score"  # any current score; one without ``tumor_voxels`` (a task with no lesion) holds no tumour
    score_title = "Predicted foreground volumes (scores)"

    def __init__(self, checksum, reservations=None, on_not_ready=None, opts_hash=None, seed=None,
                 tumour_probability: float = 0.5, min_tumor_ml: float = DEFAULT_MIN_TUMOR_ML):
        super().__init__(
            f"Random, with probability {tumour_probability:g} among images the current model predicts to hold a "
            "tumour (else among the others); plain random while scores are not ready",
            checksum, reservations, on_not_ready, opts_hash, seed)
        self.tumour_probability = float(tumour_probability)
        self.min_tumor_ml = float(min_tumor_ml)

    def pick(self, candidates, scored):
        tumour = sorted(i for i in scored if predicted_tumour(scored[i], self.min_tumor_ml))
        tumour_set = set(tumour)
        others = [i for i in candidates if i not in tumour_set]
        u = self.rng.random()
        group = "tumor" if tumour and (not others or u < self.tumour_probability) else "other"
        pick = self.rng.choice(tumour if group == "tumor" else others)
        s = scored.get(pick, {})
        res = {"id": pick, "group": group, "predicted_tumor": pick in tumour_set,
               "tumor_voxels": s.get("tumor_voxels"), "tumor_candidates": len(tumour), "other_candidates": len(others)}
        if not tumour:
            res["note_groups"] = "no free unlabelled image is predicted to hold a tumour: picked uniformly among all"
        return res


class BaldStrategy(_ScoredStrategy):
    """``bald``: the free unlabelled image with the highest ``bald`` (mutual information of the TTA committee,
    :func:`lib.scoring.tta.mutual_information`) of the current model; ties by id."""

    name = "bald"
    score_field = "bald"
    score_title = "BALD (mutual information) scores"

    def __init__(self, checksum, reservations=None, on_not_ready=None, opts_hash=None, seed=None):
        super().__init__(
            "Highest BALD mutual information of the TTA samples (current model) first; "
            "falls back to random while scores are not ready", checksum, reservations, on_not_ready, opts_hash, seed)

    def pick(self, candidates, scored):
        best = max(scored, key=lambda i: (float(scored[i]["bald"]), i))
        return {"id": best, "bald": scored[best]["bald"], "bald_sum": scored[best].get("bald_sum"),
                "score": scored[best].get("score")}


class ClaspQuota:
    """Class-stratified quota: the next pick is a tumour slot while fewer than ceil(quota x picks) of the picks so
    far (this one included) were (T, T, S, T, T, S, ... at 2/3). A slot that finds no tumour-predicted image is
    counted as a score slot, so the tumour slots catch up once such images appear."""

    def __init__(self, quota: float = 2 / 3):
        self.quota = float(quota)
        self.picks = 0
        self.tumour_picks = 0

    def tumour_turn(self) -> bool:
        return self.tumour_picks < math.ceil(self.quota * (self.picks + 1) - 1e-9)

    def record(self, tumour_slot: bool) -> None:
        self.picks += 1
        self.tumour_picks += int(tumour_slot)


def clasp_temperature(n_labelled: int, t0: float = 1.0, half_life: float = 10.0, t_min: float = 0.05) -> float:
    """The power-noise temperature: T = max(t_min, t0 / (1 + n_labelled / half_life)); 1 with nothing labelled,
    1/2 after ``half_life`` (10) labelled images, 1/3 after 20, floored at 0.05 (score ** 20: nearly greedy)."""
    return max(float(t_min), float(t0) / (1.0 + max(0, int(n_labelled)) / float(half_life)))


def clasp_pick(candidates: list[str], scores: dict[str, float], tumour: set[str], quota: ClaspQuota,
               n_labelled: int, seed: int, t0: float = 1.0, half_life: float = 10.0, t_min: float = 0.05) -> dict:
    """One ClaSP-PE pick among the scored ``candidates`` (``scores``: predictive entropy; ``tumour``: those
    predicted to hold a tumour). Updates ``quota``. Shared by :class:`ClaspPEStrategy` and the benchmark."""
    pool = sorted(i for i in candidates if i in scores)
    group = sorted(i for i in pool if i in tumour)
    tumour_slot = quota.tumour_turn() and bool(group)
    if not tumour_slot:
        group = pool
    temperature = clasp_temperature(n_labelled, t0, half_life, t_min)
    rng = random.Random(f"clasp_pe:{seed}:{n_labelled}:{quota.picks}")  # deterministic per call
    pick, prob = power_sample(group, scores, temperature, rng)
    quota.record(tumour_slot)
    return {"id": pick, "quota": "tumor" if tumour_slot else "score", "temperature": round(temperature, 4),
            "probability": round(prob, 4), "predicted_tumor": pick in tumour,
            "quota_tumor_picks": quota.tumour_picks, "quota_picks": quota.picks}


class ClaspPEStrategy(_ScoredStrategy):
    """``clasp_pe``: class-stratified, scheduled power predictive entropy (after ClaSP PE).

    Among the free unlabelled images with a current score: a quota of ``tumour_quota`` (2/3) of the picks
    (:class:`ClaspQuota`, counted since the server started) is drawn among the images predicted to hold a tumour
    (:func:`predicted_tumour`), the rest among all scored images. Within the group the image is drawn with
    probability proportional to ``score ** (1 / T)`` (``score``: the predictive entropy), the temperature decaying
    with the number of labelled images n: T = max(0.05, 1 / (1 + n / 10)) (:func:`clasp_temperature`): close to
    score-proportional at the start, nearly greedy later. Each draw uses its own RNG seeded from (``seed``, n,
    picks so far), so a run is reproducible. A tumour slot with no tumour-predicted image falls to the score
    group (``"quota": "score"``). With no score of the current model: plain random (``"fallback": "random"``).
    """

    name = "clasp_pe"
    score_field = "score"
    score_title = "Predictive-entropy scores"

    def __init__(self, checksum, reservations=None, on_not_ready=None, opts_hash=None, seed: int = 0,
                 tumour_quota: float = 2 / 3, t0: float = 1.0, half_life: float = 10.0, t_min: float = 0.05,
                 min_tumor_ml: float = DEFAULT_MIN_TUMOR_ML):
        super().__init__(
            f"Class-stratified ({tumour_quota:.0%} of picks among tumour-predicted images) power-noised predictive "
            "entropy, temperature decaying with the labelled count; random while scores are not ready",
            checksum, reservations, on_not_ready, opts_hash, seed)
        self.quota = ClaspQuota(tumour_quota)
        self.t0, self.half_life, self.t_min = float(t0), float(half_life), float(t_min)
        self.min_tumor_ml = float(min_tumor_ml)

    def info(self):
        return {**super().info(), "tumour_quota": self.quota.quota,
                "temperature": f"max({self.t_min:g}, {self.t0:g} / (1 + labelled / {self.half_life:g}))"}

    def pick(self, candidates, scored):
        tumour = {i for i in scored if predicted_tumour(scored[i], self.min_tumor_ml)}
        res = clasp_pick(candidates, {i: float(s["score"]) for i, s in scored.items()}, tumour, self.quota,
                         self.labelled_count, int(self.seed or 0), self.t0, self.half_life, self.t_min)
        res["score"] = scored[res["id"]]["score"]
        res["labelled"] = self.labelled_count
        return res
