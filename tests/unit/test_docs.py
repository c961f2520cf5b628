"""The user's manual (README.md and docs/) against the code.

* The generated reference (``docs/reference/configuration.md``, ``docs/reference/rest-api.md``) equals what
  ``scripts/make_reference.py`` writes now from the code's tables (``lib/configs/options.py``,
  ``lib/server/route_docs.py``, ``ROUTE_ROLES`` in ``lib/server/access.py``).
* Every ``--conf`` option the code reads (``conf.get("name"``, ``conf["name"]``, ``"name" in conf`` and
  ``conf_prefix + "name"`` for every config class's ``conf_prefix``, in ``lib/`` and ``apps/``) is in the options
  table, and every ``--conf NAME`` the manual shows is one.
* Every pattern of ``ROUTE_ROLES`` matches a route listed in ``rest-api.md``, and every route the app registers
  has a row.
* Every relative link in README.md and docs/**/*.md points to a file that exists (and, into a Markdown file, to
  a heading that exists).
* Every shell block of ``docs/getting-started/*.md`` is marked to run in CI (fence info string ``bash ci``), and
  each is checked here for what is cheap: ``bash -n`` syntax, and that every script, module and ``--conf`` option it
  names exists. The blocks that start the server are run as they stand, on the sample data, by
  ``tests/e2e/test_getting_started.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DOCS = REPO / "docs"


def _manual_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def _generator():
    spec = importlib.util.spec_from_file_location("make_reference", REPO / "scripts" / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the generated reference ------------------------------------------------------------------------------
def test_generated_reference_is_up_to_date():
    gen = _generator()
    stale = []
    for rel, build in gen.PAGES.items():
        path = REPO / rel
        if not path.exists() or path.read_text(encoding="utf-8") != build():
            stale.append(rel)
    assert not stale, f"out of date: {stale}; run .venv/bin/python scripts/make_reference.py"


# ---- --conf options -------------------------------------------------------------------------------------
def _is_conf(node: ast.AST, aliases: set[str]) -> bool:
    """``conf``, ``self.conf``, ``instance.conf`` or a local name bound to one of them."""
    if isinstance(node, ast.Name):
        return node.id == "conf" or node.id in aliases
    return isinstance(node, ast.Attribute) and node.attr == "conf"


def _conf_aliases(tree: ast.AST) -> set[str]:
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = []
            if isinstance(target, ast.Name):
                pairs.append((target, node.value))
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs += list(zip(target.elts, node.value.elts))
            for name, value in pairs:
                if isinstance(name, ast.Name) and _is_conf(value, set()):
                    aliases.add(name.id)
    return aliases


def _string(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _prefixed(node: ast.AST) -> str | None:
    """``self.conf_prefix + "model_file"`` -> ``model_file``."""
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.left, ast.Attribute)
            and node.left.attr == "conf_prefix"):
        return _string(node.right)
    return None


def scan_conf_options(roots=("lib", "apps")) -> tuple[set[str], set[str], set[str]]:
    """(options read by name, suffixes read after a ``conf_prefix``, the ``conf_prefix`` values) in the source."""
    names, suffixes, prefixes = set(), set(), set()
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            try:
                tree = ast.parse(source)
            except SyntaxError:  # a file being edited: fall back to the plain text patterns
                names.update(re.findall(r"""conf\.get\(\s*["']([\w.-]+)["']""", source))
                continue
            aliases = _conf_aliases(tree)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                        and _is_conf(node.func.value, aliases) and node.args):
                    key = node.args[0]
                    if _string(key) is not None:
                        names.add(_string(key))
                    elif _prefixed(key) is not None:
                        suffixes.add(_prefixed(key))
                elif isinstance(node, ast.Subscript) and _is_conf(node.value, aliases):
                    if _string(node.slice) is not None:
                        names.add(_string(node.slice))
                    elif _prefixed(node.slice) is not None:
                        suffixes.add(_prefixed(node.slice))
                elif (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In)
                      and _is_conf(node.comparators[0], aliases) and _string(node.left) is not None):
                    names.add(_string(node.left))
                elif isinstance(node, ast.ClassDef):
                    for stmt in node.body:
                        if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "conf_prefix"
                                                                 for t in stmt.targets)
                                and _string(stmt.value) is not None):
                            prefixes.add(_string(stmt.value))
    return names, suffixes, prefixes


def test_scanner_finds_the_known_readers():
    """The scanner itself: options read in each of the usual ways are found."""
    names, suffixes, prefixes = scan_conf_options()
    assert {"task", "sw_overlap", "scoring_samples", "session_max_count", "auth_tokens", "auto_train_after",
            "background_position", "max_upload_mb"} <= names
    assert "model_file" in suffixes and {"", "interactive_"} <= prefixes


def test_every_option_the_code_reads_is_documented():
    from lib.configs.options import OPTIONS, SECTIONS

    names, suffixes, prefixes = scan_conf_options()
    read = names | {prefix + suffix for prefix in prefixes or {""} for suffix in suffixes}
    table = [o.name for o in OPTIONS]
    assert len(table) == len(set(table)), "an option is listed twice in lib/configs/options.py"
    missing = sorted(read - set(table))
    assert not missing, f"--conf options read by the code but not in lib/configs/options.py: {missing}"
    sections = {key for key, _, _ in SECTIONS}
    assert all(o.section in sections and o.default and o.meaning for o in OPTIONS)


