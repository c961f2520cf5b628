"""The getting-started guides' commands, run as a reader runs them: every ```bash ci``` block of
docs/getting-started/*.md that starts the server (``./run.sh``, ``./run_pacs.sh`` or ``monailabel start_server``)
is run from the repository root on the sample data, inside a private network namespace (loopback only, so its
fixed ports 8000 and 8042 are this test's alone), with ``HOME`` in a temporary folder (``run_pacs.sh`` keeps its
PACS under ``~``). It passes when the app answers ``GET /info/`` on port 8000 with the served models; then the
whole process group (app, Orthanc) is stopped. The other blocks (set-up steps) are checked by
tests/unit/test_docs.py."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path

from .netns import REPO_ROOT, namespace_problem, skip_or_fail

GUIDES = sorted((REPO_ROOT / "docs" / "getting-started").glob("*.md"))
STARTS = re.compile(r"(^|\s)(\./run\.sh|\./run_pacs\.sh|monailabel start_server)(\s|$)", re.M)


def server_blocks() -> list[tuple[str, str]]:
    """(guide name, block) of every distinct ``bash ci`` block that starts the server."""
    seen, out = set(), []
    for guide in GUIDES:
        for block in re.findall(r"```bash ci\n(.*?)```", guide.read_text(encoding="utf-8"), re.S):
            if STARTS.search(block) and block not in seen:
                seen.add(block)
                out.append((guide.name, block))
    return out


BLOCKS = server_blocks()


def test_the_guides_have_server_blocks():
    assert {name for name, _ in BLOCKS} >= {"slicer.md", "pacs.md"}, BLOCKS


def prepare_what_auto_serves_once() -> None:
    """Every block serves the repository's own model folder with the default options, so the first start of each
    would do the same one-off work, cached in ``model/engines``: convert the network to OpenVINO in a background
    process and, on a CPU with native bf16, measure its gate. Five at once on 2 cores took the test from about 35 s to
    97 s (the bf16 gate alone). It is done here once, as the first of them would; the first-start behaviour itself
    is tested in tests/unit/test_openvino_backend.py, test_reduced_precision.py and tests/server/test_bundle_server.py."""
    from lib.evaluation import make_infer_task

    make_infer_task(REPO_ROOT / "model", {}).warm_up("cpu", wait=True, timeout=300)


def test_every_getting_started_server_command_starts_a_working_server(tmp_path):
    """All blocks at once, each in its own namespace (their fixed ports do not meet): the time of the slowest."""
    problem = namespace_problem()  # the fixed ports need a namespace of their own (root)
    if problem is None and any("run_pacs" in b or "orthanc" in b for _, b in BLOCKS) and not Path("/usr/sbin/Orthanc").exists():
        problem = "Orthanc is not installed: run ./scripts/setup_pacs.sh"
    skip_or_fail(problem, "getting-started command")
    prepare_what_auto_serves_once()
    runs = []
    for i, (guide, block) in enumerate(BLOCKS):
        home = tmp_path / f"block{i}"
        home.mkdir()
        log, info = home / "run.log", home / "info.json"
        script = textwrap.dedent(f"""\
            set -m
            ip link set lo up
            export HOME={home}
            ( {block}
            ) > {log} 2>&1 &
            pid=$!
            ok=
            for i in $(seq 1 300); do
              if curl -sf http://127.0.0.1:8000/info/ -o {info}; then ok=1; break; fi
              kill -0 $pid 2>/dev/null || break
              sleep 1
            done
            kill -TERM -$pid 2>/dev/null; sleep 3; kill -KILL -$pid 2>/dev/null
            test -n "$ok"
            """)
        runs.append((guide, block, log, info, subprocess.Popen(["unshare", "-n", "bash", "-c", script], cwd=REPO_ROOT)))
    failures = []
    for guide, block, log, info, proc in runs:
        try:
            code = proc.wait(timeout=420)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        if code != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            failures.append(f"{guide}: no answer on /info/ within 300 s:\n{block}\n--- log ---\n{tail}")
            continue
        models = json.loads(info.read_text())["models"]
        if not {"dints_pancreas", "deepedit_pancreas", "prompt_organ"} <= set(models):
            failures.append(f"{guide}: /info/ lists {sorted(models)}:\n{block}")
    assert not failures, "\n\n".join(failures)
