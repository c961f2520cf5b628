"""Active learning through the running server (issue 5, "Done when").

One real ``monailabel start_server`` for the module, on tiny CT-like volumes and a tiny random DiNTS, so
that scoring takes seconds. The tests run in file order and share the server's state:

1. after scoring, ``/activelearning/uncertainty`` returns the unlabelled image with the highest stored score;
2. two concurrent requests get different images;
3. once a label is submitted for an image, it is no longer offered;
4. scores are recomputed when a new model is published (their model checksum changes);
5. with every image labelled the answer is a clear empty result, not an error trace.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from monailabel.client.client import MONAILabelClient

from .active_helpers import publish_random_model, stored_scores, write_label, write_studies

N_IMAGES = 6
SCORING_TIMEOUT = 240.0


def wait_for_scores(studies: Path, checksum: str, timeout: float = SCORING_TIMEOUT) -> dict[str, dict]:
    """Until every unlabelled image has a score computed with model ``checksum``."""
    deadline = time.time() + timeout
    scores: dict = {}
    while time.time() < deadline:
        scores = stored_scores(studies)
        unlabelled = {k: v for k, v in scores.items() if not v["labelled"]}
        if unlabelled and all(v.get("model") == checksum and "score" in v for v in unlabelled.values()):
            return unlabelled
        time.sleep(1.0)
    raise AssertionError(f"scores not ready for model {checksum} within {timeout}s: {scores}")


@pytest.fixture(scope="module")
def al(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("al")
    studies, model_dir = root / "studies", root / "model"
    model_dir.mkdir()
    ids = write_studies(studies, n_images=N_IMAGES, n_labelled=1)
    checksum = publish_random_model(model_dir / "pretrained_dints_pancreas_cpu.pt", seed=1)
    conf = {
        "model_dir": str(model_dir),
        "profile": "cpu",
        "scoring_samples": "3",
        "scoring_threads": "1",
        "auto_scoring": "true",
        "scoring_watch_seconds": "1",
        "al_reserve_seconds": "3600",
        "fast_path": "false",
    }
    server = start_server(studies, conf=conf, log_path=root / "server.log", timeout=180)
    try:
        yield {"server": server, "studies": studies, "model_dir": model_dir, "ids": ids, "checksum": checksum,
               "tmp": root, "served": []}
    finally:
        server.stop()


def client(al, name: str) -> MONAILabelClient:
    tmp = al["tmp"] / f"client_{name}"
    tmp.mkdir(exist_ok=True)
    return MONAILabelClient(al["server"].url, tmpdir=str(tmp), client_id=name)


def test_uncertainty_returns_highest_scored_unlabelled_image(al):
    # POST /scoring/{method} is what a client calls; the server may already be scoring (it starts by itself)
    r = requests.post(f"{al['server'].url}/scoring/dints_uncertainty", timeout=30)
    assert r.status_code in (200, 429), r.text  # 429: a run is already in progress
    scores = wait_for_scores(al["studies"], al["checksum"])
    assert set(scores) == set(al["ids"][1:])
    for s in scores.values():
        assert 0.0 <= s["score"] <= 1.0 and 0.0 <= s["pancreas"] <= 1.0 and 0.0 <= s["tumor"] <= 1.0

    res = client(al, "annotator_a").next_sample("uncertainty", {})
    best = max(scores, key=lambda k: (scores[k]["score"], k))
    assert res["id"] == best, (res, scores)
    assert res["selected_by"] == "uncertainty" and res["model"] == al["checksum"]
    assert res["score"] == pytest.approx(scores[best]["score"])
    al["served"].append(res["id"])

    info = requests.get(f"{al['server'].url}/info/", timeout=30).json()
    assert set(info["strategies"]) >= {"uncertainty", "random", "first", "random_fg", "bald", "clasp_pe"}
    # 3D Slicer's and our OHIF panel's Next Sample use the first strategy /info lists until the annotator picks
    # another: the one the campaign benchmark supports (nothing beat foreground-aware random)
    assert next(iter(info["strategies"])) == "random_fg"
    assert "dints_uncertainty" in info["scoring"]


def test_concurrent_requests_get_different_images(al):
    results: dict[str, dict] = {}
    barrier = threading.Barrier(2)

    def ask(name):
        c = client(al, name)
        barrier.wait()
        results[name] = c.next_sample("uncertainty", {})

    threads = [threading.Thread(target=ask, args=(n,)) for n in ("annotator_b", "annotator_c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [results[n]["id"] for n in ("annotator_b", "annotator_c")]
    assert None not in ids and ids[0] != ids[1], results
    # and neither is the image already out with annotator a
    assert al["served"][0] not in ids
    al["served"].extend(ids)


def test_labelled_image_is_no_longer_offered(al):
    image_id = al["served"][0]
    c = client(al, "annotator_a")
    label = write_label(al["tmp"] / f"{image_id}_label.nii.gz", image_id, seed=al["ids"].index(image_id))
    c.save_label(image_id, str(label), tag="final")
    seen = [c.next_sample("uncertainty", {})["id"] for _ in range(2 * N_IMAGES)]
    assert image_id not in seen, seen
    assert None not in seen  # once all are out, the one handed out longest ago comes back, never a labelled one
    for strategy in ("random", "first"):
        res = c.next_sample(strategy, {})
        assert res["id"] and res["id"] != image_id


def test_scores_recomputed_after_new_model(al):
    # what the dints_pancreas trainer does at the end of a run: publish trained_file atomically
    new = publish_random_model(al["model_dir"] / "dints_pancreas_cpu.pt", seed=2)
    assert new != al["checksum"]
    # /infer answers while the background scoring process works, with the new model
    deadline = time.time() + 60
    while requests.get(f"{al['server'].url}/scoring/?check_if_running=true", timeout=30).status_code != 200:
        if time.time() > deadline:
            break
        time.sleep(0.5)
    running = requests.get(f"{al['server'].url}/scoring/?check_if_running=true", timeout=30).status_code == 200
    t0 = time.time()
    _, params = client(al, "annotator_d").infer("dints_pancreas", al["ids"][-1], {"result_extension": ".nii.gz"})
    infer_seconds = time.time() - t0
    assert params["model"]["checksum"] == new, params
    assert infer_seconds < 60
    print(f"infer took {infer_seconds:.1f}s (background scoring running: {running})")
    scores = wait_for_scores(al["studies"], new)
    assert all(s["model"] == new for s in scores.values())
    info = requests.get(f"{al['server'].url}/info/", timeout=30).json()
    assert info["models"]["dints_pancreas"]["model"]["checksum"] == new
    res = client(al, "annotator_d").next_sample("uncertainty", {})
    assert res["model"] == new and res.get("fallback") is None


def test_everything_labelled_gives_clear_empty_result(al):
    c = client(al, "annotator_a")
    for i, image_id in enumerate(al["ids"]):
        label = write_label(al["tmp"] / f"{image_id}_final.nii.gz", image_id, seed=i)
        c.save_label(image_id, str(label), tag="final")
    for strategy in ("uncertainty", "random", "first"):
        r = requests.post(f"{al['server'].url}/activelearning/{strategy}", json={}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body.get("id") is None and body.get("remaining") == 0, body
        assert "Nothing left to label" in body["message"]
    r = requests.post(f"{al['server'].url}/activelearning/no_such_strategy", json={}, timeout=30)
    assert r.status_code == 404 and "no strategy" in r.json()["detail"]
    assert al["server"].alive()
    assert "Traceback" not in r.text
