"""Every ``--conf KEY VALUE`` option of the app, in one table (``options.toml`` beside this file): documentation
data, read by nobody at run time.

``scripts/make_reference.py`` writes ``docs/reference/configuration.md`` from :data:`OPTIONS` and
:data:`SECTIONS`; ``tests/unit/test_docs.py`` fails when an option the code reads (``conf.get("name"``, ``conf["name"]``,
``"name" in conf``, or ``conf_prefix + "name"``, in ``lib/`` and ``apps/``) is missing here, or when the committed
reference differs from what the generator writes. The code reads its options where it always did
(:mod:`lib.configs.segmentation`, :mod:`lib.configs.interactive`, ``apps/dints_pancreas/main.py``,
:mod:`lib.server.install`, :mod:`lib.server.authentication`, :mod:`lib.server.uploads`, :mod:`lib.trainers.auto`);
change a default there and here together.

``default`` is what the user would write on the command line (or, in words, what happens without the option);
``meaning`` is Markdown, and its links are relative to ``docs/reference/``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import NamedTuple


class Option(NamedTuple):
    name: str
    default: str
    section: str
    meaning: str


_DATA = tomllib.loads((Path(__file__).with_name("options.toml")).read_text(encoding="utf-8"))
# (key, title, one-line introduction) in the order the reference lists them
SECTIONS: list[tuple[str, str, str]] = [(s["key"], s["title"], s["intro"]) for s in _DATA["section"]]
OPTIONS: list[Option] = [Option(o["name"], o["default"], o["section"], o["meaning"]) for o in _DATA["option"]]


def by_name() -> dict[str, Option]:
    return {option.name: option for option in OPTIONS}
