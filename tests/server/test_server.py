"""The app as a user meets it: the real ``monailabel start_server`` process, spoken to over HTTP with the
client the 3D Slicer plugin uses. One server for the module; each bad input must get its own clear
answer and leave the server serving."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import requests
from monailabel.client.client import MONAILabelClient, MONAILabelClientException

from support.repo import copy_datastore, copy_model_dir

pytestmark = pytest.mark.server

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def server(start_server, module_tmp):
    studies = copy_datastore(module_tmp / "studies")
    model = copy_model_dir(module_tmp / "model")
    srv = start_server(studies, conf={"model_dir": str(model)})
    yield srv
    srv.stop()


def sample_image(server) -> tuple[str, Path]:
    images = sorted(p for p in server.studies.glob("*.nii.gz"))
    unlabelled = [p for p in images if not (server.studies / "labels" / "final" / p.name).exists()]
    path = (unlabelled or images)[0]
    return path.name[: -len(".nii.gz")], path


def nrrd_affine(header) -> np.ndarray:
    """RAS voxel->world matrix from a NRRD header written in LPS space."""
    assert header["space"] == "left-posterior-superior"
    aff = np.eye(4)
    aff[:3, :3] = LPS_TO_RAS @ np.asarray(header["space directions"], dtype=float).T
    aff[:3, 3] = LPS_TO_RAS @ np.asarray(header["space origin"], dtype=float)
    return aff


def assert_still_serving(server):
    assert server.alive(), server.log()[-3000:]
    r = requests.get(f"{server.url}/info/", timeout=30)
    assert r.status_code == 200


def test_ohif_assets_are_served_as_themselves(server):
    """MONAI Label 0.8.5 answered every nested OHIF file with index.html; the viewer then broke on its images and
    WebAssembly decoders. Checked on the build this server serves (ours where plugins/ohif/build.sh has run)."""
    from lib.server.ohif import OUR_BUILD, stock_folder

    ours = (OUR_BUILD / "index.html").is_file()
    base = f"{server.url}/ohif"
    r = requests.get(f"{base}/assets/android-chrome-192x192.png", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    folder = OUR_BUILD if ours else Path(stock_folder())
    wasm_file = sorted(folder.rglob("*.wasm"))[0].relative_to(folder).as_posix()
    wasm = requests.get(f"{base}/{wasm_file}", timeout=30)
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm" and wasm.content[:4] == b"\0asm"
    page = requests.get(f"{base}/monai-label?StudyInstanceUIDs=1.2.3", timeout=30)  # an OHIF route, not a file
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    if ours:  # re-based to /ohif/, with our extension and mode beside it
        assert 'window.PUBLIC_URL="/ohif/"' in page.text and 'src="/app-config.js"' not in page.text
        extension = requests.get(f"{base}/monai-label/extension.js", timeout=30)
        assert extension.status_code == 200 and extension.headers["content-type"].startswith("text/javascript")
    assert requests.get(f"{base}/assets/no-such-image.png", timeout=30).status_code == 404
    outside = requests.get(f"{base}/..%2F..%2F..%2Fapp.py", timeout=30)
    assert outside.status_code in (200, 404) and b"MONAILabelApp" not in outside.content


def test_info_lists_model_and_labels(client):
    info = client.info()
    # a list by value, as the stock OHIF v3 panel needs it (it appends to it); background (for the click model)
    # last by default, as in MONAI Label's sample apps: 3D Slicer's idx then equals its export values
    assert info["labels"] == ["pancreas", "tumor", "background"]
    model = info["models"]["dints_pancreas"]
    assert model["type"] == "segmentation"
    assert model["labels"] == {"pancreas": 1, "tumor": 2}
    assert len(model["model"]["checksum"]) == 12
    assert info["datastore"]["total"] >= 10


@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz"])
def test_infer_returns_label_in_input_geometry(server, client, ext):
    image_id, path = sample_image(server)
    ref = nib.load(str(path))
    out, params = client.infer("dints_pancreas", image_id, {"result_extension": ext})
    assert out.endswith(ext), out
    if ext == ".nrrd":
        data, header = nrrd.read(out)
        affine = nrrd_affine(header)
    else:
        img = nib.load(out)
        data, affine = np.asarray(img.dataobj), img.affine
    assert data.shape == ref.shape
    np.testing.assert_allclose(affine, ref.affine, atol=1e-4)
    assert set(np.unique(data).tolist()) <= {0, 1, 2}
    assert (data == 1).sum() > 0, "no pancreas found on a sample phantom"
    assert params["label_names"] == {"pancreas": 1, "tumor": 2}
    assert params["model"]["checksum"] == client.info()["models"]["dints_pancreas"]["model"]["checksum"]


def test_unknown_image_id_is_404(server, client):
    with pytest.raises(MONAILabelClientException) as err:
        client.infer("dints_pancreas", "no_such_image", {})
    assert "404" in err.value.msg and "not in the datastore" in err.value.msg
    assert_still_serving(server)


@pytest.mark.parametrize("image_id", ["../../etc/passwd", "/etc/passwd", "labels/final/../../x"])
def test_image_id_cannot_escape_studies_folder(server, client, image_id):
    with pytest.raises(MONAILabelClientException) as err:
        client.infer("dints_pancreas", image_id, {})
    assert "400" in err.value.msg
    assert_still_serving(server)


@pytest.mark.parametrize("value", ["lots", 1.5, -0.1])
def test_bad_component_fraction_is_400_before_any_work(server, client, value):
    image_id, _ = sample_image(server)
    with pytest.raises(MONAILabelClientException) as err:
        client.infer("dints_pancreas", image_id, {"min_component_fraction": value})
    assert "400" in err.value.msg and "min_component_fraction" in err.value.msg
    assert_still_serving(server)


def _upload(client, path: Path, params=None):
    return client.infer("dints_pancreas", "", params or {}, file=str(path))


def _nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _ct_like(shape=(40, 40, 20)) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.normal(40, 20, size=shape).astype(np.int16)
    data[:4] = -1000
    return data


def bad_inputs(tmp: Path, server) -> dict[str, tuple[Path, int, str]]:
    _, good = sample_image(server)
    raw = good.read_bytes()
    cases = {}
    corrupt = tmp / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not a NIfTI file at all" * 100)
    cases["corrupt"] = (corrupt, 422, "cannot read")
    truncated = tmp / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = (truncated, 422, "cannot read")
    cases["2d"] = (_nifti(tmp / "slice.nii.gz", _ct_like((64, 64))), 422, "3-D CT volume")
    cases["single_slice"] = (_nifti(tmp / "one.nii.gz", _ct_like((64, 64, 1))), 422, "3-D CT volume")
    cases["4d"] = (_nifti(tmp / "series.nii.gz", np.stack([_ct_like()] * 3, axis=-1)), 422, "4-D image")
    mr = np.random.default_rng(1).uniform(0, 1200, size=(48, 48, 24)).astype(np.float32)
    cases["non_ct"] = (_nifti(tmp / "mr.nii.gz", mr), 422, "Hounsfield")
    # a header that claims 2048^3 voxels: refused from the header, before any voxel is read
    huge = nib.Nifti1Image(np.zeros((2, 2, 2), dtype=np.int16), np.eye(4))
    huge.header.set_data_shape((2048, 2048, 2048))
    hdr_path = tmp / "huge.nii.gz"
    with gzip.open(hdr_path, "wb") as f:
        f.write(huge.header.binaryblock + b"\x00" * 4 + b"\x00" * 4096)
    cases["huge"] = (hdr_path, 413, "limit")
    return cases


@pytest.mark.parametrize("case", ["corrupt", "truncated", "2d", "single_slice", "4d", "non_ct", "huge"])
def test_bad_input_gets_clear_error_and_server_keeps_serving(server, client, module_tmp, case):
    tmp = module_tmp / f"bad_{case}"
    tmp.mkdir()
    path, status, words = bad_inputs(tmp, server)[case]
    with pytest.raises(MONAILabelClientException) as err:
        _upload(client, path)
    msg = err.value.msg
    assert f"Status: {status}" in msg, msg
    assert words in msg, msg
    assert "Traceback" not in msg
    assert_still_serving(server)


def test_real_volume_over_size_limit_is_refused(start_server, module_tmp):
    """A configured voxel limit applies to real uploads too (413, documented as --conf max_voxels)."""
    studies = copy_datastore(module_tmp / "studies_small_limit")
    model = copy_model_dir(module_tmp / "model_small_limit")
    srv = start_server(studies, conf={"model_dir": str(model), "max_voxels": "10000"})
    try:
        c = MONAILabelClient(srv.url, tmpdir=str(module_tmp))
        image_id = sorted(studies.glob("*.nii.gz"))[0].name[: -len(".nii.gz")]
        with pytest.raises(MONAILabelClientException) as err:
            c.infer("dints_pancreas", image_id, {})
        assert "Status: 413" in err.value.msg and "max_voxels" in err.value.msg
        assert c.info()["models"]["dints_pancreas"]
    finally:
        srv.stop()


def test_upload_of_valid_ct_works(server, client, module_tmp):
    """Slicer can also send the volume itself rather than a datastore id."""
    _, good = sample_image(server)
    copy = module_tmp / "upload.nii.gz"
    shutil.copy(good, copy)
    out, _ = _upload(client, copy, {"result_extension": ".nii.gz"})
    assert nib.load(out).shape == nib.load(str(good)).shape
