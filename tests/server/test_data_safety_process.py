"""What happens to the server process itself (issue 10): a kill -9 in the middle of label saves leaves a
readable label and a consistent history after a restart; SIGTERM stops the server and every child it
started within 10 s, even while an inference and a training run; a training run with corrupt labels on
disk trains on the others and names the bad ones."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import nibabel as nib
import psutil
import pytest
import requests

from support.repo import copy_datastore, copy_model_dir
from support.safety_helpers import label_for, sha
from support.server import wait_train
from support.training import TINY_TRAIN, make_studies

pytestmark = pytest.mark.server

IMAGE = "phantom_009"


def check_consistent(url: str, image: str, allowed: set[str]) -> str:
    """The current label is readable and one of ``allowed``; every listed version is there and intact."""
    r = requests.get(f"{url}/datastore/label", params={"label": image, "tag": "final"}, timeout=30)
    assert r.status_code == 200, r.text
    current = r.content
    import hashlib
    import gzip

    digest = hashlib.sha256(current).hexdigest()
    assert digest in allowed
    nib.Nifti1Image.from_bytes(gzip.decompress(current))  # readable
    listing = requests.get(f"{url}/datastore/label/versions", params={"image": image}, timeout=30).json()
    versions = listing["versions"]
    assert listing["revision"] == versions[-1]["rev"] == len(versions)
    assert r.headers["ETag"] == f'"{listing["revision"]}"'
    assert versions[-1]["sha256"] == digest
    for v in versions:
        got = requests.get(f"{url}/datastore/label/version", params={"image": image, "rev": v["rev"]}, timeout=30)
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == v["sha256"]
    return digest


def test_kill9_during_label_saves_leaves_readable_label_and_consistent_index(start_server, tmp_path):
    studies = copy_datastore(tmp_path / "studies")
    labels = [label_for(studies, IMAGE, tmp_path / f"l{i}.nii.gz", seed=i) for i in range(3)]
    allowed = {sha(p) for p in labels}
    srv = start_server(studies, log_path=tmp_path / "server0.log")
    with open(labels[0], "rb") as f:  # a first version, so that every round has a previous one to keep
        assert requests.put(f"{srv.url}/datastore/label", params={"image": IMAGE}, files={"label": f}, timeout=30).ok
    saved = []
    for round_, delay in enumerate((0.05, 0.13, 0.21, 0.34, 0.55)):
        stop = threading.Event()

        def hammer():
            i = 0
            while not stop.is_set():
                try:
                    with open(labels[i % 3], "rb") as f:
                        r = requests.put(f"{srv.url}/datastore/label", params={"image": IMAGE}, files={"label": f}, timeout=30)
                    saved.append(r.status_code)
                except requests.RequestException:
                    return
                i += 1

        worker = threading.Thread(target=hammer)
        before = saved.count(200)
        worker.start()
        # kill only once this round's saves are under way (a slow machine may take longer than ``delay`` for the
        # first one), then at a different point of the next save each round
        deadline = time.time() + 60
        while saved.count(200) == before and worker.is_alive() and time.time() < deadline:
            time.sleep(0.01)
        assert saved.count(200) > before, f"round {round_}: no label save went through before the kill"
        time.sleep(delay)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        stop.set()
        worker.join()
        srv = start_server(studies, log_path=tmp_path / f"server{round_ + 1}.log")
        check_consistent(srv.url, IMAGE, allowed)
    srv.stop()
    assert saved.count(200) >= 5, "the saves did not run while the server was killed"


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_sigterm_stops_server_and_its_children_within_10_seconds(start_server, tmp_path):
    studies = make_studies(tmp_path / "studies", count=6, labelled=4)
    model = copy_model_dir(tmp_path / "model")
    srv = start_server(studies, conf={"model_dir": str(model)})
    r = requests.post(f"{srv.url}/train/dints_pancreas", json=dict(TINY_TRAIN, epochs=10000), timeout=30)
    assert r.status_code == 200, r.text

    def long_inference():
        try:
            requests.post(f"{srv.url}/infer/dints_pancreas", params={"image": "case_005"},
                          data={"params": json.dumps({"sw_overlap": 0.95, "fast_path": False})}, timeout=120)
        except requests.RequestException:
            pass

    worker = threading.Thread(target=long_inference, daemon=True)
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline and not _descendants(srv.proc.pid):
        time.sleep(0.5)
    children = _descendants(srv.proc.pid)
    assert children, "training started no child process"
    # a second run is refused while one runs, or queued when the body (as the README says) asks for it
    assert requests.post(f"{srv.url}/train/dints_pancreas", json=dict(TINY_TRAIN), timeout=30).status_code == 429
    queued = requests.post(f"{srv.url}/train/dints_pancreas", json=dict(TINY_TRAIN, enqueue=True), timeout=30)
    assert queued.status_code == 200, queued.text
    time.sleep(2.0)  # the inference is inside the network
    t0 = time.time()
    os.kill(srv.proc.pid, signal.SIGTERM)  # the server only, as systemd or docker stop would
    try:
        srv.proc.wait(timeout=10)
    except Exception:
        pass
    elapsed = time.time() - t0
    alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    still = srv.proc.poll() is None
    srv.stop()
    for p in alive:
        p.kill()
    assert not still, f"the server was still running {elapsed:.1f} s after SIGTERM"
    assert elapsed < 10
    assert not alive, f"children left running: {[p.cmdline()[:4] for p in alive]}"


def test_training_skips_corrupt_labels_and_names_them(start_server, tmp_path):
    studies = make_studies(tmp_path / "studies", count=7, labelled=6)
    final = studies / "labels" / "final"
    (final / "case_001.nii.gz").write_bytes(b"\x1f\x8b not really gzip")  # truncated / corrupt
    img = nib.load(str(studies / "case_002.nii.gz"))
    import numpy as np

    bad = np.zeros(img.shape, np.uint8)
    bad[5:9, 5:9, 5:9] = 7
    nib.save(nib.Nifti1Image(bad, img.affine), str(final / "case_002.nii.gz"))  # value 7, written by hand
    model = copy_model_dir(tmp_path / "model")
    srv = start_server(studies, conf={"model_dir": str(model)})
    try:
        task = requests.post(f"{srv.url}/train/dints_pancreas", json=dict(TINY_TRAIN, epochs=1), timeout=30).json()
        done = wait_train(srv, task["id"])
        assert done["status"] == "DONE", srv.log()[-4000:]
        stats = requests.get(f"{srv.url}/info/", timeout=30).json()["train_stats"]["dints_pancreas"]
        skipped = {s["id"]: s["reason"] for s in stats["skipped"]}
        assert set(skipped) == {"case_001", "case_002"}
        assert "cannot be read" in skipped["case_001"] and "[7]" in skipped["case_002"]
        assert not {"case_001", "case_002"} & set(stats["training_ids"] + stats["validation_ids"])
        assert "case_001" in srv.log() and "case_002" in srv.log()
    finally:
        srv.stop()
