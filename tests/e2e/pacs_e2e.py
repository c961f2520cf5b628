"""The OHIF + PACS end-to-end run, as a script: ``tests/e2e/test_pacs_ohif.py`` runs it inside a private network
namespace that has only loopback (``unshare -n``), so Orthanc (which listens on every address) and the app can
talk to nobody else.

    unshare -n bash -c 'ip link set lo up; python tests/e2e/pacs_e2e.py --out DIR'

Steps (each timed, written to ``DIR/result.json``; a failed step stops the run and is recorded with its reason):
Orthanc from the project's configuration, the sample phantoms written as DICOM series and the real DICOM series
(``../shared``, when present) loaded into it; the app against its DICOMweb URL; headless Chromium opening OHIF's
MONAI Label mode for a series, connecting the panel and running the segmentation (labelmap checked in the page,
screenshots saved); then OHIF's study search through the app's DICOMweb proxy (a QIDO filter answers only the
matching study) and through ``MONAILabelClient``: infer on a series, submit two labels (DICOM SEGs appear in
Orthanc), Next Sample never hands out a labelled series, train one epoch (a new model checksum in ``/info``), a
series added to the PACS is seen; last an OHIF-style labelmap with ``label_info`` (a SEG with the right segments)
and a SEG that cannot be a label (422, nothing stored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from support.server import wait_train  # noqa: E402

REAL_SERIES = REPO_ROOT.parent / "shared" / "data" / "real-ct" / "example_ct_dicom_raw"
SAMPLES = REPO_ROOT / "sample-datastore"
MODEL = "dints_pancreas"
TRAIN = {"epochs": 1, "val_interval": 1, "batch_size": 1, "val_roi_size": 64, "sw_overlap": 0.25,
         "publish_policy": "best"}


class Run:
    def __init__(self, out: Path):
        self.out = out
        self.result = {"steps": [], "ok": False}

    def step(self, name: str, fn, *args, **kwargs):
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            self.result["steps"].append({"name": name, "seconds": round(time.time() - t0, 2), "ok": False,
                                         "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]})
            self.save()
            raise
        entry = {"name": name, "seconds": round(time.time() - t0, 2), "ok": True}
        if isinstance(value, dict) and value.get("report"):
            entry["report"] = value["report"]
        self.result["steps"].append(entry)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {entry['seconds']} s {entry.get('report', '')}", flush=True)
        self.save()
        return value

    def save(self):
        (self.out / "result.json").write_text(json.dumps(self.result, indent=1))


def load_series(orthanc_url: str, tmp: Path) -> dict:
    from lib.data.dicom_series import write_nifti_as_series
    from lib.pacs.orthanc import upload_files, upload_folder

    series = {}
    for name in ("phantom_000", "phantom_001"):
        uids = write_nifti_as_series(SAMPLES / f"{name}.nii.gz", tmp / name, patient_id=name)
        upload_folder(orthanc_url, tmp / name)
        series[name] = uids["SeriesInstanceUID"]
    if REAL_SERIES.is_dir():
        import pydicom

        files = sorted(p for p in REAL_SERIES.iterdir() if p.is_file())
        upload_files(orthanc_url, files)
        series["real_ct"] = str(pydicom.dcmread(str(files[0]), stop_before_pixels=True).SeriesInstanceUID)
    return {"series": series, "report": {k: v[-12:] for k, v in series.items()}}


def launch_chromium(playwright):
    """Debian's Chromium, headless, software rendering (no GPU in the namespace)."""
    return playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                      args=["--no-sandbox", "--disable-gpu", "--use-gl=swiftshader",
                                            "--enable-unsafe-swiftshader"])


