"""The annotation data path through the real server (issue 10): hostile ids, tags, labels and parameters
are refused with a 4xx and change nothing on disk; label saves are checked and versioned (list, download,
restore, stale revision 409, Slicer's label_info mapping); uploads leave nothing in the temp folder; /info
answers while an inference runs; Slicer's session upload is segmented in the uploaded volume's geometry."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from support.repo import copy_datastore, copy_model_dir
from support.safety_helpers import HOSTILE_IDS, label_for, sha, tree_hash

from lib.datastore.label_files import read_geometry
from lib.networks.factory import file_checksum
from lib.transforms.writer import write_nrrd

pytestmark = pytest.mark.server

IMAGE = "phantom_009"  # unlabelled in the sample datastore


@pytest.fixture(scope="module")
def server(start_server, module_tmp):
    studies = copy_datastore(module_tmp / "studies")
    model = copy_model_dir(module_tmp / "model")
    tmp = module_tmp / "server_tmp"
    tmp.mkdir()
    srv = start_server(studies, conf={"model_dir": str(model)},
                 env={"MONAI_LABEL_SESSION_PATH": str(module_tmp / "sessions"), "TMPDIR": str(tmp)})
    srv.model_dir, srv.tmp = model, tmp
    yield srv
    srv.stop()


def snapshot(server):
    return tree_hash(server.studies, server.model_dir)


def refused(response, *codes):
    assert response.status_code in codes, (response.status_code, response.text[:400])
    body = response.json()  # every error answer is JSON with a message
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body["detail"]


def alive(server):
    assert server.alive()
    assert requests.get(f"{server.url}/info/", timeout=10).status_code == 200


# ---- hostile ids and tags ------------------------------------------------------------------------------
def test_hostile_ids_and_tags_are_refused_on_every_endpoint(server, module_tmp):
    label = label_for(server.studies, IMAGE, module_tmp / "ok_label.nii.gz")
    ct = server.studies / f"{IMAGE}.nii.gz"
    before = snapshot(server)
    u = server.url
    for bad in HOSTILE_IDS:
        calls = [
            ("PUT", "/datastore/label", {"image": bad, "tag": "final"}, {"label": label}),
            ("PUT", "/datastore/label", {"image": IMAGE, "tag": bad}, {"label": label}),
            ("PUT", "/datastore/image", {"image": bad}, {"file": ct}),
            ("PUT", "/datastore/", {"image": bad}, {"file": ct}),
            ("DELETE", "/datastore/image", {"id": bad}, None),
            ("DELETE", "/datastore/label", {"id": bad, "tag": "final"}, None),
            ("DELETE", "/datastore/label", {"id": IMAGE, "tag": bad}, None),
            ("GET", "/datastore/image", {"image": bad}, None),
            ("HEAD", "/datastore/image", {"image": bad}, None),
            ("GET", "/datastore/label", {"label": bad, "tag": "final"}, None),
            ("GET", "/datastore/label", {"label": IMAGE, "tag": bad}, None),
            ("GET", "/datastore/label/versions", {"image": bad}, None),
            ("GET", "/datastore/image/info", {"image": bad}, None),
            ("PUT", "/datastore/label/info", {"label": bad, "tag": "final"}, None),
            ("POST", "/infer/dints_pancreas", {"image": bad}, None),
            ("POST", "/infer/dints_pancreas", {"image": IMAGE, "session_id": bad}, None),
        ]
        for method, path, params, files in calls:
            opened = {k: open(v, "rb") for k, v in (files or {}).items()}
            try:
                r = requests.request(method, u + path, params=params, files=opened or None, timeout=30)
            finally:
                for f in opened.values():
                    f.close()
            if method == "HEAD":
                assert 400 <= r.status_code < 500, (method, path, bad, r.status_code)
            elif bad.strip():
                refused(r, 400)
            else:
                refused(r, 400, 404)
        for path in (f"/session/{bad}", f"/activelearning/{bad}", f"/scoring/{bad}", f"/train/{bad}", f"/infer/{bad}"):
            method = "GET" if path.startswith("/session") else "POST"
            # every byte percent-encoded, so no client normalises the path before the server sees it
            encoded = path.rsplit("/", 1)[0] + "/" + "".join(f"%{b:02X}" for b in bad.encode())
            r = requests.request(method, u + encoded, json={}, timeout=30)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
    # an absolute server path as the image is never read, inside the temp folder or not
    for path in ("/etc/passwd", str(server.tmp / "x.nii.gz"), str(ct)):
        refused(requests.post(f"{u}/infer/dints_pancreas", params={"image": path}, timeout=30), 400)
    refused(requests.post(f"{u}/infer/dints_pancreas", data={"params": json.dumps({"image": "/etc/passwd"})},
                          timeout=30), 400)
    assert snapshot(server) == before
    alive(server)


def test_upload_never_replaces_an_image(server):
    before = snapshot(server)
    other = server.studies / "phantom_000.nii.gz"
    with open(other, "rb") as f:
        detail = refused(requests.put(f"{server.url}/datastore/", params={"image": IMAGE}, files={"file": f}, timeout=30), 409)
    assert "already exists" in detail
    with open(server.studies / "README.md" if (server.studies / "README.md").exists() else __file__, "rb") as f:
        refused(requests.put(f"{server.url}/datastore/image", params={"image": "notes"},
                             files={"file": ("notes.txt", f)}, timeout=30), 415)
    refused(requests.put(f"{server.url}/datastore/image", params={"image": "broken"},
                         files={"file": ("broken.nii.gz", b"not a nifti")}, timeout=30), 422)
    assert snapshot(server) == before


# ---- bad labels ----------------------------------------------------------------------------------------
def _bad_labels(studies: Path, folder: Path) -> dict[str, Path]:
    img = nib.load(str(studies / f"{IMAGE}.nii.gz"))
    folder.mkdir(exist_ok=True)
    shifted = img.affine.copy()
    shifted[:3, 3] += 5.0
    rotated = img.affine.copy()
    rotated[:3, :3] = rotated[:3, :3] @ np.diag([-1.0, 1.0, 1.0])
    cases = {
        "empty": folder / "empty.nii.gz",
        "garbage": folder / "garbage.nii.gz",
        "truncated": folder / "truncated.nii.gz",
        "value7": label_for(studies, IMAGE, folder / "value7.nii.gz", values=(0, 1, 7)),
        "negative": label_for(studies, IMAGE, folder / "negative.nii.gz", values=(0, -1), dtype=np.int16),
        "float_half": folder / "float_half.nii.gz",
        "nan": folder / "nan.nii.gz",
        "wrong_shape": label_for(studies, IMAGE, folder / "wrong_shape.nii.gz", shape=(img.shape[0] - 1, *img.shape[1:])),
        "shifted_origin": label_for(studies, IMAGE, folder / "shifted.nii.gz", affine=shifted),
        "flipped_axis": label_for(studies, IMAGE, folder / "flipped.nii.gz", affine=rotated),
        "two_d": folder / "two_d.nii.gz",
        "four_d": folder / "four_d.nii.gz",
        "text_file": folder / "label.txt",
        "dicom": folder / "label.dcm",
    }
    cases["empty"].write_bytes(b"")
    cases["garbage"].write_bytes(os.urandom(2000))
    good = label_for(studies, IMAGE, folder / "good.nii.gz").read_bytes()
    cases["truncated"].write_bytes(good[: len(good) // 2])
    half = np.zeros(img.shape, np.float32)
    half[10:20, 10:20, 5:10] = 0.5
    nib.save(nib.Nifti1Image(half, img.affine), str(cases["float_half"]))
    nan = np.zeros(img.shape, np.float32)
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, img.affine), str(cases["nan"]))
    nib.save(nib.Nifti1Image(np.zeros(img.shape[:2], np.uint8), img.affine), str(cases["two_d"]))
    nib.save(nib.Nifti1Image(np.zeros((*img.shape, 2), np.uint8), img.affine), str(cases["four_d"]))
    cases["text_file"].write_text("1 2 3")
    cases["dicom"].write_bytes(b"\0" * 128 + b"DICM")
    return cases


def test_bad_labels_are_refused_and_nothing_is_stored(server, module_tmp, client):
    cases = _bad_labels(server.studies, module_tmp / "bad_labels")
    before = snapshot(server)
    for name, path in cases.items():
        with open(path, "rb") as f:
            r = requests.put(f"{server.url}/datastore/label", params={"image": IMAGE, "tag": "final"},
                             files={"label": (path.name, f)}, timeout=60)
        detail = refused(r, 422)
        assert "Traceback" not in detail, (name, detail)
    # a label for an image that does not exist
    with open(label_for(server.studies, IMAGE, module_tmp / "orphan.nii.gz"), "rb") as f:
        refused(requests.put(f"{server.url}/datastore/label", params={"image": "no_such_image"},
                             files={"label": f}, timeout=30), 404)
    assert snapshot(server) == before
    assert IMAGE not in client.datastore()["objects"] or not client.datastore()["objects"][IMAGE]["labels"]
    alive(server)


def test_float_labels_with_whole_values_are_stored_as_integers(server, module_tmp, client):
    img = nib.load(str(server.studies / "phantom_010.nii.gz"))
    data = np.zeros(img.shape, np.float32)
    data[20:30, 20:30, 5:10] = 1.0
    data[22:25, 22:25, 6:8] = 2.0
    path = module_tmp / "float_whole.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    client.save_label("phantom_010", str(path), tag="final")
    stored = nib.load(client.download_label("phantom_010", "final"))
    assert stored.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(stored.dataobj), data.astype(np.uint8))


# ---- bad parameters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [
    {"sw_overlap": 0.99}, {"sw_overlap": 2}, {"sw_overlap": -1}, {"sw_overlap": "abc"}, {"sw_overlap": True},
    {"sw_batch_size": 0}, {"sw_batch_size": -3}, {"sw_batch_size": "abc"}, {"sw_batch_size": 1.5},
    {"sw_batch_size": 100000}, {"backend": "nope"}, {"result_extension": ".exe"}, {"min_component_fraction": 3},
    {"fast_path": "flase"}, {"save_label": "maybe"},
])
def test_bad_inference_parameters_are_400_before_any_work(server, params):
    t0 = time.time()
    detail = refused(requests.post(f"{server.url}/infer/dints_pancreas", params={"image": IMAGE},
                                   data={"params": json.dumps(params)}, timeout=60), 400)
    assert time.time() - t0 < 5, "refused only after running the inference"
    assert next(iter(params)) in detail or "backend" in detail or "extension" in detail, detail


def test_malformed_requests_get_json_errors(server):
    u = server.url
    refused(requests.post(f"{u}/infer/dints_pancreas", params={"image": IMAGE}, data={"params": "{not json"}, timeout=30), 400)
    refused(requests.post(f"{u}/infer/dints_pancreas", params={"image": IMAGE}, data={"params": "[1, 2]"}, timeout=30), 400)
    refused(requests.post(f"{u}/infer/dints_pancreas", timeout=30), 400)
    refused(requests.post(f"{u}/infer/dints_pancreas", params={"image": IMAGE, "output": "bogus"}, timeout=30), 400)
    refused(requests.post(f"{u}/infer/dints_pancreas", params={"image": IMAGE, "output": "dicom_seg"}, timeout=10), 400)
    refused(requests.put(f"{u}/session/", params={"uncompress": "true"}, files={"files": ("a.zip", b"PK")}, timeout=30), 400)
    refused(requests.post(f"{u}/infer/no_such_model", params={"image": IMAGE}, timeout=30), 404)
    refused(requests.post(f"{u}/train/dints_pancreas", json={"epochs": "many"}, timeout=30), 400)
    refused(requests.post(f"{u}/train/no_such_trainer", json={}, timeout=30), 404)
    refused(requests.post(f"{u}/scoring/no_such_method", json={}, timeout=30), 404)
    refused(requests.post(f"{u}/scoring/dints_uncertainty", json={"force": "maybe"}, timeout=30), 400)
    refused(requests.post(f"{u}/train/dints_pancreas", json={"enqueue": "maybe"}, timeout=30), 400)
    refused(requests.post(f"{u}/activelearning/no_such_strategy", json={}, timeout=30), 404)
    refused(requests.get(f"{u}/session/0123-unknown", timeout=30), 404)
    refused(requests.get(f"{u}/datastore/label/version", params={"image": IMAGE, "rev": 99}, timeout=30), 404)


def test_window_count_cap(server, start_server, module_tmp):
    """A request whose grid needs more windows than ``max_windows`` is refused before the network runs."""
    from lib.infers.segmentation import window_count

    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for shape, overlap in [((185, 185, 84), 0.25), ((96, 96, 96), 0.9), ((200, 97, 300), 0.5), ((250, 250, 120), 0.95)]:
        roi = (96, 96, 96)
        padded = tuple(max(s, r) for s, r in zip(shape, roi))
        expected = len(dense_patch_slices(padded, roi, _get_scan_interval(padded, roi, 3, (overlap,) * 3)))
        assert window_count(shape, roi, overlap) == expected, (shape, overlap)
    srv = start_server(copy_datastore(module_tmp / "cap_studies"), conf={"max_windows": "3"})
    try:
        detail = refused(requests.post(f"{srv.url}/infer/dints_pancreas", params={"image": IMAGE},
                                       data={"params": json.dumps({"sw_overlap": 0.5})}, timeout=120), 400)
        assert "max_windows" in detail
    finally:
        srv.stop()


# ---- history, revisions, label_info --------------------------------------------------------------------
def nifti_bytes(data: bytes) -> nib.Nifti1Image:
    import gzip

    return nib.Nifti1Image.from_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def _versions(server, image, tag="final"):
    r = requests.get(f"{server.url}/datastore/label/versions", params={"image": image, "tag": tag}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_two_submits_keep_both_versions_restorable(server, client, module_tmp):
    image = "phantom_011"
    first = label_for(server.studies, image, module_tmp / "first.nii.gz", seed=1)
    second = label_for(server.studies, image, module_tmp / "second.nii.gz", seed=2)
    from monailabel.client.client import MONAILabelClient

    reader = MONAILabelClient(server.url, tmpdir=str(client._tmpdir), client_id="reader-1")
    r1 = reader.save_label(image, str(first), tag="final", params={"model": "dints_pancreas"})
    r2 = client.save_label(image, str(second), tag="final")
    assert (r1["revision"], r2["revision"]) == (1, 2)
    listing = _versions(server, image)
    assert listing["revision"] == 2 and [v["rev"] for v in listing["versions"]] == [1, 2]
    assert listing["versions"][0]["model"] == "dints_pancreas" and listing["versions"][0]["client_id"] == "reader-1"
    assert sha(client.download_label(image, "final")) == sha(second)
    old = requests.get(f"{server.url}/datastore/label/version", params={"image": image, "rev": 1}, timeout=30)
    assert old.status_code == 200 and old.headers["ETag"] == '"1"'
    assert np.array_equal(nifti_bytes(old.content).get_fdata(), nib.load(str(first)).get_fdata())
    # a stale revision is refused with the current one; the right one is accepted
    with open(first, "rb") as f:
        r = requests.put(f"{server.url}/datastore/label", params={"image": image, "tag": "final"},
                         headers={"If-Match": '"1"'}, files={"label": f}, timeout=30)
    assert r.status_code == 409 and "revision 2" in r.json()["detail"]
    restored = requests.post(f"{server.url}/datastore/label/restore", params={"image": image, "rev": 1},
                             headers={"If-Match": '"2"'}, timeout=30)
    assert restored.status_code == 200, restored.text
    assert restored.json()["revision"] == 3 and restored.headers["ETag"] == '"3"'
    current = requests.get(f"{server.url}/datastore/label", params={"label": image, "tag": "final"}, timeout=30)
    assert current.headers["ETag"] == '"3"'
    assert np.array_equal(nifti_bytes(current.content).get_fdata(), nib.load(str(first)).get_fdata())
    assert [v["rev"] for v in _versions(server, image)["versions"]] == [1, 2, 3]
    # the stock delete keeps the history; the label can come back
    assert requests.delete(f"{server.url}/datastore/label", params={"id": image, "tag": "final"}, timeout=30).status_code == 200
    assert requests.get(f"{server.url}/datastore/label", params={"label": image, "tag": "final"}, timeout=30).status_code == 404
    listing = _versions(server, image)
    assert listing["versions"][-1]["deleted"] is True
    assert requests.post(f"{server.url}/datastore/label/restore", params={"image": image, "rev": 2}, timeout=30).status_code == 200
    assert sha(client.download_label(image, "final")) == sha(second)


def test_label_existing_before_the_history_is_kept_when_overwritten(server, client, module_tmp):
    image = "phantom_001"  # labelled in the sample datastore
    original = sha(server.studies / "labels" / "final" / f"{image}.nii.gz")
    client.save_label(image, str(label_for(server.studies, image, module_tmp / "over.nii.gz")), tag="final")
    listing = _versions(server, image)
    assert [v["rev"] for v in listing["versions"]] == [1, 2]
    assert listing["versions"][0]["sha256"] == original


def test_slicer_label_info_maps_segment_values_to_model_ids(server, client, module_tmp):
    """What the stock 3D Slicer module (tests/server/clients/slicer.py, its onSaveLabel) sends for a segmentation whose
    segments are background, tumor, pancreas (a deleted and re-added segment goes last): label_info tumor idx 2,
    pancreas idx 3 (positions among all segments) and a file with tumor 1, pancreas 2 (the export's order). Stored
    as the model's ids: pancreas 1, tumour 2."""
    from .clients.slicer import Segment, StockSlicer

    image = "phantom_008"
    img = nib.load(str(server.studies / f"{image}.nii.gz"))
    tumour, pancreas = np.zeros(img.shape, bool), np.zeros(img.shape, bool)
    tumour[20:30, 20:30, 5:10] = True
    pancreas[40:50, 40:50, 5:10] = True
    (module_tmp / "slicer").mkdir(exist_ok=True)
    slicer = StockSlicer(server.url, module_tmp / "slicer")
    slicer.fetch_info()
    slicer.volume, slicer.current_sample = img, {"id": image}
    slicer.segments = [Segment("background", np.zeros(img.shape, bool)), Segment("tumor", tumour),
                       Segment("pancreas", pancreas)]
    slicer.save_label()
    assert slicer.saved_label_info == [{"name": "tumor", "idx": 2}, {"name": "pancreas", "idx": 3}]
    sent = np.asarray(nib.load(slicer.saved_file).dataobj)
    assert (sent[tumour] == 1).all() and (sent[pancreas] == 2).all()  # the export numbers segments in node order
    stored = np.asarray(nib.load(client.download_label(image, "final")).dataobj)
    assert (stored[tumour] == 2).all() and (stored[pancreas] == 1).all() and int((stored > 0).sum()) == 1000


def test_nrrd_label_replaces_nifti_label_and_both_stay_in_history(server, client, module_tmp):
    image = "phantom_007"
    img = nib.load(str(server.studies / f"{image}.nii.gz"))
    nifti = label_for(server.studies, image, module_tmp / "n.nii.gz")
    client.save_label(image, str(nifti), tag="final")
    data = np.zeros(img.shape, np.uint8)
    data[10:20, 10:20, 3:8] = 1
    path = module_tmp / "label.nrrd"
    write_nrrd(data, img.affine, str(path))
    client.save_label(image, str(path), tag="final")
    finals = sorted(p.name for p in (server.studies / "labels" / "final").glob(f"{image}.*"))
    assert finals == [f"{image}.nrrd"]
    versions = _versions(server, image)["versions"]
    assert [v["file"] for v in versions] == ["r00001.nii.gz", "r00002.nrrd"]
    old = requests.get(f"{server.url}/datastore/label/version", params={"image": image, "rev": 1}, timeout=30)
    assert np.array_equal(nifti_bytes(old.content).get_fdata(), nib.load(str(nifti)).get_fdata())


# ---- temp files ----------------------------------------------------------------------------------------
def test_uploads_and_results_leave_nothing_in_the_temp_folder(server, module_tmp):
    before = {p.name for p in server.tmp.iterdir()}  # the server's start-up log config stays
    good = label_for(server.studies, "phantom_006", module_tmp / "t_good.nii.gz")
    bad = module_tmp / "t_bad.nii.gz"
    bad.write_bytes(b"junk")
    for path in (good, bad):
        with open(path, "rb") as f:
            requests.put(f"{server.url}/datastore/label", params={"image": "phantom_006"}, files={"label": f}, timeout=30)
    with open(bad, "rb") as f:
        requests.post(f"{server.url}/infer/dints_pancreas", files={"file": ("ct.nii.gz", f)}, timeout=60)
    with open(bad, "rb") as f:
        requests.put(f"{server.url}/session/", files={"files": ("ct.nii.gz", f)}, timeout=60)
    r = requests.post(f"{server.url}/infer/dints_pancreas", params={"image": "phantom_006", "output": "image"}, timeout=300)
    assert r.status_code == 200
    deadline = time.time() + 10
    while time.time() < deadline and {p.name for p in server.tmp.iterdir()} != before:
        time.sleep(0.2)
    assert {p.name for p in server.tmp.iterdir()} == before


# ---- never blocks --------------------------------------------------------------------------------------
def test_info_and_label_submit_answer_while_an_inference_runs(server, module_tmp):
    done = {}

    def infer():
        r = requests.post(f"{server.url}/infer/dints_pancreas", params={"image": "phantom_005", "output": "json"},
                          data={"params": json.dumps({"sw_overlap": 0.8, "fast_path": False})}, timeout=600)
        done["status"] = r.status_code

    worker = threading.Thread(target=infer)
    worker.start()
    time.sleep(1.5)  # the request is past its checks and inside the network
    times = []
    for _ in range(7):
        t0 = time.time()
        assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
        times.append(time.time() - t0)
        time.sleep(0.3)
    t0 = time.time()
    assert requests.get(f"{server.url}/datastore/", timeout=30).status_code == 200
    listing = time.time() - t0
    label = label_for(server.studies, "phantom_004", module_tmp / "during.nii.gz")
    t0 = time.time()
    with open(label, "rb") as f:
        assert requests.put(f"{server.url}/datastore/label", params={"image": "phantom_004"}, files={"label": f},
                            timeout=30).status_code == 200
    submit = time.time() - t0
    still_running = worker.is_alive()
    worker.join()
    assert done["status"] == 200
    assert still_running, "the inference ended before the measurement did; the test measured nothing"
    assert statistics.median(times) < 1.0, times
    assert listing < 1.0 and submit < 2.0, (listing, submit)


# ---- Slicer's local-volume path ------------------------------------------------------------------------
def _lps_nifti(src: Path, dst: Path) -> Path:
    """The same CT stored with its first two axes reversed (LPS voxel order), same world positions."""
    img = nib.load(str(src))
    data = np.asarray(img.dataobj)[::-1, ::-1, :]
    flip = np.eye(4)
    for axis in (0, 1):
        flip[axis, axis] = -1
        flip[axis, 3] = img.shape[axis] - 1
    nib.save(nib.Nifti1Image(data, img.affine @ flip), str(dst))
    return dst


def _nrrd(src: Path, dst: Path) -> Path:
    import nrrd

    from lib.transforms.writer import nrrd_header

    img = nib.load(str(src))
    header = dict(nrrd_header(img.affine), type="int16")
    nrrd.write(str(dst), np.asarray(img.dataobj).astype(np.int16), header=header, index_order="F")
    return dst


@pytest.mark.parametrize("kind", ["lps_nifti", "nrrd"])
def test_slicer_session_upload_is_segmented_in_its_own_geometry(server, client, module_tmp, kind):
    src = server.studies / "phantom_003.nii.gz"
    path = _lps_nifti(src, module_tmp / "local_lps.nii.gz") if kind == "lps_nifti" else _nrrd(src, module_tmp / "local.nrrd")
    session = client.create_session(str(path))
    result, params = client.infer("dints_pancreas", "", {}, session_id=session["session_id"])
    volume, label = read_geometry(str(path)), read_geometry(result)
    assert label.shape == volume.shape
    assert np.allclose(label.affine, volume.affine, atol=1e-4)
    assert params["label_names"] == {"pancreas": 1, "tumor": 2}
    # the same label as for the datastore copy of the image, voxel for voxel once put in the same order
    seg = np.asarray(nib.load(result).dataobj)
    reference, _ = client.infer("dints_pancreas", "phantom_003", {})
    ref = np.asarray(nib.load(reference).dataobj)
    if kind == "lps_nifti":
        seg = seg[::-1, ::-1, :]
    assert (ref > 0).sum() > 100
    assert (seg == ref).mean() > 0.999


def test_weights_upload_is_checked_and_keeps_the_previous_file(server):
    target = server.model_dir / "dints_pancreas_cpu.pt"
    existing = sorted(p.name for p in server.model_dir.iterdir())
    refused(requests.put(f"{server.url}/model/dints_pancreas", files={"file": ("w.pt", b"not a checkpoint")}, timeout=30), 422)
    refused(requests.put(f"{server.url}/model/no_such_model", files={"file": ("w.pt", b"x")}, timeout=30), 404)
    assert sorted(p.name for p in server.model_dir.iterdir()) == existing
    shipped = server.model_dir / "pretrained_dints_pancreas_cpu.pt"
    with open(shipped, "rb") as f:
        r = requests.put(f"{server.url}/model/dints_pancreas", files={"file": ("w.pt", f)}, timeout=60)
    assert r.status_code == 200, r.text
    assert sha(target) == sha(shipped)
    # one checksum format: what PUT /model answers is what /info and every inference report
    info = requests.get(f"{server.url}/info/", timeout=30).json()["models"]["dints_pancreas"]["model"]
    assert r.json()["checksum"] == file_checksum(target) == info["checksum"], (r.json(), info)
    with open(shipped, "rb") as f:
        assert requests.put(f"{server.url}/model/dints_pancreas", files={"file": ("w.pt", f)}, timeout=60).status_code == 200
    assert [p.name for p in server.model_dir.glob("dints_pancreas_cpu.pt.*.replaced")]
    target.unlink()  # leave the module's model folder as it was for later tests
    for p in server.model_dir.glob("*.replaced"):
        p.unlink()
