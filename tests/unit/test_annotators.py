"""Several annotators on one image, in process, on the interactive task with a network of fixed random weights
(the mechanics, not the skill): an answer depends on the click set a request sends, never on who clicked
before - a request starts from the cached state of the largest subset of its clicks, taking a click back
answers exactly what that set answered before, two annotators interleaved (in turn or at once) each get what
they get alone; the cache stays within its bytes; a bad request is refused before any image work. (The fixtures
``task`` and ``volume`` are in tests/unit/conftest.py; the bounded upload sessions, through the real server, in
tests/server/test_sessions.py.)"""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest

from lib.errors import InputError
from lib.runtime.click_cache import click_set, image_key

# two annotators' clicks on one image (voxel indices of the 40 x 40 x 20 test volume), never the same point
ANNOTATOR_A = [("pancreas", [12, 25, 8]), ("background", [30, 10, 12]), ("tumor", [20, 20, 10])]
ANNOTATOR_B = [("pancreas", [26, 14, 9]), ("pancreas", [8, 30, 6]), ("background", [33, 33, 15])]


@pytest.fixture
def image_path(volume, tmp_path):
    image, affine, _ = volume
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return str(path)


def _request(path, clicks) -> dict:
    params = {"image": path, "result_write_to_file": False}
    for name, point in clicks:
        params.setdefault(name, []).append(list(point))
    return params


def _sequence(task, path, clicks) -> tuple[list[np.ndarray], list[dict]]:
    """The answers (and their stats) of an annotator who adds the clicks one at a time, each request carrying all
    of them so far (as the clients do), after the automatic answer."""
    labels, stats = [], []
    for k in range(len(clicks) + 1):
        label, result = task(_request(path, clicks[:k]))
        labels.append(label)
        stats.append(result["inference"])
    return labels, stats


def test_a_request_starts_from_the_largest_cached_subset_and_a_click_costs_one_window(task, image_path):
    task.cache.clear()
    labels, stats = _sequence(task, image_path, ANNOTATOR_A)
    assert [s["windows"] for s in stats] == [0, 1, 1, 1]
    assert [s["from_clicks"] for s in stats] == [0, 0, 1, 2]
    assert all(not np.array_equal(a, b) for a, b in zip(labels, labels[1:]))  # every click did something
    # two clicks at once from the automatic answer: both windows (a set no request sent before)
    _, result = task(_request(image_path, [ANNOTATOR_A[0], ANNOTATOR_A[2]]))
    assert result["inference"]["from_clicks"] == 1 and result["inference"]["windows"] == 1  # {A0} is a subset
    _, result = task(_request(image_path, [ANNOTATOR_A[2], ANNOTATOR_B[0]]))
    assert result["inference"]["from_clicks"] == 0 and result["inference"]["windows"] == 2


def test_taking_a_click_back_answers_exactly_what_that_set_answered_before(task, image_path):
    task.cache.clear()
    labels, _ = _sequence(task, image_path, ANNOTATOR_A)
    for k in (2, 1, 0):  # back, click by click, to the automatic answer
        label, result = task(_request(image_path, ANNOTATOR_A[:k]))
        assert result["inference"]["windows"] == 0 and np.array_equal(label, labels[k]), k
    # the same click set in another order is the same set
    label, result = task(_request(image_path, ANNOTATOR_A[::-1]))
    assert result["inference"]["windows"] == 0 and np.array_equal(label, labels[3])


@pytest.fixture(scope="module")
def module_image(volume, tmp_path_factory):
    image, affine, _ = volume
    path = tmp_path_factory.mktemp("annotators") / "shared.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return str(path)


@pytest.fixture(scope="module")
def alone(task, module_image):
    """Each annotator's answers when alone on the image (a fresh cache for each)."""
    answers = {}
    for name, clicks in (("A", ANNOTATOR_A), ("B", ANNOTATOR_B)):
        task.cache.clear()
        answers[name] = _sequence(task, module_image, clicks)[0]
    assert not np.array_equal(answers["A"][-1], answers["B"][-1])  # two different answers to tell apart
    return answers


def test_two_annotators_in_turn_each_get_what_they_get_alone(task, module_image, alone):
    task.cache.clear()
    got_a, got_b = [], []
    for k in range(len(ANNOTATOR_A) + 1):  # A, B, A, B, ... on one image
        got_a.append(task(_request(module_image, ANNOTATOR_A[:k]))[0])
        got_b.append(task(_request(module_image, ANNOTATOR_B[:k]))[0])
    for k in range(len(got_a)):
        assert np.array_equal(got_a[k], alone["A"][k]), f"annotator A, request {k}"
        assert np.array_equal(got_b[k], alone["B"][k]), f"annotator B, request {k}"


