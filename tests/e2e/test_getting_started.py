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

import pytest

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


@pytest.mark.parametrize("guide, block", BLOCKS, ids=[f"{n}:{i}" for i, (n, _) in enumerate(BLOCKS)])
def test_a_getting_started_command_starts_a_working_server(guide, block, tmp_path):
    problem = namespace_problem()  # the fixed ports need a namespace of their own (root)
    if problem is None and ("run_pacs" in block or "orthanc" in block) and not Path("/usr/sbin/Orthanc").exists():
        problem = "Orthanc is not installed: run ./scripts/setup_pacs.sh"
    skip_or_fail(problem, "getting-started command")
    log, info = tmp_path / "run.log", tmp_path / "info.json"
    script = textwrap.dedent(f"""\
        set -m
        ip link set lo up
        export HOME={tmp_path}
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
    run = subprocess.run(["unshare", "-n", "bash", "-c", script], cwd=REPO_ROOT, timeout=420)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    assert run.returncode == 0, f"{guide}: the server did not answer /info/ within 300 s:\n{block}\n--- log ---\n{tail}"
    models = json.loads(info.read_text())["models"]
    assert "dints_pancreas" in models and "deepedit_pancreas" in models and "prompt_organ" in models, list(models)
