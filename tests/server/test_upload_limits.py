"""Checks before work: an upload is refused for what its header or its size says, before the server allocates
or decompresses anything, and hostile uploads never slow the server down for everybody else."""

from __future__ import annotations

import gzip
import io
import socket
import struct
import threading
import time
import uuid
import zlib

import nibabel as nib
import numpy as np
import psutil
import pytest
import requests

from support.repo import copy_datastore, copy_model_dir

from lib.server.guard import body_cap

pytestmark = pytest.mark.server

MB = 1 << 20


def test_body_caps_by_route():
    assert body_cap("PUT", "/datastore/label", 100, 10) == 10 * MB
    assert body_cap("PUT", "/session/", 100, 10) == 100 * MB
    assert body_cap("POST", "/infer/deepedit_pancreas", 100, 10) == 100 * MB
    assert body_cap("POST", "/train/dints_pancreas", 100, 10) == 16 * MB


@pytest.fixture(scope="module")
def server(start_server, module_tmp):
    studies = copy_datastore(module_tmp / "studies")
    model = copy_model_dir(module_tmp / "model")
    srv = start_server(studies, conf={"model_dir": str(model), "max_upload_mb": "8",
                                      "max_label_upload_mb": "2", "upload_idle_seconds": "2",
                                      "header_timeout_seconds": "2"})
    yield srv
    srv.stop()


