"""Next-sample strategies: ``uncertainty``, ``random``, ``first``, ``random_fg``, ``bald`` and ``clasp_pe``.

All of them choose among the unlabelled images (no ``final`` label) and share one rule: an image handed out
in the last ``reserve_seconds`` (by any strategy, to anyone) is not handed out again while another one is
free, so two annotators pressing "Next Sample" at the same time get different volumes. The reservation is
taken inside the strategy under a lock (not only in the REST layer's ``strategy`` stamp in the image info,
which is also honoured), so simultaneous requests cannot race. When every unlabelled image is reserved,
the one handed out longest ago is returned, with a note saying so.

Answers are plain dicts. With nothing left to label the answer is ``{"id": None, "message": ...,
"remaining": 0}``: clients (3D Slicer, OHIF, ``MONAILabelClient.next_sample``) see an empty result with a
reason, never an error trace. ``uncertainty`` uses the scores of the current model only (the checksum
stored with each score must match); with none ready it picks at random and says so
(``"fallback": "random"`` and a ``message``), and asks for scoring to be started.

``random_fg``, ``bald`` and ``clasp_pe`` read the same stored scores under the same rule (a score of another
model checksum or other scoring options counts as missing) and fall back the same way, with the same
``"fallback": "random"`` field and ``message``:

``random_fg``, ``bald`` and ``clasp_pe`` live in :mod:`lib.activelearning.scored_strategies`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.scoring.dints_uncertainty import INFO_KEY, refresh_datastore, stored_score

logger = logging.getLogger(__name__)

DEFAULT_RESERVE_SECONDS = 3600


class Reservations:
    """Images handed out recently (image id -> (time, client)), shared by all strategies of a server."""

    def __init__(self, seconds: float = DEFAULT_RESERVE_SECONDS):
        self.seconds = float(seconds)
        self.lock = threading.RLock()
        self._given: dict[str, tuple[float, str | None]] = {}

    def last_given(self, image_id: str, info: dict, now: float) -> float:
        """When ``image_id`` was last handed out (0 if never): ours, or any strategy stamp in its info."""
        ts = self._given.get(image_id, (0.0, None))[0]
        stamps = info.get("strategy") if isinstance(info.get("strategy"), dict) else {}
        for v in stamps.values():
            if isinstance(v, dict):
                try:
                    ts = max(ts, float(v.get("ts", 0)))
                except (TypeError, ValueError):
                    pass
        return ts

    def is_reserved(self, image_id: str, info: dict, now: float) -> bool:
        return self.seconds > 0 and now - self.last_given(image_id, info, now) < self.seconds

    def take(self, image_id: str, client: str | None, now: float) -> None:
        self._given[image_id] = (now, client)

    def release(self, image_id: str) -> None:
        with self.lock:
            self._given.pop(image_id, None)


class _Base(Strategy):
    name = "base"

    def __init__(self, description: str, reservations: Reservations | None = None):
        super().__init__(description)
        self.reservations = reservations or Reservations()
        self.labelled_count = 0

    def info(self):
        return {**super().info(), "reserve_seconds": self.reservations.seconds}

    def choose(self, candidates: list[str], infos: dict[str, dict], request: dict) -> dict:
        raise NotImplementedError

    def __call__(self, request: dict[str, Any], datastore: Datastore):
        refresh_datastore(datastore)
        client = request.get("client_id") or request.get("user")
        with self.reservations.lock:
            now = time.time()
            total = len(datastore.list_images())
            unlabelled = sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
            if not unlabelled:
                msg = (f"Nothing left to label: all {total} images have a final label." if total
                       else "Nothing to label: the datastore has no images.")
                logger.info(f"{self.name}: {msg}")
                return {"id": None, "message": msg, "remaining": 0, "total": total}
            infos = {i: datastore.get_image_info(i) for i in unlabelled}
            free = [i for i in unlabelled if not self.reservations.is_reserved(i, infos[i], now)]
            note = None
            if not free:
                oldest = min(unlabelled, key=lambda i: self.reservations.last_given(i, infos[i], now))
                free = [oldest]
                note = (f"every unlabelled image was handed out in the last {int(self.reservations.seconds)} s; "
                        "returning the one handed out longest ago")
            self.labelled_count = max(0, total - len(unlabelled))  # for strategies that schedule on it
            res = self.choose(free, infos, request)
            self.reservations.take(res["id"], client, now)
        res.update(remaining=len(unlabelled), available=len(free) if note is None else 0, total=total)
        if note:
            res["note"] = note
        logger.info(f"{self.name}: selected {res['id']} ({ {k: v for k, v in res.items() if k != 'id'} })")
        return res


class FirstStrategy(_Base):
    """The first free unlabelled image in id order (deterministic: useful for demos and tests)."""

    name = "first"

    def __init__(self, reservations: Reservations | None = None):
        super().__init__("First unlabelled image (in id order) not handed out recently", reservations)

    def choose(self, candidates, infos, request):
        return {"id": candidates[0], "selected_by": self.name}


class RandomStrategy(_Base):
    """A uniformly random free unlabelled image."""

    name = "random"

    def __init__(self, reservations: Reservations | None = None, seed: int | None = None):
        super().__init__("Random unlabelled image not handed out recently", reservations)
        self.rng = random.Random(seed)

    def choose(self, candidates, infos, request):
        return {"id": self.rng.choice(candidates), "selected_by": self.name}


class UncertaintyStrategy(_Base):
    """The free unlabelled image with the highest ``dints_uncertainty`` score of the current model."""

    name = "uncertainty"

    def __init__(
        self,
        checksum: Callable[[], str | None],
        reservations: Reservations | None = None,
        on_not_ready: Callable[[], Any] | None = None,
        opts_hash: str | None = None,
        seed: int | None = None,
    ):
        super().__init__(
            f"Highest TTA uncertainty ('{INFO_KEY}' score of the current model) first; "
            "falls back to random while scores are not ready", reservations)
        self.checksum = checksum
        self.on_not_ready = on_not_ready
        self.opts_hash = opts_hash
        self.rng = random.Random(seed)

    def choose(self, candidates, infos, request):
        checksum = self.checksum()
        scored = {i: s for i in candidates if (s := stored_score(infos[i], checksum, self.opts_hash)) is not None}
        all_scored = sum(stored_score(v, checksum, self.opts_hash) is not None for v in infos.values())
        if not scored:
            if self.on_not_ready is not None:
                try:
                    self.on_not_ready()
                except Exception as exc:
                    logger.warning(f"uncertainty: could not start scoring: {exc}")
            pick = self.rng.choice(candidates)
            reason = ("no model weights are available" if checksum is None else
                      f"none of the {len(infos)} unlabelled images has a score for the current model ({checksum}) yet")
            return {
                "id": pick, "selected_by": "random", "fallback": "random",
                "message": f"Uncertainty scores are not ready ({reason}); scoring has been started in the background "
                           "(or start it with POST /scoring/dints_uncertainty). "
                           "Picked an image at random.",
                "scored": all_scored, "model": checksum,
            }
        best = max(scored, key=lambda i: (scored[i]["score"], i))
        s = scored[best]
        res = {"id": best, "selected_by": self.name, "score": s["score"], "pancreas_uncertainty": s.get("pancreas"),
               "tumor_uncertainty": s.get("tumor"), "model": checksum, "scored": all_scored}
        if all_scored < len(infos):
            res["note_scores"] = f"{all_scored} of {len(infos)} unlabelled images scored so far; chose among those"
        return res
