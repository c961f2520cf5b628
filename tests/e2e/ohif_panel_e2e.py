"""Our OHIF viewer (plugins/ohif) end to end, as an annotator drives it: ``tests/e2e/test_ohif_panel.py`` runs this
inside a private network namespace with only loopback (``unshare -n``).

    unshare -n bash -c 'ip link set lo up; python tests/e2e/ohif_panel_e2e.py --out DIR'

Orthanc with two phantom series; the app against it (serving our build at /ohif/); headless Chromium opens the
MONAI Label mode on the first series and, with the panel's own buttons and a mouse click in the viewport:
connects, runs the automatic segmentation (the viewer's labelmap is compared voxel by voxel with the server's
answer for the same series), places a point on a chosen organ (the request must carry only that organ's
prompt, and the organ must grow from the click), saves (the DICOM SEG in Orthanc, read back, must hold the
viewer's labelmap with the task's values), goes to the next sample (no page reload, the connection kept, an
unlabelled series), and trains (the saved label is trained on: a new model). Screenshots of every step, the
page's console, every request's address (none may leave loopback) and ``result.json`` stay in ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from pacs_e2e import (REAL_SERIES, Run, app_server, cached_image, launch_chromium, orthanc_seg,  # noqa: E402
                      new_run, pacs_and_app, seg_series)
from support.server import wait_train  # noqa: E402

SAMPLES = REPO_ROOT / "sample-datastore"
MODEL = "dints_pancreas"
PROMPT_MODEL = "prompt_organ"
LABELS = {"pancreas": 1, "tumor": 2}
TRAIN_EPOCHS = 1

# the viewer's labelmap of the series in view (the panel's own command), as base64, x fastest
LABELMAP_JS = """(seriesUid) => {
  const got = window.commandsManager.runCommand('dintsLabelLabelmap', { seriesUid });
  if (!got) return null;
  const a = got.data;
  let bin = '';
  for (let i = 0; i < a.length; i += 32768) bin += String.fromCharCode.apply(null, a.subarray(i, i + 32768));
  return { dims: got.dimensions, data: btoa(bin) };
}"""

# put the axial viewport on a voxel and say where it is on the page
VOXEL_ON_SCREEN_JS = """([seriesUid, ijk]) => {
  const { viewportGridService, cornerstoneViewportService, displaySetService } = window.services;
  const state = viewportGridService.getState();
  for (const [id, vp] of state.viewports) {
    const v = cornerstoneViewportService.getCornerstoneViewport(id);
    if (!v || !v.getCamera) continue;
    const normal = v.getCamera().viewPlaneNormal;
    if (Math.abs(normal[2]) < 0.9) continue;  // the axial one
    const ds = displaySetService.getDisplaySetByUID(vp.displaySetInstanceUIDs[0]);
    const vol = v.getImageData ? v.getImageData() : null;
    const world = vol.imageData.indexToWorld(ijk);
    v.jumpToWorld(world);
    v.render();
    const canvas = v.worldToCanvas(world);
    const rect = v.canvas.getBoundingClientRect();
    return { viewportId: id, x: rect.left + canvas[0], y: rect.top + canvas[1], series: ds.SeriesInstanceUID };
  }
  return null;
}"""


def load_series(orthanc_url: str, tmp: Path) -> dict:
    from lib.data.dicom_series import write_nifti_as_series
    from lib.pacs.orthanc import upload_folder

    series = {}
    for name in ("phantom_000", "phantom_001"):
        uids = write_nifti_as_series(SAMPLES / f"{name}.nii.gz", tmp / name, patient_id=name)
        upload_folder(orthanc_url, tmp / name)
        series[name] = {"series": uids["SeriesInstanceUID"], "study": uids["StudyInstanceUID"]}
    return {"series": series, "report": {k: v["series"][-12:] for k, v in series.items()}}


def viewer_labelmap(page, series_uid: str) -> np.ndarray | None:
    got = page.evaluate(LABELMAP_JS, series_uid)
    if not got:
        return None
    flat = np.frombuffer(base64.b64decode(got["data"]), np.uint8)
    return flat.reshape(got["dims"], order="F")


def server_answer(server, tmp: Path, model: str, series_uid: str, params: dict) -> np.ndarray:
    """The server's answer to ``params`` for a series, asked as 3D Slicer asks (``MONAILabelClient``), on the
    image's grid as the app reads the series."""
    from monailabel.client.client import MONAILabelClient

    (tmp / "client").mkdir(exist_ok=True)
    client = MONAILabelClient(server.url, tmpdir=str(tmp / "client"))
    label_file, _ = client.infer(model, series_uid, {**params, "result_extension": ".nii.gz"})
    return np.asarray(nib.load(label_file).dataobj).astype(np.uint8)


