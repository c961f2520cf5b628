"""Our OHIF viewer end to end (plugins/ohif: OHIF 3.13 with the app's MONAI Label panel): the real Orthanc, the real
app and headless Chromium inside a private network namespace with only loopback. The run is
``tests/e2e/ohif_panel_e2e.py``; its screenshots, console and ``result.json`` stay in ``test-artifacts/ohif_panel/``.

Needs what ``./scripts/setup_pacs.sh`` installs (Orthanc, its DICOMweb plugin, Chromium, node), our build
(``plugins/ohif/build.sh``, run by the set-up) and root for the namespace; without them the tests skip with the
reason, unless ``DINTS_REQUIRE_PACS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .netns import pacs_problem, run_e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ohif_panel"

pytestmark = pytest.mark.server


def missing() -> str | None:
    from lib.server.ohif import OUR_BUILD

    if not (OUR_BUILD / "index.html").is_file():
        return f"our OHIF build is missing ({OUR_BUILD}): run plugins/ohif/build.sh (needs node and npm)"
    return pacs_problem()


@pytest.fixture(scope="module")
def run():
    result = run_e2e("ohif_panel_e2e.py", ARTIFACTS, "OHIF panel end-to-end test", missing())
    return {**result["browser"], "login": result["login"]}


def test_the_page_has_no_errors_and_nothing_leaves_loopback(run):
    assert run["errors"] == [], run["errors"]
    assert run["outside_requests"] == [], f"requests to other hosts (fonts, CDNs, ...): {run['outside_requests']}"


def test_the_panel_connects_and_lists_the_task_labels(run):
    assert run["connect"]["status"].startswith("Connected")
    labels = " ".join(run["connect"]["labels"])
    assert "pancreas" in labels and "tumor" in labels


def test_the_automatic_segmentation_is_shown_exactly_as_the_server_answered(run):
    seg = run["segment"]
    assert seg["same_as_server"], seg  # voxel by voxel, on the viewer's grid: no flip, shift or lost label
    assert seg["counts"].get("1", 0) > 100 and seg["counts"].get("2", 0) > 0, seg["counts"]


def test_a_point_on_the_chosen_organ_prompts_that_organ_only(run):
    point = run["point"]
    assert point["sent_click"] == point["ijk"]  # the clicked voxel reaches the server as the panel computed it
    assert point["params"]["label"] == "pancreas" and len(point["params"]["foreground"]) == 1
    assert point["params"]["background"] == []  # no point of another segment, no stale point
    assert point["value_at_click"] == 1  # the structure around the click is pancreas now
    assert point["after"]["2"] == point["before"]["2"]  # a pancreas prompt never erases the tumour inside it


def test_save_stores_the_viewers_labelmap_as_a_seg_with_the_task_values(run):
    assert run["save"]["same_as_viewer"]


def test_next_sample_opens_an_unlabelled_series_in_place_and_keeps_the_connection(run):
    nxt = run["next"]
    assert nxt["same_page"], "Next Sample reloaded the page"
    assert nxt["info_calls"] == 0, "the panel connected again after Next Sample"
    assert "pancreas" in " ".join(nxt["labels"])
    assert "SeriesInstanceUIDs=" in nxt["url"]


def test_a_stored_seg_opens_for_review_with_its_segments(run):
    assert sorted(run["review"]["segments"]) == ["pancreas", "tumor"]


def test_a_point_on_the_real_ct_series_is_answered_where_it_was_placed(run):
    if "real_ct" not in run:
        pytest.skip("the real DICOM series of ../shared/data/real-ct is not here")
    real = run["real_ct"]
    assert real["same_as_server"], real  # a clinical series' own geometry, voxel by voxel
    assert real["region"] > 500 and real["value_at_click"] == 1, real


def test_training_from_the_panel_uses_the_saved_labels_and_reports_its_outcome(run):
    train = run["train"]
    assert train["sent"] == {"epochs": 1}
    assert len(train["used"]) == 2  # both series the panel saved (training + validation)
    if train["published"]:
        assert train["after"] != train["before"] and "served" in train["outcome"]
    else:
        assert train["reason"] and train["reason"] in train["outcome"]
    for shot in ("01_connected", "02_segmented", "03_point_on_pancreas", "04_saved", "05_next_sample",
                 "07_stored_seg", "10_trained"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 10_000, f"screenshot {shot} missing"


def test_with_authentication_on_nothing_is_read_before_a_log_in_and_a_wrong_token_is_refused(run):
    login = run["login"]
    assert login["dicomweb_before_login"] == [], "the viewer asked the PACS before the log-in"
    assert "401" in login["refused"] and "unknown token" in login["refused"]
    assert login["status"].startswith("Connected")
    for shot in ("11_login", "12_logged_in"):
        assert (ARTIFACTS / f"{shot}.png").stat().st_size > 5_000, f"screenshot {shot} missing"