def browser_segmentation(app_url: str, study_uid: str, out: Path) -> dict:
    """OHIF's MONAI Label mode for the study: connect the panel, run the segmentation, check the labelmap."""
    from playwright.sync_api import sync_playwright

    errors, console = [], []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        bad_assets = []

        def on_response(r):
            url = r.url
            if "/ohif/" in url and url.endswith((".png", ".wasm", ".svg", ".js", ".css")):
                ctype = r.headers.get("content-type", "")
                if r.status != 200 or "text/html" in ctype:
                    bad_assets.append(f"{r.status} {ctype} {url}")

        page.on("response", on_response)
        page.goto(f"{app_url}/ohif/monai-label?StudyInstanceUIDs={study_uid}", wait_until="domcontentloaded")
        page.wait_for_timeout(8000)
        page.screenshot(path=str(out / "ohif_opened.png"))
        inputs = page.locator("input")  # the panel's server address (it defaults to port 8000)
        for i in range(inputs.count()):
            if inputs.nth(i).input_value().startswith("http"):
                inputs.nth(i).fill(app_url + "/")
                break
        page.locator("button.actionButton").first.click()
        page.wait_for_timeout(4000)
        hide = page.get_by_text("Confirm and Hide")
        if hide.count():
            hide.first.click()
        page.screenshot(path=str(out / "ohif_connected.png"))
        before = overlay_pixels(out / "ohif_connected.png")
        run_button = page.locator("button:visible", has_text="Run").first
        t0 = time.time()
        with page.expect_response(lambda r: "/infer/" in r.url, timeout=300000) as resp:
            run_button.click()
        infer_status = resp.value.status
        infer_seconds = time.time() - t0
        page.wait_for_timeout(6000)
        page.screenshot(path=str(out / "ohif_segmented.png"))
        after = overlay_pixels(out / "ohif_segmented.png")
        panel = page.inner_text("body")  # what the page says, panel included
        (out / "page_text.txt").write_text(panel)
        (out / "console.txt").write_text("\n".join(console))
        browser.close()
    return {"errors": errors, "bad_assets": bad_assets, "infer_status": infer_status, "overlay_before": before,
            "overlay_after": after, "models_in_panel": [m for m in ("dints_pancreas", "deepedit_pancreas") if m in panel],
            "report": {"page_errors": len(errors), "bad_assets": len(bad_assets), "infer_status": infer_status,
                       "infer_seconds": round(infer_seconds, 1), "overlay_pixels": [before, after]}}