def last_infer_params(infer_posts: list) -> dict:
    """The ``params`` JSON of the panel's last /infer request (a multipart form)."""
    sent = infer_posts[-1][1].decode("latin-1") if infer_posts and infer_posts[-1][1] else ""
    return json.loads(sent[sent.index("{"):sent.rindex("}") + 1]) if "{" in sent else {}


def wait_status(page, text: str, timeout: float = 300) -> str:
    page.wait_for_function("t => (document.querySelector('[data-testid=dl-status]')?.textContent || '').includes(t)",
                           arg=text, timeout=timeout * 1000)
    return page.inner_text("[data-testid=dl-status]")


def save_label(page) -> None:
    """Press *Save label* and wait for the server's 200 and the panel's confirmation."""
    with page.expect_response(lambda r: "/datastore/label" in r.url and r.request.method == "PUT",
                              timeout=300000) as resp:
        page.click("[data-testid=dl-save]")
    assert resp.value.status == 200, f"save answered {resp.value.status}: {resp.value.text()[:300]}"
    wait_status(page, "Saved", timeout=60)


def browser_flow(run: Run, server, orthanc_url: str, loaded: dict, out: Path, tmp: Path) -> dict:
    from playwright.sync_api import sync_playwright

    res: dict = {}
    errors, console, requests_seen, infer_posts = [], [], [], []
    first = loaded["phantom_000"]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("request", lambda r: requests_seen.append(r.url))
        page.on("request", lambda r: infer_posts.append((r.url, r.post_data_buffer)) if "/infer/" in r.url else None)

        def shot(name):
            page.screenshot(path=str(out / f"{name}.png"))

        try:
            steps(run, page, shot, res, requests_seen, infer_posts, server, orthanc_url, first, tmp)
        finally:
            (out / "console.txt").write_text("\n".join(console))
            browser.close()
    res["errors"] = errors
    res["outside_requests"] = sorted({u for u in requests_seen
                                      if not u.startswith(("http://127.0.0.1", "data:", "blob:"))})
    return res


