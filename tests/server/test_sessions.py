"""Many annotators' uploads on one server, bounded: upload sessions are capped in number and in size (a refused
upload leaves nothing on disk or in the server's temporary folder), and an idle session expires and frees its place.
(Moved from tests/unit/test_annotators.py, whose other tests run the interactive task in process.)"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from support.repo import copy_datastore, copy_model_dir


# ---- sessions: many annotators' uploads on one server, bounded ------------------------------------------------
MB = 1 << 20


@pytest.fixture(scope="module")
def session_server(tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("sessions")
    (root / "tmp").mkdir()
    srv = start_server(copy_datastore(root / "studies"),
                       conf={"model_dir": str(copy_model_dir(root / "model")), "interactive": "false",
                             "session_max_count": "2", "session_max_mb": "1", "session_idle_seconds": "3"},
                       env={"MONAI_LABEL_SESSION_PATH": str(root / "store"), "TMPDIR": str(root / "tmp")})
    srv.store, srv.tmp = root / "store", root / "tmp"
    srv.tmp_files = sorted(srv.tmp.iterdir())  # the server's start-up log config stays there
    srv.volume = root / "small.nii.gz"  # a valid volume well under the 1 MB cap
    nib.save(nib.Nifti1Image(np.full((24, 24, 16), -500, np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), str(srv.volume))
    yield srv
    srv.stop()


def _put(server, path=None, data=None):
    import requests

    if data is not None:
        return requests.put(f"{server.url}/session/", data=data, timeout=60,
                            headers={"Content-Type": "multipart/form-data; boundary=x"})
    with open(path, "rb") as f:
        return requests.put(f"{server.url}/session/", files=[("files", (os.path.basename(path), f))],
                            data={"client_id": "user-xyz"}, timeout=60)


def _stored(server) -> list[str]:
    return sorted(p.name for p in server.store.iterdir()) if server.store.exists() else []


def _end_all(server):
    import requests

    for sid in _stored(server):
        requests.delete(f"{server.url}/session/{sid}", timeout=30)


@pytest.mark.server
def test_sessions_are_capped_in_number(session_server):
    import requests

    srv = session_server
    _end_all(srv)
    ids = []
    for _ in range(2):
        r = _put(srv, srv.volume)
        assert r.status_code == 200, r.text
        ids.append(r.json()["session_id"])
    r = _put(srv, srv.volume)
    assert r.status_code == 503 and "session_max_count" in r.json()["detail"], r.text
    assert _stored(srv) == sorted(ids)  # the refused upload left nothing
    assert sorted(srv.tmp.iterdir()) == srv.tmp_files
    assert requests.delete(f"{srv.url}/session/{ids[0]}", timeout=30).status_code == 200  # ending one frees a place
    r = _put(srv, srv.volume)
    assert r.status_code == 200, r.text
    _end_all(srv)


@pytest.mark.server
def test_a_session_over_its_size_is_refused_and_leaves_nothing(session_server, tmp_path):
    import requests

    srv = session_server
    _end_all(srv)
    big = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(np.zeros((128, 128, 40), np.int16), np.eye(4)), str(big))  # 1.25 MB > 1 MB
    r = _put(srv, big)
    assert r.status_code == 413 and "session_max_mb" in r.json()["detail"], r.text

    def chunks():  # no Content-Length: cut as it streams in, past the cap
        yield b'--x\r\nContent-Disposition: form-data; name="files"; filename="ct.nii.gz"\r\n\r\n'
        for _ in range(3):
            yield b"\0" * MB
        yield b"\r\n--x--\r\n"

    r = _put(srv, data=chunks())
    assert r.status_code == 413 and "session_max_mb" in r.json()["detail"], r.text
    assert _stored(srv) == [] and sorted(srv.tmp.iterdir()) == srv.tmp_files
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a volume")
    r = _put(srv, junk)
    assert r.status_code == 422, r.text
    assert requests.put(f"{srv.url}/session/", params={"uncompress": "true"}, files={"files": ("a.zip", b"PK")},
                        timeout=30).status_code == 400
    assert _stored(srv) == [] and sorted(srv.tmp.iterdir()) == srv.tmp_files
    r = _put(srv, srv.volume)  # under the cap: fine
    assert r.status_code == 200, r.text
    _end_all(srv)


@pytest.mark.server
def test_an_idle_session_expires_and_frees_its_place(session_server):
    import time

    import requests

    srv = session_server
    _end_all(srv)
    first = _put(srv, srv.volume).json()["session_id"]
    assert _put(srv, srv.volume).status_code == 200
    assert _put(srv, srv.volume).status_code == 503  # full
    time.sleep(4.5)  # both unused for longer than session_idle_seconds (3)
    r = requests.post(f"{srv.url}/infer/dints_pancreas", params={"session_id": first}, timeout=60)
    assert r.status_code == 404 and "expired" in r.json()["detail"], r.text
    assert first not in _stored(srv)  # removed from disk
    assert _put(srv, srv.volume).status_code == 200  # and the places are free again
    _end_all(srv)
