"""OHIF and a DICOMweb PACS end to end (issue: OHIF + Orthanc): the real Orthanc, the real app and headless
Chromium, inside a private network namespace with only loopback (``unshare -n``; nothing can listen on or talk
to any other address). The run itself is ``tests/e2e/pacs_e2e.py``; its screenshots and logs stay in
``test-artifacts/pacs_ohif/``.

Needs what ``./scripts/setup_pacs.sh`` installs (Debian's orthanc, orthanc-dicomweb, chromium) and root for the
namespace; without them the tests skip with the reason, unless ``DINTS_REQUIRE_PACS=1`` (CI) makes that a failure.

The DICOMweb proxy OHIF talks to (``lib/server/dicom_proxy.py``) is also checked here on its own, against an
in-memory PACS (httpx's mock transport: no server, no socket): the query string and ``Accept`` reach the PACS
exactly, the answer comes back with its status and headers less the hop-by-hop ones, and a PACS that does not
answer is a 502 that names nothing internal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .netns import pacs_problem, run_e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "pacs_ohif"

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def run():
    """The client flows (MONAILabelClient, as 3D Slicer calls them) against the PACS. Training from a viewer on PACS
    labels is driven in tests/e2e/test_ohif_panel.py; the stock panel in Chromium and this client's own training run
    are the slow variant below."""
    return run_e2e("pacs_e2e.py", ARTIFACTS, "PACS end-to-end test", pacs_problem(), "--no-browser --no-train")


@pytest.fixture(scope="module")
def full_run():
    return run_e2e("pacs_e2e.py", ARTIFACTS.with_name("pacs_ohif_full"), "PACS end-to-end test", pacs_problem())


@pytest.mark.slow  # the stock build (--conf ohif stock) in Chromium; ours is tests/e2e/test_ohif_panel.py
def test_stock_ohif_panel_connects_and_segments_the_series(full_run):
    browser = full_run["browser"]
    assert browser["errors"] == [], f"page errors (e.g. the panel's all_labels.push): {browser['errors']}"
    assert browser["bad_assets"] == [], f"OHIF assets not served as themselves: {browser['bad_assets']}"
    assert "dints_pancreas" in browser["models_in_panel"], "the MONAI Label panel does not list the model"
    assert browser["infer_status"] == 200
    # the labelmap is drawn over the CT: no coloured pixels in the viewports before Run, many after
    assert browser["overlay_before"] < 50 and browser["overlay_after"] > 300, browser
    for shot in ("ohif_opened.png", "ohif_connected.png", "ohif_segmented.png"):
        assert (ARTIFACTS.with_name("pacs_ohif_full") / shot).stat().st_size > 10_000, f"screenshot {shot} missing"


def test_info_labels_are_a_list_against_a_pacs_too(run):
    # a list (the stock OHIF panel appends to it); where background goes is --conf background_position's (tested with it)
    assert isinstance(run["info_labels"], list) and sorted(run["info_labels"]) == ["background", "pancreas", "tumor"]


def test_client_infer_on_a_series_answers_in_its_geometry(run):
    infer = run["client"]["infer"]
    assert infer["same_grid"]
    if "real_ct" in run["series"]:  # the real 20-slice series of ../shared (a phantom stands in without it)
        assert infer["shape"] == [512, 512, 20]


def test_submitted_labels_are_dicom_segs_and_next_sample_skips_them(run):
    client = run["client"]
    assert len(client["submit"]["labelled"]) == 2
    assert client["submit"]["refused_status"] == 422  # a label off its series' grid never becomes a SEG
    assert not set(client["next_sample"]["next"]) & set(client["submit"]["labelled"].values())
    assert all(n for n in client["next_sample"]["next"]), "Next Sample offered nothing though a series is unlabelled"


@pytest.mark.slow
def test_training_on_the_pacs_labels_publishes_a_new_model(full_run):
    train = full_run["client"]["train"]
    assert train["after"] != train["before"]


def test_a_series_added_to_the_pacs_is_seen_within_the_refresh_time(run):
    # the e2e run starts the app with --conf dicomweb_refresh_seconds 2 (default 10)
    assert run["client"]["new_series"]["seconds"] <= 2 + 3


def test_a_qido_filter_through_the_proxy_returns_only_the_matching_study(run):
    proxy = run["client"]["proxy"]
    assert proxy["all_studies"] >= 2
    assert proxy["filtered"] == [proxy["expected"]], proxy
    assert proxy["limited"] == 1 and proxy["unknown_patient"] == 0
    assert proxy["content_type"].startswith("application/dicom+json")


def test_an_ohif_labelmap_with_label_info_is_stored_as_a_seg_with_the_right_segments(run):
    ohif = run["client"]["ohif_label"]
    assert ohif["status"] == 200, ohif
    assert sorted(ohif["segments"]) == ["pancreas", "tumor"]
    assert ohif["same_as_drawn"], ohif  # the SEG in Orthanc read back: the drawn pancreas is 1, the tumour 2


def test_an_unusable_seg_is_refused_and_nothing_reaches_the_pacs(run):
    refused = run["client"]["refused_seg"]
    assert refused["status"] == 422 and "liver" in refused["detail"], refused
    assert refused["segs_after"] == refused["segs_before"]


# ---- the proxy alone (no Orthanc, no socket) ----------------------------------------------------------------
PACS = "http://pacs.internal.example:8042/dicom-web"


def pacs_answer(status: int, body: bytes, headers: dict):
    """An answer as a PACS sends it: a body still to be read (streamed), not one httpx has read already."""
    import httpx

    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


@pytest.fixture
def proxied(monkeypatch):
    """A FastAPI app with the proxy routes, and the requests the PACS got (answered by ``answer``)."""
    import httpx
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from monailabel.config import settings

    from lib.server import dicom_proxy

    seen = []
    state = {"answer": lambda request: pacs_answer(200, b"[]", {"Content-Type": "application/dicom+json"})}

    def handler(request: httpx.Request):
        seen.append(request)
        return state["answer"](request)

    monkeypatch.setattr(settings, "MONAI_LABEL_STUDIES", PACS)
    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_USERNAME", "pacs-user")
    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_PASSWORD", "pacs-secret")
    monkeypatch.setattr(dicom_proxy, "transport", httpx.MockTransport(handler))
    monkeypatch.setattr(dicom_proxy, "_client", None)
    app = FastAPI()
    app.include_router(dicom_proxy.router)
    return TestClient(app), seen, state


def test_proxy_forwards_the_query_string_exactly_and_the_accept_header(proxied):
    client, seen, state = proxied
    state["answer"] = lambda request: pacs_answer(
        200, b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]',
        {"Content-Type": "application/dicom+json", "ETag": '"abc"', "Warning": "299 orthanc: fuzzy",
                 "Connection": "keep-alive, X-Hop", "Keep-Alive": "timeout=5", "X-Hop": "1",
                 "Proxy-Authenticate": "Basic", "WWW-Authenticate": 'Basic realm="pacs"', "Set-Cookie": "s=1"})
    query = ("PatientName=Doe%5EJohn*&StudyDate=20200101-20201231&includefield=00100010&includefield=00081030"
             "&limit=25&offset=0&fuzzymatching=true")
    r = client.get(f"/proxy/dicom/qido/studies?{query}",
                   headers={"Accept": "application/dicom+json", "Authorization": "Bearer the-users-token",
                            "Cookie": "session=the-users"})
    assert r.status_code == 200 and r.json() == [{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]
    sent = seen[-1]
    assert sent.method == "GET" and sent.url.path == "/dicom-web/studies"
    assert sent.url.query.decode() == query  # byte for byte, repeated keys and order kept
    assert sent.headers["accept"] == "application/dicom+json"
    # the PACS gets the server's credentials, never the browser's token or cookies
    assert sent.headers["authorization"].startswith("Basic ") and "cookie" not in sent.headers
    assert r.headers["content-type"] == "application/dicom+json" and r.headers["etag"] == '"abc"'
    assert r.headers["warning"] == "299 orthanc: fuzzy"
    for hop in ("connection", "keep-alive", "x-hop", "proxy-authenticate", "www-authenticate", "set-cookie"):
        assert hop not in r.headers, f"{hop} passed back"


def test_proxy_streams_wado_answers_and_stow_bodies_with_their_status(proxied):
    client, seen, state = proxied
    frames = bytes(range(256)) * 4096  # 1 MiB of instance data
    boundary = "0a1b2c"

    def answer(request):
        if request.method == "POST":
            return pacs_answer(409, b'{"detail": "conflict"}', {"Content-Type": "application/dicom+json"})
        return pacs_answer(200, frames, {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                                         "Content-Length": str(len(frames))})

    state["answer"] = answer
    r = client.get("/proxy/dicom/wado/studies/1.2/series/3.4", headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200 and r.content == frames
    assert r.headers["content-type"] == f'multipart/related; type="application/dicom"; boundary={boundary}'
    assert seen[-1].url.path == "/dicom-web/studies/1.2/series/3.4"
    assert seen[-1].headers["accept"] == 'multipart/related; type="application/dicom"'

    body = b"--xyz\r\nContent-Type: application/dicom\r\n\r\n" + frames[:1000] + b"\r\n--xyz--"
    r = client.post("/proxy/dicom/stow/studies", content=body,
                    headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=xyz'})
    assert r.status_code == 409 and r.json() == {"detail": "conflict"}
    assert seen[-1].method == "POST" and seen[-1].content == body
    assert seen[-1].headers["content-type"] == 'multipart/related; type="application/dicom"; boundary=xyz'


@pytest.mark.parametrize("failure", ["refused", "timeout"])
def test_a_pacs_that_does_not_answer_is_a_502_naming_nothing_internal(proxied, failure):
    client, seen, state = proxied
    import httpx

    def answer(request):
        if failure == "refused":
            raise httpx.ConnectError("[Errno 111] Connection refused to pacs.internal.example:8042", request=request)
        raise httpx.ReadTimeout("timed out reading from 10.1.2.3", request=request)

    state["answer"] = answer
    r = client.get("/proxy/dicom/qido/studies?PatientID=x")
    assert r.status_code == 502
    detail = r.json()["detail"]
    assert "PACS" in detail
    for internal in ("pacs.internal.example", "8042", "10.1.2.3", "Errno", "dicom-web", "pacs-user", "pacs-secret"):
        assert internal not in detail, detail