def overlay_pixels(png: Path) -> int:
    """Coloured pixels inside the three viewports: the CT is grey, a labelmap is not (the UI's blue borders and
    text are outside the cropped regions)."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h, w, _ = img.shape
    region = img[int(0.15 * h):int(0.85 * h), int(0.21 * w):int(0.79 * w)]
    spread = region.max(-1) - region.min(-1)
    warm = region[..., 0] > region[..., 2] + 40  # labelmap colours here are warm (orange/red); UI blue is not
    return int(((spread > 60) & warm).sum())


def cached_image(server, uid: str, tmp: Path):
    """The series as the app sees it (its NIfTI conversion), through GET /datastore/image."""
    r = requests.get(f"{server.url}/datastore/image", params={"image": uid}, timeout=120)
    r.raise_for_status()
    path = tmp / f"{uid}.nii.gz"
    path.write_bytes(r.content)
    return nib.load(path)


def seg_series(orthanc_url: str) -> dict:
    """SEG series UID -> the series it references, as Orthanc holds them."""
    out = {}
    for d in requests.get(f"{orthanc_url}/dicom-web/series", params={"Modality": "SEG"}, timeout=30).json() or []:
        study, seg = d["0020000D"]["Value"][0], d["0020000E"]["Value"][0]
        meta = requests.get(f"{orthanc_url}/dicom-web/studies/{study}/series/{seg}/metadata", timeout=30).json()[0]
        out[seg] = meta["00081115"]["Value"][0]["0020000E"]["Value"][0]
    return out


def client_flow(run: Run, client, server, orthanc_url: str, loaded: dict, tmp: Path, train: bool = True) -> dict:
    from lib.datastore.seg_label import resample_nearest

    res = {"proxy": run.step("proxy: a QIDO filter reaches the PACS", proxy_qido, server, orthanc_url)}
    target = loaded.get("real_ct", loaded["phantom_001"])

    def infer():
        image = cached_image(server, target, tmp)
        label_file, params = client.infer(MODEL, target, {})
        label = nib.load(label_file)
        ok = label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-3)
        assert ok, f"label {label.shape} on another grid than the series {image.shape}"
        return {"shape": list(label.shape), "same_grid": ok, "report": {"label_shape": list(label.shape), "same_grid": ok}}

    res["infer"] = run.step("client: infer on a series", infer)

    def submit():
        before = set(seg_series(orthanc_url))
        submitted = {}
        # phantom_000: its sample label, put onto the series' grid (world coordinates, nearest)
        img0 = cached_image(server, loaded["phantom_000"], tmp)
        ref = nib.load(SAMPLES / "labels" / "final" / "phantom_000.nii.gz")
        lab0 = resample_nearest(np.asarray(ref.dataobj).astype(np.uint8), ref.affine, img0.affine, img0.shape)
        second = "real_ct" if "real_ct" in loaded else "phantom_001"
        img1 = cached_image(server, loaded[second], tmp)
        lab1 = np.zeros(img1.shape, np.uint8)  # a drawn blob (the real series has no reference label)
        c = np.array(img1.shape) // 2
        lab1[c[0] - 30:c[0] + 30, c[1] - 20:c[1] + 20, max(0, c[2] - 4):c[2] + 4] = 1
        lab1[c[0] - 8:c[0] + 8, c[1] - 6:c[1] + 6, max(0, c[2] - 2):c[2] + 2] = 2
        # a label on another grid is refused (422) and nothing reaches the PACS
        bad = tmp / "label_bad.nii.gz"
        nib.save(nib.Nifti1Image(lab0[:-4], img0.affine), bad)
        with open(bad, "rb") as f:
            r = requests.put(f"{server.url}/datastore/label", params={"image": loaded["phantom_000"], "tag": "final"},
                             files={"label": ("label_bad.nii.gz", f)}, timeout=60)
        assert r.status_code == 422, f"a label of the wrong shape got {r.status_code}: {r.text[:300]}"
        assert set(seg_series(orthanc_url)) == before, "a refused label left a SEG in the PACS"
        for name, img, lab in (("phantom_000", img0, lab0), (second, img1, lab1)):
            path = tmp / f"label_{name}.nii.gz"
            nib.save(nib.Nifti1Image(lab, img.affine), path)
            client.save_label(loaded[name], str(path), tag="final")
            submitted[name] = loaded[name]
        segs = seg_series(orthanc_url)
        new = {s: ref for s, ref in segs.items() if s not in before}
        assert sorted(new.values()) == sorted(submitted.values()), f"SEGs in Orthanc: {new}, submitted {submitted}"
        return {"labelled": submitted, "refused_status": r.status_code,
                "report": {"new_segs": len(new), "wrong_shape_label": r.status_code}}

    res["submit"] = run.step("client: submit two labels (DICOM SEGs in Orthanc)", submit)
    labelled = set(res["submit"]["labelled"].values())

    def next_sample():
        status = requests.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()
        listing = client.datastore()["objects"]  # /datastore?output=all, as the plugins read it
        with_final = {uid for uid, obj in listing.items() if obj.get("labels", {}).get("final")}
        assert with_final == labelled, f"/datastore?output=all marks {with_final} labelled, not {labelled}"
        seen = []
        for strategy in ("first", "random"):
            sample = client.next_sample(strategy, {})
            seen.append(sample.get("id"))
        assert status.get("completed") == len(labelled), f"/datastore: {status}"
        assert not labelled & set(seen), f"Next Sample handed out a labelled series: {seen}"
        return {"next": seen, "report": {"datastore": status, "next_sample_labelled": len(labelled & set(seen))}}

    res["next_sample"] = run.step("client: /datastore and Next Sample after labelling", next_sample)

    def train_run():
        before = requests.get(f"{server.url}/info/", timeout=30).json()["models"][MODEL]["model"]["checksum"]
        task = client.train_start(MODEL, dict(TRAIN))
        done = wait_train(server, task["id"], timeout=900)
        assert done["status"] == "DONE", f"training ended {done['status']}: {server.log()[-3000:]}"
        info = requests.get(f"{server.url}/info/", timeout=30).json()
        after = info["models"][MODEL]["model"]["checksum"]
        assert after != before, "training published no new model"
        stats = info.get("train_stats", {}).get(MODEL, {})
        return {"before": before, "after": after, "report": {"checksum": [before, after],
                                                             "skipped": stats.get("skipped"),
                                                             "training_ids": len(stats.get("training_ids", []))}}

    if train:
        res["train"] = run.step("client: train one epoch on the two labelled series", train_run)

    def new_series_seen():
        from lib.data.dicom_series import write_nifti_as_series
        from lib.pacs.orthanc import upload_folder

        total = requests.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()["total"]
        uids = write_nifti_as_series(SAMPLES / "phantom_002.nii.gz", tmp / "phantom_002", patient_id="phantom_002")
        upload_folder(orthanc_url, tmp / "phantom_002")
        t0 = time.time()
        while time.time() - t0 < 60:
            stats = requests.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()
            if stats["total"] == total + 1:
                break
            time.sleep(0.25)
        seen_after = time.time() - t0
        assert stats["total"] == total + 1, f"a series added to the PACS is not in /datastore after 60 s: {stats}"
        return {"seconds": round(seen_after, 2), "uid": uids["SeriesInstanceUID"],
                "report": {"seen_after_seconds": round(seen_after, 2)}}

    res["new_series"] = run.step("a series added to the PACS appears in /datastore", new_series_seen)
    res["ohif_label"] = run.step("OHIF-style labelmap with label_info -> a SEG with the right segments",
                                 ohif_labelmap, server, orthanc_url, loaded["phantom_000"], tmp)
    res["refused_seg"] = run.step("a SEG that cannot be a label is refused, nothing stored",
                                  unusable_seg, server, orthanc_url, loaded["phantom_000"], tmp)
    return res


def proxy_qido(server, orthanc_url: str) -> dict:
    """OHIF's study list searches through the app's DICOMweb proxy: the filter must reach Orthanc."""
    def studies(base: str, **query):
        r = requests.get(f"{base}/studies", params=query, headers={"Accept": "application/dicom+json"}, timeout=30)
        r.raise_for_status()
        return r, [d["0020000D"]["Value"][0] for d in (r.json() if r.content else [])]

    proxy = f"{server.url}/proxy/dicom/qido"
    _, direct = studies(f"{orthanc_url}/dicom-web", PatientID="phantom_000")
    r, every = studies(proxy)
    _, filtered = studies(proxy, PatientID="phantom_000")
    _, limited = studies(proxy, limit="1")
    _, nobody = studies(proxy, PatientID="no_such_patient")
    assert len(direct) == 1, f"Orthanc holds {len(direct)} studies of phantom_000"
    return {"all_studies": len(every), "filtered": filtered, "expected": direct[0], "limited": len(limited),
            "unknown_patient": len(nobody), "content_type": r.headers.get("content-type", ""),
            "report": {"all": len(every), "filtered": len(filtered), "limit_1": len(limited)}}


def orthanc_seg(orthanc_url: str, seg_uid: str, tmp: Path) -> Path:
    """The SEG instance of a series in Orthanc, as a file."""
    from dicomweb_client import DICOMwebClient

    dw = DICOMwebClient(f"{orthanc_url}/dicom-web")
    study = dw.search_for_series(search_filters={"SeriesInstanceUID": seg_uid})[0]["0020000D"]["Value"][0]
    instances = dw.retrieve_series(study, seg_uid)
    assert len(instances) == 1, f"SEG series {seg_uid} holds {len(instances)} instances"
    path = tmp / f"seg_{seg_uid[-12:]}.dcm"
    instances[0].save_as(path)
    return path


def ohif_labelmap(server, orthanc_url: str, uid: str, tmp: Path) -> dict:
    """A label as OHIF's panel sends it: raw bytes in the series' voxel order holding OHIF's segment indices (the
    tumour drawn first: 1 tumour, 2 pancreas) and ``label_info`` naming them. The SEG stored in Orthanc must hold
    the drawn pancreas as pancreas and the drawn tumour as tumour."""
    import pydicom

    from lib.datastore.seg_label import seg_on_image

    image = cached_image(server, uid, tmp)
    drawn = np.zeros(image.shape, np.uint8)  # in the task's values: what the SEG must hold
    c = np.array(image.shape) // 2
    drawn[c[0] - 12:c[0] + 12, c[1] - 10:c[1] + 10, max(0, c[2] - 3):c[2] + 3] = 1
    drawn[c[0] - 4:c[0] + 4, c[1] - 3:c[1] + 3, max(0, c[2] - 1):c[2] + 1] = 2
    ohif = np.zeros_like(drawn)
    ohif[drawn == 2], ohif[drawn == 1] = 1, 2
    raw = tmp / "ohif_label.bin"
    raw.write_bytes(ohif.tobytes(order="F"))
    label_info = [{"name": "tumor", "idx": 1, "color": [255, 0, 0]}, {"name": "pancreas", "idx": 2, "color": [0, 255, 0]}]
    before = set(seg_series(orthanc_url))
    with open(raw, "rb") as f:
        r = requests.put(f"{server.url}/datastore/label", params={"image": uid, "tag": "final"},
                         data={"params": json.dumps({"label_info": label_info})},
                         files={"label": ("label.bin", f, "application/octet-stream")}, timeout=300)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    new = {seg: ref for seg, ref in seg_series(orthanc_url).items() if seg not in before}
    assert list(new.values()) == [uid], f"new SEGs in Orthanc: {new}"
    seg_file = orthanc_seg(orthanc_url, next(iter(new)), tmp)
    segments = [str(s.SegmentLabel) for s in pydicom.dcmread(str(seg_file)).SegmentSequence]
    image_file = tmp / f"{uid}.nii.gz"  # written by cached_image
    back = seg_on_image(seg_file, image_file, {"pancreas": 1, "tumor": 2}).data
    same = bool(np.array_equal(back, drawn))
    return {"status": r.status_code, "segments": segments, "same_as_drawn": same,
            "report": {"segments": segments, "same_as_drawn": same,
                       "voxels": {str(v): int((back == v).sum()) for v in (1, 2)}}}


def unusable_seg(server, orthanc_url: str, uid: str, tmp: Path) -> dict:
    """A DICOM SEG whose only segment is no label of the task ("liver"), submitted as the series' label: a 422 that
    says why, and no new SEG in Orthanc."""
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    image = cached_image(server, uid, tmp)
    label = np.zeros(image.shape, np.uint8)
    c = np.array(image.shape) // 2
    label[c[0] - 10:c[0] + 10, c[1] - 10:c[1] + 10, max(0, c[2] - 2):c[2] + 2] = 1
    label_file = tmp / "liver.nii.gz"
    nib.save(nib.Nifti1Image(label, image.affine), label_file)
    seg = nifti_to_dicom_seg(str(tmp / "phantom_000"), str(label_file), [{"name": "liver"}], use_itk=True)
    before = set(seg_series(orthanc_url))
    with open(seg, "rb") as f:
        r = requests.put(f"{server.url}/datastore/label", params={"image": uid, "tag": "final"},
                         files={"label": ("label.dcm", f, "application/dicom")}, timeout=120)
    after = set(seg_series(orthanc_url))
    detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") else r.text
    return {"status": r.status_code, "detail": detail, "segs_before": len(before), "segs_after": len(after),
            "report": {"status": r.status_code, "detail": detail[:160], "new_segs": len(after - before)}}


def new_run(out_arg: str, prefix: str) -> tuple[Run, Path, Path]:
    """The run's record, its output folder (made) and a scratch folder inside it."""
    out = Path(out_arg)
    out.mkdir(parents=True, exist_ok=True)
    return Run(out), out, Path(tempfile.mkdtemp(prefix=prefix, dir=out))


