"""Every REST route the running server answers, with a one-line purpose (``routes.toml`` beside this file):
documentation data, read by nobody at run time.

``scripts/make_reference.py`` writes ``docs/reference/rest-api.md`` from :data:`ROUTES`, with the role each route
needs taken from :func:`lib.server.access.required_role` (so the table cannot disagree with the access guard).
``tests/unit/test_docs.py`` fails when a route the app registers (:mod:`lib.server.routes`, :mod:`lib.server.authentication`,
:mod:`lib.server.ohif`, :mod:`lib.server.dicom_proxy`) or a pattern of :data:`lib.server.access.ROUTE_ROLES` has no
row here, or when the committed page differs from what the generator writes.

``source`` is ``app`` for a route this app serves (its own, or its checked version of MONAI Label's, registered in
front of the stock one) and ``MONAI Label`` for a stock MONAI Label 0.8.5 route served unchanged. ``purpose`` is
Markdown; its links are relative to ``docs/reference/``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import NamedTuple

APP = "app"
STOCK = "MONAI Label"


class Route(NamedTuple):
    methods: tuple[str, ...]
    path: str
    source: str
    purpose: str


ROUTES: list[Route] = [Route(tuple(r["methods"]), r["path"], r["source"], r["purpose"])
                       for r in tomllib.loads(Path(__file__).with_name("routes.toml").read_text(encoding="utf-8"))["route"]]


def example_path(path: str) -> str:
    """A concrete path for a route pattern (``{model}`` -> ``x``, ``{path}`` -> ``x/y``), to ask the access guard."""
    import re

    path = re.sub(r"\{path(:path)?\}", "x/y", path)
    return re.sub(r"\{[^}]+\}", "x", path)
