"""Run inside a private network namespace by tests/e2e/test_cross_site.py: the app on 127.0.0.1, a hostile page
served from another origin (another port), and headless Chromium opening that page. The page tries what a
malicious web site would against an open server on the annotator's own machine: read the datastore, download
a CT, restore and delete a label (with and without CORS), submit a form; then a DNS-rebinding-style visit
(a foreign name mapped to 127.0.0.1). Writes result.json into --out."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the support package
sys.path.insert(0, str(HERE.parents[1]))  # the repository: lib

from support.repo import copy_datastore, copy_model_dir  # noqa: E402
from support.safety_helpers import tree_hash  # noqa: E402
from support.server import Server  # noqa: E402

PAGE = """<!doctype html><html><body><form id="f" method="POST" target="sink"></form><iframe name="sink"></iframe>
<script>
const app = "%(app)s", image = "%(image)s";
window.results = {};
async function attempt(name, fn) {
  try { window.results[name] = await fn(); } catch (e) { window.results[name] = "blocked: " + e.name; }
}
(async () => {
  await attempt("read_datastore", async () => (await (await fetch(app + "/datastore/?output=all")).text()).slice(0, 80));
  await attempt("download_image", async () => (await (await fetch(app + "/datastore/image?image=" + image)).arrayBuffer()).byteLength);
  await attempt("read_info_with_credentials", async () => (await (await fetch(app + "/info/", {credentials: "include"})).text()).slice(0, 80));
  await attempt("restore_no_cors", async () => (await fetch(app + "/datastore/label/restore?image=" + image + "&rev=1", {method: "POST", mode: "no-cors"})).type);
  await attempt("delete_label", async () => (await fetch(app + "/datastore/label?id=" + image + "&tag=final", {method: "DELETE"})).status);
  await attempt("upload_label_no_cors", async () => {
    const fd = new FormData(); fd.append("label", new Blob([new Uint8Array(10)]), "l.nii.gz");
    return (await fetch(app + "/datastore/label?image=" + image + "&tag=final", {method: "PUT", body: fd, mode: "no-cors"})).type;
  });
  const f = document.getElementById("f");
  f.action = app + "/datastore/label/restore?image=" + image + "&rev=1"; f.submit();
  await new Promise(r => setTimeout(r, 1500));
  window.done = true;
})();
</script></body></html>"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    studies = copy_datastore(out / "studies")
    model = copy_model_dir(out / "model")
    server = Server(studies, conf={"model_dir": str(model), "interactive": "false"}, log_path=out / "server.log").start()
    evil_dir = out / "evil"
    evil_dir.mkdir(exist_ok=True)
    labelled = sorted(p.name[:-7] for p in (studies / "labels" / "final").glob("*.nii.gz"))[0]
    (evil_dir / "index.html").write_text(PAGE % {"app": server.url, "image": labelled})
    evil = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(evil_dir)))
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    before = tree_hash(studies)
    result: dict = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                              "--disable-component-update", "--no-first-run",
                                              f"--host-resolver-rules=MAP rebind.test 127.0.0.1"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{evil.server_address[1]}/index.html")
            page.wait_for_function("window.done === true", timeout=60000)
            result["attempts"] = page.evaluate("window.results")
            # DNS rebinding: the attacker's name now resolves to 127.0.0.1, so its page's requests reach the app
            rebound = page.goto(f"http://rebind.test:{server.port}/datastore/?output=all")
            result["rebind_status"] = rebound.status if rebound else None
            result["rebind_body"] = (page.content() or "")[:300]
            browser.close()
    finally:
        result["unchanged"] = tree_hash(studies) == before
        result["refused_in_log"] = server.log().count("Refused")
        server.stop()
        evil.shutdown()
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