def app_server(orthanc_url: str, out: Path, tmp: Path, conf: dict, tag: str = ""):
    """The app against the PACS, with a copy of the shipped model folder of its own (not started yet)."""
    from support.repo import copy_model_dir
    from support.server import Server

    model_dir = copy_model_dir(tmp / f"model{tag}")
    return Server(f"{orthanc_url}/dicom-web", conf={"model_dir": str(model_dir), **conf},
                  log_path=out / f"server{tag}.log", workdir=tmp,
                  env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp / f"cache{tag}")})


@contextlib.contextmanager
def pacs_and_app(run: Run, out: Path, tmp: Path, load, conf: dict):
    """Orthanc on a free loopback port with ``load(orthanc_url, tmp)``'s series, and the app against it (``conf``
    added to the test server's); yields ``(orthanc_url, loaded series, server)`` and stops both afterwards."""
    from lib.pacs.orthanc import start
    from lib.wait import free_port

    orthanc = server = None
    try:
        port = free_port()
        orthanc_url = f"http://127.0.0.1:{port}"
        orthanc = run.step("start Orthanc", start, tmp / "orthanc", port)
        loaded = run.step("load series", load, orthanc_url, tmp)["series"]
        run.result["series"] = loaded
        server = app_server(orthanc_url, out, tmp, {"dicomweb_refresh_seconds": "2", **conf})
        run.step("start the app against the PACS", server.start)
        yield orthanc_url, loaded, server
    finally:
        if server is not None:
            server.stop()
        if orthanc is not None:
            orthanc.terminate()
            orthanc.wait(10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-browser", action="store_true", help="leave out the stock OHIF panel in Chromium")
    ap.add_argument("--no-train", action="store_true", help="leave out the client's training run")
    args = ap.parse_args(argv)
    run, out, tmp = new_run(args.out, "pacs_e2e_")
    try:
        # the stock panel is what this run drives in the browser
        with pacs_and_app(run, out, tmp, load_series, {"ohif": "stock"}) as (orthanc_url, loaded, server):
            info = requests.get(f"{server.url}/info/", timeout=30).json()
            run.result["info_labels"] = info["labels"]
            if not args.no_browser:
                study = requests.get(f"{orthanc_url}/dicom-web/series",
                                     params={"SeriesInstanceUID": loaded["phantom_000"]},
                                     timeout=30).json()[0]["0020000D"]["Value"][0]
                run.result["browser"] = run.step("OHIF: open, connect, segment", browser_segmentation, server.url,
                                                 study, out)
            from monailabel.client.client import MONAILabelClient

            client = MONAILabelClient(server.url, tmpdir=str(tmp / "client"))
            (tmp / "client").mkdir()
            run.result["client"] = client_flow(run, client, server, orthanc_url, loaded, tmp, train=not args.no_train)
        run.result["ok"] = True
        run.save()
        return 0
    except Exception:
        return 1


if __name__ == "__main__":
    sys.exit(main())
