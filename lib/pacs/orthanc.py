"""Orthanc with its DICOMweb plugin as a loopback-only PACS, configured by the project.

``python -m lib.pacs.orthanc --folder DIR [--port 8042] [--load STUDIES]`` writes ``DIR/orthanc.json``, starts
Debian's Orthanc on it (database and files in ``DIR/db``), waits until it answers, loads every CT of a studies
folder that is not there yet as a DICOM series (:mod:`lib.data.dicom_series`; the image id becomes the
PatientID and series description), with ``--labels`` also its final label as a DICOM SEG, and keeps Orthanc
running until interrupted. ``./run_pacs.sh`` uses it and then starts the app against it.

Loopback only: the DICOM (DIMSE) port is off and ``RemoteAccessAllowed`` is false, so Orthanc refuses every HTTP
client that is not on this machine (Orthanc 1.10 has no option to bind its HTTP port to one address: it listens
on all of them and answers 403 to the others). No user accounts: do not expose it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from lib.wait import wait_until_serving

logger = logging.getLogger(__name__)

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


def find_binary() -> str:
    for name in ("Orthanc", "orthanc"):
        found = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        if found:
            return found
    raise FileNotFoundError("Orthanc is not installed: run ./scripts/setup_pacs.sh (Debian packages orthanc and "
                            "orthanc-dicomweb)")


def find_dicomweb_plugin() -> str:
    for folder in PLUGIN_DIRS:
        path = os.path.join(folder, "libOrthancDicomWeb.so")
        if os.path.exists(path):
            return path
    raise FileNotFoundError("Orthanc's DICOMweb plugin is not installed: run ./scripts/setup_pacs.sh (Debian package "
                            "orthanc-dicomweb)")


def write_config(folder: str | os.PathLike, port: int = 8042) -> Path:
    """``folder/orthanc.json``: HTTP on ``port``, DICOMweb at ``/dicom-web/``, no DIMSE, loopback clients only."""
    folder = Path(folder).resolve()
    (folder / "db").mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "dints-label PACS",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": int(port),
        "HttpServerEnabled": True,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpDescribeErrors": True,
        "StableAge": 1,
        "Plugins": [find_dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                     "Host": f"127.0.0.1:{int(port)}", "Ssl": False},
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start(folder: str | os.PathLike, port: int = 8042, log_file: str | None = None) -> subprocess.Popen:
    """Start Orthanc on ``folder``'s configuration (written first); returns the process once it answers."""
    config = write_config(folder, port)
    log = open(log_file or Path(folder) / "orthanc.log", "ab")
    proc = subprocess.Popen([find_binary(), str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{int(port)}"
    wait_until_serving(proc, f"{url}/dicom-web/studies", 60, "Orthanc", details=lambda: f"see {log.name}",
                       stop=proc.terminate, interval=0.3, request_timeout=2)
    return proc


def series_of_patient(url: str, patient_id: str, modality: str = "CT") -> list[str]:
    r = requests.get(f"{url}/dicom-web/series", params={"PatientID": patient_id, "Modality": modality}, timeout=30)
    r.raise_for_status()
    return [d["0020000E"]["Value"][0] for d in (r.json() if r.content else [])]


def upload_files(url: str, paths) -> int:
    """POST each DICOM file to Orthanc's REST ``/instances``; returns how many it stored."""
    n = 0
    for path in paths:
        r = requests.post(f"{url}/instances", data=Path(path).read_bytes(), timeout=60)
        r.raise_for_status()
        n += 1
    return n


def upload_folder(url: str, folder: str | os.PathLike) -> int:
    """Every ``.dcm`` of ``folder`` (a series written by :mod:`lib.data.dicom_series`) into Orthanc."""
    return upload_files(url, sorted(Path(folder).glob("*.dcm")))


def image_files(studies: str | os.PathLike) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(Path(studies).iterdir()):
        for suffix in IMAGE_SUFFIXES:
            if path.is_file() and path.name.endswith(suffix):
                out.append((path.name[: -len(suffix)], path))
    return out


def load_studies(url: str, studies: str | os.PathLike, with_labels: bool = False, labels: dict | None = None) -> dict:
    """Every CT of ``studies`` not yet in the PACS (by PatientID = image id) as a series; with ``with_labels`` its
    ``labels/final`` label as a DICOM SEG. Returns {image id: series UID}."""
    from lib.data.dicom_series import write_nifti_as_series

    loaded = {}
    for image_id, path in image_files(studies):
        existing = series_of_patient(url, image_id)
        if existing:
            loaded[image_id] = existing[0]
            continue
        with tempfile.TemporaryDirectory() as tmp:
            uids = write_nifti_as_series(path, tmp, patient_id=image_id)
            upload_folder(url, tmp)
            if with_labels:
                final = Path(studies) / "labels" / "final"
                label = next((final / f"{image_id}{s}" for s in IMAGE_SUFFIXES if (final / f"{image_id}{s}").exists()), None)
                if label is not None:
                    upload_seg(url, tmp, label, labels or {})
        loaded[image_id] = uids["SeriesInstanceUID"]
        logger.info(f"loaded {image_id} as series {uids['SeriesInstanceUID']}")
    return loaded


def upload_seg(url: str, series_folder: str, label_path: Path, labels: dict) -> None:
    """The label as a DICOM SEG of the series in ``series_folder`` (dcmqi's itkimage2segimage), stored in Orthanc."""
    import nibabel as nib
    import numpy as np
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    from lib.datastore.seg_label import segment_info

    info = segment_info(np.unique(np.asarray(nib.load(str(label_path)).dataobj).astype(int)), labels)
    if not info:
        return
    seg = nifti_to_dicom_seg(series_folder, str(label_path), info, use_itk=True)
    try:
        r = requests.post(f"{url}/instances", data=Path(seg).read_bytes(), timeout=60)
        r.raise_for_status()
    finally:
        os.unlink(seg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True, help="Orthanc's folder: configuration, database, log")
    ap.add_argument("--port", type=int, default=8042, help="HTTP port (loopback clients only; default %(default)s)")
    ap.add_argument("--load", default=None, metavar="STUDIES", help="a studies folder whose CTs are loaded as series")
    ap.add_argument("--labels", action="store_true", help="with --load: also each image's final label, as a DICOM SEG")
    ap.add_argument("--pid-file", default=None, help="write Orthanc's process id here")
    ap.add_argument("--exit-after-load", action="store_true", help="load, then stop Orthanc and exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    ready = Path(args.folder) / ".loaded"  # ./run_pacs.sh waits for it before starting the app
    ready.unlink(missing_ok=True)
    try:
        proc = start(args.folder, args.port)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.pid_file:
        Path(args.pid_file).write_text(str(proc.pid))
    url = f"http://127.0.0.1:{args.port}"
    print(f"Orthanc {url} (DICOMweb {url}/dicom-web), folder {Path(args.folder).resolve()}", flush=True)
    try:
        if args.load:
            from lib.task import get_task

            loaded = load_studies(url, args.load, args.labels, dict(get_task("pancreas").labels))
            print(f"{len(loaded)} series in the PACS from {args.load}", flush=True)
        ready.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
        if args.exit_after_load:
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while proc.poll() is None:
            time.sleep(1)
        return proc.returncode or 0
    finally:
        ready.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
