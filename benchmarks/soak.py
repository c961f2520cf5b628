#!/usr/bin/env python
"""A bounded soak of the label path: concurrent clients send mixed good and bad requests to a real server.

    python benchmarks/soak.py                       # 4 clients x 100 requests on a copy of sample-datastore
    python benchmarks/soak.py --clients 4 --requests 50 --infer_every 25
    python benchmarks/soak.py --auth                # the same with authentication on (a token file)

Loopback only (the server is started here on a free 127.0.0.1 port and stopped at the end). Each client
draws, with a fixed seed, from: good label submits (Slicer's call), bad labels (value 7, wrong shape,
float 0.5, empty, garbage), hostile ids and tags, bad inference parameters, /info, /datastore, label
downloads, version listings, restores and, every ``--infer_every`` requests, a real inference. Printed:
answers by status code and by kind, the 5xx count (aim: 0), labels lost (every 200 submit must be in the
label's history with its exact bytes: must be 0) and the server's resident memory before and after.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.machine import cpu_description  # noqa: E402


def make_labels(studies: Path, folder: Path, images: list[str]) -> tuple[dict, dict]:
    import nibabel as nib
    import numpy as np

    from safety_helpers import label_for

    good, bad = {}, {}
    for i, image in enumerate(images):
        good[image] = [label_for(studies, image, folder / f"{image}_g{k}.nii.gz", seed=10 * i + k) for k in range(3)]
    img = nib.load(str(studies / f"{images[0]}.nii.gz"))
    bad["value7"] = label_for(studies, images[0], folder / "b_value7.nii.gz", values=(0, 7))
    bad["shape"] = label_for(studies, images[0], folder / "b_shape.nii.gz", shape=(img.shape[0] + 1, *img.shape[1:]))
    half = np.zeros(img.shape, np.float32)
    half[5:9, 5:9, 5:9] = 0.5
    bad["float"] = folder / "b_float.nii.gz"
    nib.save(nib.Nifti1Image(half, img.affine), str(bad["float"]))
    bad["empty"] = folder / "b_empty.nii.gz"
    bad["empty"].write_bytes(b"")
    bad["garbage"] = folder / "b_garbage.nii.gz"
    bad["garbage"].write_bytes(os.urandom(3000))
    return good, bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=100, help="requests per client")
    p.add_argument("--infer_every", type=int, default=20, help="one inference in this many requests (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--auth", action="store_true", help="authentication on (a token file); every request sends the token")
    p.add_argument("--max_seconds", type=float, default=1200, help="stop sending after this long")
    args = p.parse_args(argv)

    import psutil
    import requests

    from conftest import copy_datastore, copy_model_dir
    from lib.atomic import sha256_file
    from safety_helpers import HOSTILE_IDS
    from server import Server

    print(f"machine: {cpu_description()}, {psutil.cpu_count()} CPUs; {args.clients} clients x {args.requests} requests")
    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    try:
        studies = copy_datastore(tmp / "studies")
        model = copy_model_dir(tmp / "model")
        images = ["phantom_006", "phantom_007", "phantom_008", "phantom_009"]
        good, bad = make_labels(studies, tmp, images)
        conf = {"model_dir": str(model)}
        H: dict[str, str] = {}
        if args.auth:  # a reviewer's token from a token file (restores need the reviewer role)
            from lib.server.token_file import add

            conf["auth_tokens"] = str(tmp / "tokens")
            H["Authorization"] = f"Bearer {add(conf['auth_tokens'], 'soak', 'reviewer')}"
        print(f"authentication: {'on (token file, reviewer role)' if args.auth else 'off'}")
        srv = Server(studies, conf=conf, env={"MONAI_LABEL_SESSION_PATH": str(tmp / "sessions")}).start()
        proc = psutil.Process(srv.proc.pid)
        rss_before = proc.memory_info().rss
        u = srv.url
        counts: collections.Counter = collections.Counter()
        kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        accepted: list[tuple[str, str]] = []  # (image, sha256 of the bytes) of every 200 submit
        errors: list[str] = []
        lock = threading.Lock()
        t_end = time.time() + args.max_seconds

        def one(rng: random.Random, i: int) -> tuple[str, "requests.Response"]:
            image = rng.choice(images)
            if args.infer_every and i % args.infer_every == args.infer_every - 1:
                return "infer", requests.post(f"{u}/infer/dints_pancreas", params={"image": image, "output": "json"}, headers=H, timeout=600)
            kind = rng.choice(["good_label", "good_label", "bad_label", "bad_id", "bad_param", "info", "datastore",
                               "download", "versions", "restore"])
            if kind == "good_label":
                path = rng.choice(good[image])
                with open(path, "rb") as f:
                    r = requests.put(f"{u}/datastore/label", params={"image": image, "tag": "final"},
                                     files={"label": f}, data={"params": json.dumps({"client_id": f"c{i}"})}, headers=H,
                                     timeout=60)
                if r.status_code == 200:
                    with lock:
                        accepted.append((image, sha256_file(path)))
                return kind, r
            if kind == "bad_label":
                path = bad[rng.choice(sorted(bad))]
                with open(path, "rb") as f:
                    return kind, requests.put(f"{u}/datastore/label", params={"image": images[0]}, files={"label": f}, headers=H, timeout=60)
            if kind == "bad_id":
                target = rng.choice(["/datastore/label", "/datastore/image", "/infer/dints_pancreas"])
                key = "label" if target == "/datastore/label" else "image"
                method = "POST" if target.startswith("/infer") else "GET"
                return kind, requests.request(method, u + target, params={key: rng.choice(HOSTILE_IDS), "tag": "final"}, headers=H, timeout=60)
            if kind == "bad_param":
                params = rng.choice([{"sw_overlap": 0.99}, {"sw_batch_size": 0}, {"sw_batch_size": "x"}, {"backend": "?"}])
                return kind, requests.post(f"{u}/infer/dints_pancreas", params={"image": image}, data={"params": json.dumps(params)}, headers=H, timeout=60)
            if kind == "info":
                return kind, requests.get(f"{u}/info/", headers=H, timeout=60)
            if kind == "datastore":
                return kind, requests.get(f"{u}/datastore/", params={"output": "all"}, headers=H, timeout=60)
            if kind == "download":
                return kind, requests.get(f"{u}/datastore/label", params={"label": image, "tag": "final"}, headers=H, timeout=60)
            if kind == "versions":
                return kind, requests.get(f"{u}/datastore/label/versions", params={"image": image}, headers=H, timeout=60)
            versions = requests.get(f"{u}/datastore/label/versions", params={"image": image}, headers=H, timeout=60).json()
            revs = [v["rev"] for v in versions.get("versions", []) if not v.get("deleted")]
            return kind, requests.post(f"{u}/datastore/label/restore",
                                       params={"image": image, "rev": rng.choice(revs) if revs else 1}, headers=H, timeout=60)

        def client(k: int):
            rng = random.Random(args.seed * 1000 + k)
            for i in range(args.requests):
                if time.time() > t_end:
                    return
                try:
                    kind, r = one(rng, i)
                except Exception as exc:  # a connection error is a failure of the server, counted
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        counts["no answer"] += 1
                    continue
                with lock:
                    counts[r.status_code] += 1
                    kinds[kind][r.status_code] += 1
                    if r.status_code >= 500:
                        errors.append(f"{kind}: {r.status_code} {r.text[:200]}")

        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample_rss():
            while not done.wait(2.0):
                samples.append((time.time() - t0, proc.memory_info().rss))

        t0 = time.time()
        threading.Thread(target=sample_rss, daemon=True).start()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        done.set()
        rss_after = proc.memory_info().rss
        # labels lost: every accepted submit must be a version with exactly its bytes
        lost = 0
        for image in images:
            listing = requests.get(f"{u}/datastore/label/versions", params={"image": image}, headers=H, timeout=60).json()
            stored = collections.Counter(v.get("sha256") for v in listing["versions"] if not v.get("deleted")
                                         and not str(v.get("source", "")).startswith("restore"))
            wanted = collections.Counter(s for im, s in accepted if im == image)
            lost += sum(max(0, n - stored[s]) for s, n in wanted.items())
        alive = requests.get(f"{u}/info/", headers=H, timeout=60).status_code == 200
        srv.stop()
        total = sum(counts.values())
        print(f"{total} requests in {wall:.0f} s; answers by status: {dict(sorted(counts.items(), key=str))}")
        for kind in sorted(kinds):
            print(f"  {kind:>11}: {dict(sorted(kinds[kind].items()))}")
        five = sum(n for c, n in counts.items() if isinstance(c, int) and c >= 500) + counts["no answer"]
        print(f"5xx or no answer: {five}; labels accepted: {len(accepted)}, lost: {lost}; server alive: {alive}")
        print(f"server RSS: {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB after")
        if samples:
            quarters = [samples[min(len(samples) - 1, int(q * len(samples)))] for q in (0.25, 0.5, 0.75)]
            print("server RSS during the run: " + ", ".join(f"{m / 2**20:.0f} MiB at {t:.0f} s" for t, m in quarters)
                  + f"; peak {max(m for _, m in samples) / 2**20:.0f} MiB")
        for e in errors[:10]:
            print("  error:", e)
        return 0 if (five == 0 and lost == 0 and alive) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