def test_two_annotators_at_once_each_get_what_they_get_alone(task, module_image, alone):
    task.cache.clear()
    got = {"A": [], "B": []}
    errors = []
    steps = threading.Barrier(2)

    def annotate(name, clicks):
        try:
            for k in range(len(clicks) + 1):
                steps.wait(timeout=120)  # both send request k at the same time
                got[name].append(task(_request(module_image, clicks[:k]))[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            steps.abort()

    threads = [threading.Thread(target=annotate, args=("A", ANNOTATOR_A)),
               threading.Thread(target=annotate, args=("B", ANNOTATOR_B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    for name in ("A", "B"):
        assert len(got[name]) == len(alone[name])
        for k, (a, b) in enumerate(zip(got[name], alone[name])):
            assert np.array_equal(a, b), f"annotator {name}, request {k}"


def test_the_cache_stays_within_its_bytes_and_an_evicted_state_is_recomputed(random_model_dir, task, image_path):
    from lib.configs.interactive import InteractiveConfig

    task.cache.clear()
    alone, _ = _sequence(task, image_path, ANNOTATOR_A)
    key = image_key(image_path, task.served.checksum())
    base_bytes = task.cache.base(key).nbytes
    sizes = [task.cache.start(key, s).nbytes for s in task.cache.click_sets(key)]  # 1, 2, 3 clicks: growing
    assert len(sizes) == 3 and sizes == sorted(sizes) and sizes[0] > 0
    cfg = InteractiveConfig()
    mb = (base_bytes + sizes[-1] + sizes[0] / 2) / (1 << 20)  # room for the base and any one click state, not two
    cfg.init("deepedit_pancreas", str(random_model_dir),
             {"profile": "cpu", "roi_size": "64,64,64", "click_cache_mb": str(mb), "click_model": "network"}, None)
    small = cfg.infer()["deepedit_pancreas"]
    labels, stats = _sequence(small, image_path, ANNOTATOR_A)
    assert small.cache.total_bytes() <= mb * (1 << 20)
    assert small.cache.click_sets(key) == [click_set((c, tuple(p)) for c, p in [(1, ANNOTATOR_A[0][1]),
                                                                               (0, ANNOTATOR_A[1][1]),
                                                                               (2, ANNOTATOR_A[2][1])])]
    assert len(small.cache) == 2  # the base and the last state
    assert [s["from_clicks"] for s in stats] == [0, 0, 1, 2]  # each request still found its predecessor
    for a, b in zip(labels, alone):
        assert np.array_equal(a, b)
    # the one-click state was evicted: taking the last two clicks back runs the first one again, from the base
    label, result = small(_request(image_path, ANNOTATOR_A[:1]))
    assert result["inference"]["from_clicks"] == 0 and result["inference"]["windows"] == 1
    assert np.array_equal(label, alone[1])  # the same path (base + that click) as the first time
    assert small.cache.total_bytes() <= mb * (1 << 20)


@pytest.mark.parametrize("params, words, status", [
    ({"null": [[1, 2, 3]]}, "name no label", 400),  # OHIF v3: points placed before a label was chosen
    ({"liver": [[1, 2, 3]]}, "unknown label", 400),
    ({"pancreas": [[40, 2, 3]]}, "outside the image", 400),  # the volume is 40 x 40 x 20
    ({"pancreas": [[1, 2, 20]]}, "outside the image", 400),
    ({"tumor": [[1, 2]]}, "3 voxel indices", 400),
    ({"pancreas": [[1, 2, 3]], "result_extension": ".exe"}, "extension", 400),
])
def test_a_bad_request_is_refused_before_any_image_work(task, image_path, monkeypatch, params, words, status):
    task.cache.clear()

    def no_image_work(*args, **kwargs):
        raise AssertionError("the image was loaded for a request that is refused")

    monkeypatch.setattr(task, "_first_pass", no_image_work)
    with pytest.raises(InputError) as err:
        task({"image": image_path, "result_write_to_file": False, **params})
    assert err.value.status_code == status and words in err.value.message, err.value.message
    assert len(task.cache) == 0