def steps(run, page, shot, res, requests_seen, infer_posts, server, orthanc_url, first, tmp):
    """The annotator's steps, each a ``run.step`` whose result lands in ``res``."""
    from lib.datastore.seg_label import seg_on_image

    def connect():
        page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={first['study']}", wait_until="domcontentloaded")
        status = wait_status(page, "Connected", timeout=180)
        page.wait_for_function("() => window.services && window.services.cornerstoneViewportService"
                               ".getRenderingEngine()?.getViewports().length >= 3", timeout=180000)
        page.wait_for_timeout(3000)  # the volume streams in
        page.evaluate("() => { window.__dl_marker = 'same page'; }")
        shot("01_connected")
        labels = page.locator("[data-testid^=dl-label-]").all_inner_texts()
        return {"status": status, "labels": labels, "report": {"status": status[:120]}}

    res["connect"] = run.step("browser: open the MONAI Label mode, connect", connect)

    def segment():
        with page.expect_response(lambda r: "/infer/" + MODEL in r.url, timeout=300000) as resp:
            page.click("[data-testid=dl-run]")
        assert resp.value.status == 200, f"infer answered {resp.value.status}"
        status = wait_status(page, "done", timeout=120)
        page.wait_for_timeout(1500)
        shot("02_segmented")
        shown = viewer_labelmap(page, first["series"])
        ids = page.evaluate("() => window.services.segmentationService.getSegmentations().map(s => [s.segmentationId, "
                            "Object.keys(s.representationData), Object.keys(s.representationData.Labelmap || {})])")
        assert shown is not None, f"no labelmap in the viewer after Run (segmentations {ids}, series {first['series']})"
        # the server's answer for the same series, on the image's grid as the app reads the series
        answer = server_answer(server, tmp, MODEL, first["series"], {})
        same = shown.shape == answer.shape and bool(np.array_equal(shown, answer))
        counts = {int(v): int((shown == v).sum()) for v in np.unique(shown)}
        return {"status": status, "same_as_server": same, "counts": counts, "shape": list(shown.shape),
                "report": {"same_as_server": same, "counts": counts}}

    res["segment"] = run.step("browser: Run the automatic segmentation", segment)

    def point():
        shown = viewer_labelmap(page, first["series"])
        # a voxel of the sample's reference pancreas that the model missed, else one it found
        image = cached_image(server, first["series"], tmp)
        ref_img = nib.load(SAMPLES / "labels" / "final" / "phantom_000.nii.gz")
        from lib.datastore.seg_label import resample_nearest

        ref = resample_nearest(np.asarray(ref_img.dataobj).astype(np.uint8), ref_img.affine, image.affine, image.shape)
        inside = np.argwhere((ref == 1) & (shown != 1))
        if not len(inside):
            inside = np.argwhere(ref == 1)
        ijk = [int(x) for x in inside[len(inside) // 2]]
        before = {v: int((shown == v).sum()) for v in (1, 2)}
        page.click("[data-testid=dl-label-pancreas]")
        page.select_option("[data-testid=dl-point-model]", PROMPT_MODEL)
        where = page.evaluate(VOXEL_ON_SCREEN_JS, [first["series"], ijk])
        assert where, "no axial viewport"
        page.wait_for_timeout(1000)
        infer_posts.clear()
        with page.expect_response(lambda r: "/infer/" + PROMPT_MODEL in r.url, timeout=300000) as resp:
            page.mouse.click(where["x"], where["y"])
        assert resp.value.status == 200, f"prompt infer answered {resp.value.status}"
        status = wait_status(page, "done", timeout=120)
        page.wait_for_timeout(1500)
        shot("03_point_on_pancreas")
        params = last_infer_params(infer_posts)
        after_map = viewer_labelmap(page, first["series"])
        after = {v: int((after_map == v).sum()) for v in (1, 2)}
        clicked = [int(c) for c in params.get("foreground", [[-1, -1, -1]])[0]]
        return {"ijk": ijk, "params": {k: params.get(k) for k in ("foreground", "background", "label")},
                "before": before, "after": after, "value_at_click": int(after_map[tuple(ijk)]),
                "sent_click": clicked, "status": status,
                "report": {"ijk": ijk, "sent": clicked, "pancreas_voxels": [before[1], after[1]]}}

    res["point"] = run.step("browser: a point on the chosen organ (pancreas)", point)

    def save():
        before = set(seg_series(orthanc_url))
        save_label(page)
        shot("04_saved")
        new = {s: r for s, r in seg_series(orthanc_url).items() if s not in before}
        assert list(new.values()) == [first["series"]], f"new SEGs: {new}"
        seg_file = orthanc_seg(orthanc_url, next(iter(new)), tmp)
        back = seg_on_image(seg_file, tmp / f"{first['series']}.nii.gz", LABELS).data
        shown = viewer_labelmap(page, first["series"])
        same = bool(np.array_equal(back, shown))
        return {"same_as_viewer": same, "report": {"seg_same_as_viewer": same,
                                                   "voxels": {str(v): int((back == v).sum()) for v in (1, 2)}}}

    res["save"] = run.step("browser: Save label (a DICOM SEG in Orthanc)", save)

    def next_sample():
        infos_before = sum("/info/" in u for u in requests_seen)
        page.select_option("[data-testid=dl-strategy]", "first")
        with page.expect_response(lambda r: "/activelearning/first" in r.url, timeout=60000) as resp:
            page.click("[data-testid=dl-next]")
        offered = resp.value.json()["id"]
        assert offered != first["series"], "Next Sample offered the series just labelled"
        page.wait_for_function("uid => location.search.includes(uid)", arg=offered, timeout=60000)
        page.wait_for_function("() => window.services.cornerstoneViewportService"
                               ".getRenderingEngine()?.getViewports().length >= 3", timeout=180000)
        page.wait_for_timeout(3000)
        shot("05_next_sample")
        marker = page.evaluate("() => window.__dl_marker || null")
        infos_after = sum("/info/" in u for u in requests_seen)
        labels = page.locator("[data-testid^=dl-label-]").all_inner_texts()
        return {"url": page.url, "same_page": marker == "same page", "info_calls": infos_after - infos_before,
                "labels": labels, "offered": offered, "report": {"same_page": marker == "same page",
                                             "new_info_calls": infos_after - infos_before}}

    res["next"] = run.step("browser: Next Sample (in place)", next_sample)

    def second_label():
        with page.expect_response(lambda r: "/infer/" + MODEL in r.url, timeout=300000) as resp:
            page.click("[data-testid=dl-run]")
        assert resp.value.status == 200, f"infer answered {resp.value.status}"
        wait_status(page, "done", timeout=120)
        page.wait_for_timeout(1000)
        shown = viewer_labelmap(page, res["next"]["offered"])
        assert shown is not None and (shown > 0).any(), "no labelmap on the next sample"
        save_label(page)
        shot("06_next_sample_saved")
        return {"report": {"voxels": {str(v): int((shown == v).sum()) for v in (1, 2)}}}

    res["second_label"] = run.step("browser: segment and save the next sample", second_label)

    def review_seg():
        """The first study opened again later (a fresh page: OHIF keeps a study's series list for the session): its
        stored SEG, saved above, opens in the viewer with its segments."""
        page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={first['study']}", wait_until="domcontentloaded")
        try:
            page.wait_for_function("() => (window.services?.displaySetService?.getActiveDisplaySets() || [])"
                                   ".some(d => d.Modality === 'SEG')", timeout=120000)
        except Exception:
            shot("07_stored_seg_missing")
            sets = page.evaluate("() => window.services.displaySetService.getActiveDisplaySets()"
                                 ".map(d => [d.Modality, d.SeriesInstanceUID, d.StudyInstanceUID])")
            series = requests.get(f"{server.url}/proxy/dicom/qido/studies/{first['study']}/series", timeout=30).json()
            raise AssertionError(f"no SEG display set: {sets}; the PACS's series of the study: "
                                 f"{[(d['00080060']['Value'][0], d['0020000E']['Value'][0]) for d in series]}; url {page.url}")
        page.wait_for_timeout(3000)
        seg_uid = page.evaluate("""() => {
          const { displaySetService, viewportGridService } = window.services;
          const seg = displaySetService.getActiveDisplaySets().find(d => d.Modality === 'SEG');
          viewportGridService.setDisplaySetsForViewport({ viewportId: viewportGridService.getActiveViewportId(),
                                                          displaySetInstanceUIDs: [seg.displaySetInstanceUID] });
          return seg.displaySetInstanceUID;
        }""")
        for _ in range(60):  # OHIF asks before it opens a SEG: say yes
            yes = page.locator("button", has_text="Yes")
            if yes.count():
                yes.first.click()
                break
            if page.evaluate("id => !!window.services.segmentationService.getSegmentation(id)", seg_uid):
                break
            page.wait_for_timeout(500)
        page.wait_for_function("id => !!window.services.segmentationService.getSegmentation(id)", arg=seg_uid,
                               timeout=120000)
        page.wait_for_timeout(2000)
        shot("07_stored_seg")
        segments = page.evaluate("""id => Object.values(window.services.segmentationService.getSegmentation(id).segments)
                                    .filter(Boolean).map(s => s.label)""", seg_uid)
        return {"segments": segments, "report": {"segments": segments}}

    res["review"] = run.step("browser: open the stored SEG for review", review_seg)

    def real_ct():
        """The real clinical series (sent to the PACS only now, so that Next Sample above had one candidate): the
        automatic answer is shown on exactly the voxels the server labelled."""
        import pydicom

        from lib.pacs.orthanc import upload_files

        files = sorted(p for p in REAL_SERIES.iterdir() if p.is_file())
        before = requests.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()["total"]
        upload_files(orthanc_url, files)
        ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
        real = {"series": str(ds.SeriesInstanceUID), "study": str(ds.StudyInstanceUID)}
        for _ in range(120):  # the app sees a new PACS series within its refresh time (2 s here)
            if requests.get(f"{server.url}/datastore/", params={"output": "stats"}, timeout=30).json()["total"] > before:
                break
            time.sleep(0.5)
        page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={real['study']}", wait_until="domcontentloaded")
        wait_status(page, "Connected", timeout=180)
        page.wait_for_function("() => window.services?.cornerstoneViewportService"
                               "?.getRenderingEngine()?.getViewports().length >= 3", timeout=180000)
        page.wait_for_timeout(5000)
        # a point at the middle of the series with prompt_organ (seconds, and a large region: a flipped or shifted
        # axis could not go unseen), then the same prompt asked of the server directly
        centre = [256, 256, 10]
        page.click("[data-testid=dl-label-pancreas]")
        page.select_option("[data-testid=dl-point-model]", PROMPT_MODEL)
        where = page.evaluate(VOXEL_ON_SCREEN_JS, [real["series"], centre])
        page.wait_for_timeout(1000)
        infer_posts.clear()
        with page.expect_response(lambda r: "/infer/" + PROMPT_MODEL in r.url, timeout=300000) as resp:
            page.mouse.click(where["x"], where["y"])
        assert resp.value.status == 200, f"prompt infer answered {resp.value.status}"
        wait_status(page, "done", timeout=300)
        page.wait_for_timeout(1500)
        shot("08_real_ct")
        params = last_infer_params(infer_posts)
        shown = viewer_labelmap(page, real["series"])
        answer = server_answer(server, tmp, PROMPT_MODEL, real["series"], {
            "foreground": params["foreground"], "background": params["background"], "label": "pancreas"})
        same = shown is not None and shown.shape == answer.shape and bool(np.array_equal(shown == 1, answer == 1))
        ijk = [int(c) for c in params["foreground"][0]]
        return {"same_as_server": same, "shape": list(answer.shape), "region": int((answer == 1).sum()),
                "value_at_click": int(shown[tuple(ijk)]) if shown is not None else None,
                "report": {"same_as_server": same, "shape": list(answer.shape), "region": int((answer == 1).sum()),
                           "clicked": ijk}}

    if REAL_SERIES.is_dir():
        res["real_ct"] = run.step("browser: the real CT series, segmented", real_ct)

    def train():
        before = requests.get(f"{server.url}/info/", timeout=30).json()["models"][MODEL]["model"]["checksum"]
        page.select_option("[data-testid=dl-train-model]", MODEL)
        page.fill("[data-testid=dl-epochs]", str(TRAIN_EPOCHS))
        with page.expect_response(lambda r: f"/train/{MODEL}" in r.url and r.request.method == "POST",
                                  timeout=60000) as resp:
            page.click("[data-testid=dl-train]")
        assert resp.value.status == 200, f"train answered {resp.value.status}: {resp.value.text()[:300]}"
        sent = json.loads(resp.value.request.post_data or "{}")
        page.wait_for_timeout(2000)
        shot("09_training")
        done = wait_train(server, None, timeout=900)
        assert done["status"] == "DONE", f"training ended {done['status']}: {server.log()[-3000:]}"
        wait_status(page, "finished", timeout=60)
        page.wait_for_selector("[data-testid=dl-train-outcome]", timeout=30000)
        shot("10_trained")
        info = requests.get(f"{server.url}/info/", timeout=30).json()
        after = info["models"][MODEL]["model"]["checksum"]
        stats = info["train_stats"][MODEL]
        used = sorted(stats.get("training_ids", []) + stats.get("validation_ids", []))
        outcome = page.inner_text("[data-testid=dl-train-outcome]")
        return {"sent": sent, "before": before, "after": after, "used": used, "outcome": outcome,
                "published": bool(stats.get("published_file")), "reason": stats.get("not_published_reason"),
                "report": {"checksum": [before, after], "outcome": outcome[:160]}}

    res["train"] = run.step("browser: Train the model on the saved label", train)


def login_flow(orthanc_url: str, study: str, out: Path, tmp: Path) -> dict:
    """With authentication on (a token file): the viewer asks for a log-in before it reads anything, refuses a wrong
    token with the server's reason, and after a good one shows the study with the panel connected."""
    from playwright.sync_api import sync_playwright

    from lib.server.token_file import digest

    token = "e2e-token-" + "x" * 20
    tokens = tmp / "tokens.txt"
    tokens.write_text(f"annotator1 admin {digest(token)}\n")
    server = app_server(orthanc_url, out, tmp, {"auth_tokens": str(tokens), "ohif": "ours"}, tag="_auth")
    server.start()
    seen = []
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("request", lambda r: seen.append(r.url))
            page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study}", wait_until="domcontentloaded")
            page.wait_for_selector("[data-testid=dl-login]", timeout=120000)
            page.screenshot(path=str(out / "11_login.png"))
            before_login = [u for u in seen if "/proxy/dicom/" in u]
            page.fill("[data-testid=dl-login] input[name=user]", "annotator1")
            page.fill("[data-testid=dl-login] input[name=password]", "not-the-token")
            page.click("[data-testid=dl-login] button")
            page.wait_for_selector("[data-testid=dl-login-error]", timeout=30000)
            refused = page.inner_text("[data-testid=dl-login-error]")
            page.fill("[data-testid=dl-login] input[name=password]", token)
            page.click("[data-testid=dl-login] button")
            status = wait_status(page, "Connected", timeout=180)
            page.wait_for_function("() => window.services?.cornerstoneViewportService"
                                   "?.getRenderingEngine()?.getViewports().length >= 3", timeout=180000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(out / "12_logged_in.png"))
            browser.close()
    finally:
        server.stop()
    return {"dicomweb_before_login": before_login, "refused": refused, "status": status,
            "report": {"dicomweb_before_login": len(before_login), "refused": refused[:100]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    run, out, tmp = new_run(args.out, "ohif_e2e_")
    try:
        with pacs_and_app(run, out, tmp, load_series, {"ohif": "ours"}) as (orthanc_url, loaded, server):
            run.result["browser"] = browser_flow(run, server, orthanc_url, loaded, out, tmp)
            server.stop()
            run.result["login"] = run.step("browser: log in with authentication on", login_flow, orthanc_url,
                                           loaded["phantom_000"]["study"], out, tmp)
        run.result["ok"] = True
        run.save()
        return 0
    except Exception:
        run.save()
        return 1


if __name__ == "__main__":
    sys.exit(main())