def rss_mb(server) -> float:
    proc = psutil.Process(server.proc.pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / MB


def image_id(server) -> str:
    return sorted(p.name[:-7] for p in server.studies.glob("*.nii.gz"))[0]


def tiny_header_huge_claim() -> bytes:
    """A .nii.gz of about 125 bytes whose header claims 2000^3 voxels (and holds none)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4
    return gzip.compress(raw, 9)


def gzip_bomb(claim=(1024, 1024, 512)) -> bytes:
    """A header claiming 512 MB of voxels followed by that many zeros, gzip-compressed (about 0.5 MB)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(claim)
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = io.BytesIO()
    out.write(comp.compress(hdr.binaryblock + b"\0" * 4))
    chunk = b"\0" * (64 * MB)
    for _ in range(int(np.prod(claim)) // len(chunk)):
        out.write(comp.compress(chunk))
    out.write(comp.flush())
    return out.getvalue()


def put_label(server, data: bytes, name="label.nii.gz"):
    return requests.put(f"{server.url}/datastore/label", params={"image": image_id(server), "tag": "final"},
                        files={"label": (name, data)}, timeout=60)


def test_labels_claiming_huge_volumes_are_refused_fast_without_allocating(server):
    before = rss_mb(server)
    for data in (tiny_header_huge_claim(), gzip_bomb()):
        t0 = time.time()
        r = put_label(server, data)
        assert r.status_code == 422, r.text
        assert time.time() - t0 < 1.0
        assert "voxel grid" in r.json()["detail"] or "shape" in r.json()["detail"]
    assert rss_mb(server) - before < 100


def test_click_request_label_is_checked_before_it_is_read(server):
    """The stock Slicer module sends its current segmentation with a click (``label``): a file claiming a huge grid
    is refused from its header, before the automatic pass and without allocating."""
    before = rss_mb(server)
    t0 = time.time()
    r = requests.post(f"{server.url}/infer/deepedit_pancreas", params={"image": image_id(server)},
                      files={"label": ("label.nii.gz", tiny_header_huge_claim())},
                      data={"params": '{"pancreas": [[10, 10, 10]], "tumor": [], "background": []}'}, timeout=60)
    assert r.status_code == 422 and "voxel grid" in r.json()["detail"], r.text
    assert time.time() - t0 < 1.0
    assert rss_mb(server) - before < 100


def test_oversized_bodies_get_413_before_or_while_they_arrive(server):
    t0 = time.time()
    r = put_label(server, b"\0" * (3 * MB))
    assert r.status_code == 413 and time.time() - t0 < 2.0, r.text

    def chunks():  # no Content-Length (chunked): the cap is counted as the body streams in
        yield b'--x\r\nContent-Disposition: form-data; name="files"; filename="ct.nii.gz"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * MB
        yield b"\r\n--x--\r\n"

    r = requests.put(f"{server.url}/session/", data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"},
                     timeout=60)
    assert r.status_code == 413, r.text
    assert requests.get(f"{server.url}/info/", timeout=5).status_code == 200


def test_a_trickling_upload_is_cut_off(server):
    host, port = "127.0.0.1", server.port
    with socket.create_connection((host, port), timeout=30) as s:
        body_len = 1000
        s.sendall((f"PUT /datastore/label?image={image_id(server)}&tag=final HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {body_len}\r\n\r\n").encode())
        s.sendall(b"--x\r\n")
        t0 = time.time()
        reply = s.recv(4096)  # nothing more is sent: the server must answer by itself
        assert b" 408 " in reply.split(b"\r\n", 1)[0], reply[:200]
        assert time.time() - t0 < 10


def test_twenty_concurrent_bad_uploads_leave_the_server_responsive(server):
    bomb = tiny_header_huge_claim()
    before = rss_mb(server)
    threads = [threading.Thread(target=put_label, args=(server, bomb)) for _ in range(20)]
    for t in threads:
        t.start()
    times = []
    for _ in range(5):
        t0 = time.time()
        assert requests.get(f"{server.url}/info/", timeout=10).status_code == 200
        times.append(time.time() - t0)
    for t in threads:
        t.join(60)
    assert max(times) < 1.0, times
    assert rss_mb(server) - before < 100


def test_connections_that_never_finish_their_headers_are_closed(server):
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(b"GET /info/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and nothing more
            socks.append(s)
        t0 = time.time()
        assert requests.get(f"{server.url}/info/", timeout=5).status_code == 200
        assert time.time() - t0 < 1.0
        closed = 0
        for s in socks:
            s.settimeout(10)
            try:
                closed += s.recv(100) == b""
            except (ConnectionResetError, socket.timeout):
                closed += 0
        assert closed == len(socks)
    finally:
        for s in socks:
            s.close()


def test_a_slow_trickle_is_cut_off_too(server):
    """5 bytes every half second never leaves the connection idle, but is far below the minimum rate."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall((f"PUT /datastore/label?image={image_id(server)}&tag=final HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
                   f'--x\r\nContent-Disposition: form-data; name="label"; filename="l.nii.gz"\r\n\r\n').encode())
        s.settimeout(0.5)
        t0, reply = time.time(), b""
        while time.time() - t0 < 20 and not reply:
            try:
                s.sendall(b"xxxxx")
                reply = s.recv(4096)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert b" 408 " in reply.split(b"\r\n", 1)[0], reply[:200]
        assert time.time() - t0 < 10


def test_a_session_claiming_a_huge_volume_is_refused_and_sessions_are_private(server):
    r = requests.put(f"{server.url}/session/", files={"files": ("ct.nii.gz", tiny_header_huge_claim())}, timeout=60)
    assert r.status_code == 413 and "max_voxels" in r.json()["detail"], r.text
    volume = (server.studies / f"{image_id(server)}.nii.gz").read_bytes()
    made = [requests.put(f"{server.url}/session/", files={"files": ("ct.nii.gz", volume)}, timeout=60) for _ in range(2)]
    assert all(m.status_code == 200 for m in made), [m.text for m in made]
    ids = [m.json()["session_id"] for m in made]
    assert all(uuid.UUID(i).version == 4 for i in ids)  # random, not time-based: not guessable from another's
    assert all("path" not in m.json()["session_info"] and "image" not in m.json()["session_info"] for m in made)
    shown = requests.get(f"{server.url}/session/{ids[0]}", timeout=30)
    assert shown.status_code == 200 and "path" not in shown.json() and "image" not in shown.json()
    assert str(server.studies.parent) not in shown.text and "/tmp" not in shown.text and "sessions" not in shown.text
    got = requests.get(f"{server.url}/session/{ids[0]}", params={"image": True}, timeout=30)
    assert got.status_code == 200 and got.content == volume
    for i in ids:
        requests.delete(f"{server.url}/session/{i}", timeout=30)