def test_options_shown_in_the_manual_exist():
    from lib.configs.options import by_name

    known = set(by_name())
    shown = set()
    for path in _manual_files():
        shown |= {(path.name, m) for m in re.findall(r"--conf[ =]+([a-z_]+)", path.read_text(encoding="utf-8"))}
    unknown = sorted((f, name) for f, name in shown if name not in known and name not in ("KEY",))
    assert not unknown, f"--conf options in the manual that the table does not know: {unknown}"


# ---- REST routes ----------------------------------------------------------------------------------------
def _documented_routes() -> set[tuple[str, str]]:
    text = (DOCS / "reference" / "rest-api.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([A-Z]+)` \| `([^`]+)` \|", text, re.MULTILINE))


def test_every_route_role_pattern_is_in_rest_api():
    from lib.server.access import ROUTE_ROLES
    from lib.server.route_docs import example_path

    documented = _documented_routes()
    assert documented, "no route rows found in docs/reference/rest-api.md"
    missing = []
    for methods, pattern, _role in ROUTE_ROLES:
        regex = re.compile(pattern + r"\Z")
        for method in sorted(methods):
            if not any(m == method and regex.match(example_path(p)) for m, p in documented):
                missing.append(f"{method} {pattern}")
    assert not missing, f"ROUTE_ROLES entries with no route in docs/reference/rest-api.md: {missing}"


def _app_routes() -> set[tuple[str, str]]:
    from lib.server import authentication, dicom_proxy, ohif, routes

    def walk(router):
        for route in router.routes:
            if hasattr(route, "original_router"):  # FastAPI's lazily included router
                yield from walk(route.original_router)
            elif hasattr(route, "routes") and not hasattr(route, "methods"):
                yield from walk(route)
            elif hasattr(route, "methods"):
                path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
                for method in route.methods:
                    yield method, path

    out = set()
    for router in (routes.router, authentication.router, ohif.router, dicom_proxy.router):
        out |= set(walk(router))
    return out


def test_every_app_route_is_documented():
    from lib.server.route_docs import APP, ROUTES

    app_routes = _app_routes()
    assert ("PUT", "/datastore/label") in app_routes
    listed = {(m, r.path) for r in ROUTES if r.source == APP for m in r.methods}
    assert not sorted(app_routes - listed), f"app routes missing from lib/server/route_docs.py: {sorted(app_routes - listed)}"
    assert not sorted(listed - app_routes), f"listed as the app's but not registered by it: {sorted(listed - app_routes)}"


# ---- links ----------------------------------------------------------------------------------------------
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    text = re.sub(r"`|\*", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, seen = set(), {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _strip_code(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def test_relative_links_resolve():
    broken = []
    for path in _manual_files():
        for target in LINK.findall(_strip_code(path.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_short_and_links_the_workarounds():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160
    assert "monailabel 0.8.5" in readme.lower() and "docs/explanation/monailabel-0.8.5.md" in readme


# ---- getting-started command blocks ---------------------------------------------------------------------
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELLS = ("bash", "sh", "shell", "console")


def _blocks(path: Path) -> list[tuple[str, str]]:
    return [(info.strip(), body) for info, body in FENCE.findall(path.read_text(encoding="utf-8"))]


def _getting_started() -> list[Path]:
    return sorted((DOCS / "getting-started").glob("*.md"))


def test_getting_started_pages_exist():
    assert {p.name for p in _getting_started()} >= {"slicer.md", "ohif.md", "pacs.md"}


@pytest.mark.parametrize("page", _getting_started(), ids=lambda p: p.name)
def test_getting_started_shell_blocks_are_marked_for_ci(page):
    blocks = [(info, body) for info, body in _blocks(page) if info.split() and info.split()[0] in SHELLS]
    assert blocks, f"{page.name} has no shell block"
    unmarked = [body.splitlines()[0] for info, body in blocks if "ci" not in info.split()[1:]]
    assert not unmarked, f"{page.name}: shell blocks not marked 'bash ci': {unmarked}"


def _named_paths(body: str) -> list[str]:
    """Scripts and modules a block runs: ./x.sh, scripts/x.py, benchmarks/x.py, python -m lib.x.y."""
    paths = re.findall(r"(?<![\w/.-])(?:\./)?((?:scripts|benchmarks|lib|apps|tests)/[\w./-]+\.(?:sh|py))", body)
    paths += re.findall(r"(?<![\w/.-])\./([\w.-]+\.sh)\b", body)
    paths += [m.replace(".", "/") for m in re.findall(r"-m\s+((?:lib|scripts|benchmarks)(?:\.\w+)+)", body)]
    paths += re.findall(r"--app\s+([\w./-]+)", body)
    return paths


@pytest.mark.parametrize("page", _getting_started(), ids=lambda p: p.name)
def test_getting_started_ci_blocks_are_sound(page):
    from lib.configs.options import by_name

    bash = shutil.which("bash")
    problems = []
    for info, body in _blocks(page):
        if "ci" not in info.split()[1:]:
            continue
        if bash:
            res = subprocess.run([bash, "-n"], input=body, text=True, capture_output=True)
            if res.returncode:
                problems.append(f"bash -n: {res.stderr.strip()}")
        for rel in _named_paths(body):
            candidates = [REPO / rel, REPO / f"{rel}.py", REPO / rel / "__init__.py"]
            if not any(c.exists() for c in candidates):
                problems.append(f"names {rel}, which does not exist")
        for name in re.findall(r"--conf[ =]+([a-z_]+)", body):
            if name not in by_name():
                problems.append(f"--conf {name} is no option")
    assert not problems, f"{page.name}: " + "; ".join(problems)
