"""The phantom seed ranges, defined once: which generated phantoms train, validate and score what.

A phantom is a pure function of its seed (:func:`lib.data.phantom.make_phantom`), so keeping these ranges apart
is what keeps a reported Dice honest: a network is never scored on a phantom it or its refiner was fitted or
validated on. Every script, benchmark and test takes its seeds from here.

    SAMPLE        1000+   the shipped sample datastore (never trained on)
    TRAIN         5000+   the shipped networks' training phantoms and the architecture search
    REFINER_TRAIN 7000+   the boundary refiner's training phantoms (no shipped network saw them)
    VAL           9000+   validation of every training run above
    HELD_OUT      9500+   the reported figures (README, benchmarks); never trained or validated on
    AL_POOL      20000+   the active-learning benchmark's pools (20000 + 1000 * run seed + i)
    AL_HELD_OUT  30000+   the active-learning benchmark's scoring phantoms, the same for every run
"""

from __future__ import annotations

SAMPLE_SEED_BASE = 1000
TRAIN_SEED_BASE = 5000
REFINER_TRAIN_SEED_BASE = 7000
VAL_SEED_BASE = 9000
HELD_OUT_SEED_BASE = 9500
AL_POOL_SEED_BASE = 20000
AL_HELD_OUT_SEED_BASE = 30000


def seed_range(base: int, count: int) -> range:
    """``count`` seeds from ``base``: e.g. ``seed_range(HELD_OUT_SEED_BASE, 4)`` is 9500..9503."""
    return range(int(base), int(base) + int(count))


def seed_span(base: int, count: int) -> str:
    """``"5000..5047"``: how the checkpoints' metadata and the logs name a range."""
    return f"{int(base)}..{int(base) + int(count) - 1}"
