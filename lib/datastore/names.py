"""Image ids, label tags, session ids and model names are names, not paths.

One rule for every endpoint: letters, digits and ``. _ - +``, starting with a letter or digit, at most
``MAX_NAME_LENGTH`` characters, no ``..``. So no separator, no control character, no absolute path and
no hidden file can reach the file system through a request. :func:`inside` is the second line of
defence: a resolved path must stay inside its folder.
"""

from __future__ import annotations

import os
import re

from lib.errors import InputError

MAX_NAME_LENGTH = 128
NAME_CHARS = "letters, digits and . _ - +"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def name_problem(value) -> str | None:
    """Why ``value`` is not a valid name, or None when it is."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_NAME_LENGTH})"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains control characters"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if ".." in value:
        return "contains '..'"
    if not _NAME.fullmatch(value):
        return f"may hold only {NAME_CHARS} and must start with a letter or digit"
    return None


def check_name(value, what: str = "image id") -> str:
    """``value`` if it is a valid name, else :class:`InputError` 400 naming the rule it breaks."""
    problem = name_problem(value)
    if problem:
        shown = value if isinstance(value, str) and len(value) <= 60 else (str(value)[:60] + "...")
        raise InputError(f"{what} {shown!r} {problem}: a {what} is a name ({NAME_CHARS}, at most "
                         f"{MAX_NAME_LENGTH} characters), not a path", 400)
    return value


def inside(folder: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when ``path``, resolved (symbolic links followed), is ``folder`` or lies below it."""
    base = os.path.realpath(folder)
    real = os.path.realpath(path)
    return os.path.commonpath([base, real]) == base


def check_inside(folder, path, what: str = "path") -> str:
    if not inside(folder, path):
        raise InputError(f"{what} resolves outside its folder and is refused", 400)
    return str(path)
