"""What the app's routes share: errors turned into answers, JSON form fields, label revisions."""

from __future__ import annotations

import functools
import json
import logging
from typing import Optional

from monailabel.interfaces.utils.app import app_instance

from lib.errors import InputError, http_error

logger = logging.getLogger(__name__)

# request parameters that name files: the route sets them, a client cannot
PATH_KEYS = ("image", "label", "session", "model")


def answers(fn):
    """Turn the app's errors into HTTP answers with a message (never a stack trace, never a bare 500)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise http_error(exc, fn.__name__, logger) from None

    return wrapper


def json_object(text: str | None, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not valid JSON: {exc}", 400) from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, not {type(value).__name__}", 400)
    return value


def revision(rev: Optional[int], if_match: Optional[str]) -> Optional[int]:
    """The revision a client says it edited: ``?rev=N`` or an ``If-Match: "N"`` header (``*``: any)."""
    if rev is not None:
        return int(rev)
    if not if_match or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    try:
        return int(value)
    except ValueError:
        raise InputError(f"If-Match must be a label revision (a number), got {if_match!r}", 400) from None


def etag(rev: int) -> dict:
    return {"ETag": f'"{rev}"'}


def datastore_with_history():
    ds = app_instance().datastore()
    if not hasattr(ds, "history"):
        raise InputError("label versions need the local studies folder datastore", 501)
    return ds
