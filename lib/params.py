"""Request and ``--conf`` values: the documented parameter schema of the train tasks and its parsing.

Slicer sends every value as a string, other clients send JSON types; both parse the same way here, and a
value that does not parse is a clear 400, never a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    kind: str  # int | float | bool | str | int3 | floats
    doc: str
    bounds: tuple | None = None  # (lowest, highest) allowed, for int and float


TRUE_WORDS = ("1", "true", "yes", "on", "y", "t")
FALSE_WORDS = ("0", "false", "no", "off", "n", "f")


def truthy(value: Any, name: str = "value") -> bool:
    """The one boolean parser of the project: a request's or a ``--conf`` boolean, strings from Slicer (``"true"``,
    ``"1"``, ``"yes"``...), JSON booleans and the numbers 0 and 1; None is False (an option left out).

    Anything else is a :class:`ValueError` naming ``name``, never a silent False: a typo such as
    ``fast_path=flase`` must not quietly switch a feature off (request callers turn the error into a 400 with
    :func:`request_flag`)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"{name} must be a boolean (true/false, yes/no, on/off, 1/0), got {value!r}")


def request_flag(request: dict, name: str, default: Any = False) -> bool:
    """A boolean of a request, read with :func:`truthy`; missing or blank (a form's empty field) is ``default``, as in
    :func:`parse_value`; a bad value is the client's: :class:`InputError` 400."""
    from lib.errors import InputError

    value = request.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        value = default
    try:
        return truthy(value, name)
    except ValueError as exc:
        raise InputError(str(exc), 400) from None


def int_tuple(value: str | None, n: int = 3) -> tuple[int, ...] | None:
    """``"96"`` / ``"96,96,64"`` / ``"96x96x64"`` as a tuple of ``n`` ints (one value is repeated); None stays None."""
    if value is None:
        return None
    parts = [int(v) for v in str(value).replace("x", ",").split(",") if v.strip()]
    return tuple(parts * n if len(parts) == 1 else parts)


def float_tuple(value: str | None, n: int = 3) -> tuple[float, ...] | None:
    if value is None:
        return None
    parts = [float(v) for v in str(value).split(",") if v.strip()]
    return tuple(parts * n if len(parts) == 1 else parts)


def parse_value(p: Param, v: Any) -> Any:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return p.default
    if p.kind == "int":
        return int(float(v))
    if p.kind == "float":
        return float(v)
    if p.kind == "bool":
        return truthy(v, p.name)
    if p.kind == "int3":
        parts = list(v) if isinstance(v, (list, tuple)) else [x for x in str(v).replace("x", ",").split(",") if x.strip()]
        parts = [int(float(x)) for x in parts]
        return tuple(parts * 3 if len(parts) == 1 else parts)
    if p.kind == "floats":
        parts = list(v) if isinstance(v, (list, tuple)) else [x for x in str(v).split(",") if x.strip()]
        return tuple(float(x) for x in parts)
    return str(v)


def parse_request(params: Sequence[Param], request: dict) -> dict:
    """Values from the request (strings from Slicer, JSON types from other clients), defaults otherwise."""
    out = {}
    for p in params:
        try:
            out[p.name] = parse_value(p, request.get(p.name))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"request parameter '{p.name}': cannot read {request.get(p.name)!r} as {p.kind} ({exc})") from None
        if p.bounds is not None and not (p.bounds[0] <= out[p.name] <= p.bounds[1]):  # NaN fails too
            raise ValueError(f"request parameter '{p.name}' must be between {p.bounds[0]} and {p.bounds[1]}, got {out[p.name]!r}")
    return out


def config_defaults(params: Sequence[Param]) -> dict:
    """What ``/info`` shows as the trainer's config (Slicer shows these as editable options)."""
    out = {}
    for p in params:
        v = p.default
        out[p.name] = list(v) if isinstance(v, tuple) else v
    return out


def params_markdown(params: Sequence[Param]) -> str:
    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    for p in params:
        d = ",".join(map(str, p.default)) if isinstance(p.default, tuple) else p.default
        rows.append(f"| `{p.name}` | `{d}` | {p.doc} |")
    return "\n".join(rows)
