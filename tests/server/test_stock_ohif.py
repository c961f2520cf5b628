"""The stock OHIF v3 MONAI Label panel (0.8.5), as the server sees it (tests/server/clients/ohif.py): connect, Run, point
prompts with and without a chosen organ. Update Model is tested in tests/server/test_train_server.py, the DICOMweb
proxy's study search in tests/e2e/test_pacs_ohif.py."""

from __future__ import annotations

import time

import nibabel as nib
import pytest

from support.repo import copy_datastore, copy_model_dir

from .clients.ohif import OHIFError, OHIFPanel

pytestmark = pytest.mark.server
IMAGE = "phantom_006"


@pytest.fixture(scope="module")
def server(start_server, module_tmp):
    srv = start_server(copy_datastore(module_tmp / "studies"), conf={"model_dir": str(copy_model_dir(module_tmp / "model"))})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def panel(server):
    shape = nib.load(str(server.studies / f"{IMAGE}.nii.gz")).shape
    p = OHIFPanel(server.url, shape)
    p.connect()
    return p


def test_run_shows_every_model_label_in_its_own_segment(panel):
    view = panel.run(IMAGE, "dints_pancreas")
    shown = set(int(v) for v in set(view.ravel().tolist())) - {0}
    assert shown and shown <= {panel.segments["pancreas"], panel.segments["tumor"]}
    assert panel.segments["pancreas"] in shown


def test_points_placed_before_an_organ_is_chosen_are_refused_at_once(panel):
    """The panel files points placed with no organ chosen under the key "null" and keeps sending them until
    *Clear All Points*: the server must say so in milliseconds, not after a whole automatic pass."""
    panel.select_model("deepedit_pancreas")
    centre = [s // 2 for s in panel.labelmap.shape]
    panel.add_point(centre)
    t0 = time.time()
    with pytest.raises(OHIFError) as err:
        panel.point_prompts(IMAGE)
    assert err.value.response.status_code == 400 and "null" in err.value.response.text
    assert time.time() - t0 < 1.0
    # the annotator then chooses the organ and clicks again: answered (the stale "null" points cleared first)
    panel.select_model("deepedit_pancreas")
    panel.change_label("pancreas")
    panel.add_point(centre)
    sent, view = panel.point_prompts(IMAGE)
    assert sent["pancreas"] == [centre] and "null" not in sent
    assert (view == panel.segments["pancreas"]).any()
