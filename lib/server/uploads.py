"""Files a request uploads: each in a private temporary folder removed when the request ends, whatever
happens, and registered as *trusted* while it exists, so inference reads only datastore images, this
server's session files and the request's own upload, never an arbitrary server path.

Sessions (``PUT /session/``, the 3D Slicer module's path for a volume that is not in the datastore) are bounded
(:class:`SessionLimits`): at most ``--conf session_max_count`` live sessions on this server (503 beyond, before
the upload is read), at most ``session_max_mb`` per session (the upload is parsed as it streams in, written to
disk part by part and cut off with a 413 the moment it passes the cap; the partial files go with the request's
temporary folder), and a session not used for ``session_idle_seconds`` expires (every use of a session in an
inference counts as use; expired sessions are removed whenever a session is created or used, and by MONAI Label's
own sweep every 5 minutes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping

from lib.datastore.label_files import file_extension
from lib.errors import InputError

_lock = threading.Lock()
_trusted: set[str] = set()
PREFIX = "dints-label-upload-"


def _safe_extension(filename: str | None, default: str) -> str:
    ext = file_extension(filename or "") if filename else default
    ext = ext.lower()
    return ext if ext and all(c.isalnum() or c == "." for c in ext) and len(ext) <= 12 else default


@contextmanager
def upload_folder() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix=PREFIX)
    try:
        yield folder
    finally:
        with _lock:
            for path in [p for p in _trusted if p.startswith(folder + os.sep)]:
                _trusted.discard(path)
        shutil.rmtree(folder, ignore_errors=True)


def save_upload(folder: str, upload, name: str = "upload", default_ext: str = ".nii.gz", trusted: bool = True) -> str:
    """Write an ``UploadFile`` into ``folder`` under a name of our choosing (the client's name is not a path)."""
    path = os.path.join(folder, name + _safe_extension(upload.filename, default_ext))
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    if trusted:
        trust(path)
    return path


def trust(path: str) -> None:
    with _lock:
        _trusted.add(os.path.realpath(path))


def untrust(path: str) -> None:
    with _lock:
        _trusted.discard(os.path.realpath(path))


def is_trusted(path: str) -> bool:
    with _lock:
        return os.path.realpath(path) in _trusted


# ---- sessions ----------------------------------------------------------------------------------------------
DEFAULT_SESSION_MAX_COUNT = 20
DEFAULT_SESSION_MAX_MB = 1024
DEFAULT_SESSION_IDLE_SECONDS = 1800
DEFAULT_SESSION_MAX_PER_USER = 5  # with authentication on (off, every request is the same anonymous user)
MAX_FORM_FIELD_BYTES = 64 << 10  # the form fields beside the files (the Slicer client sends its client_id)
FORM_OVERHEAD_BYTES = 16 << 20  # what a Content-Length may hold beyond the files (part headers of a DICOM series)
_sessions_lock = threading.Lock()
_pending = [0]  # sessions being registered (their files on the move into the session store)
_owners: dict[str, str] = {}  # session id -> the user who created it (sessions of this server process)


@dataclass(frozen=True)
class SessionLimits:
    max_count: int = DEFAULT_SESSION_MAX_COUNT
    max_mb: float = DEFAULT_SESSION_MAX_MB
    idle_seconds: int = DEFAULT_SESSION_IDLE_SECONDS
    per_user: int = DEFAULT_SESSION_MAX_PER_USER

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * (1 << 20))

    @classmethod
    def from_conf(cls, conf: Mapping[str, str] | None) -> "SessionLimits":
        conf = conf or {}
        try:
            limits = cls(int(conf.get("session_max_count", DEFAULT_SESSION_MAX_COUNT)),
                         float(conf.get("session_max_mb", DEFAULT_SESSION_MAX_MB)),
                         int(float(conf.get("session_idle_seconds", DEFAULT_SESSION_IDLE_SECONDS))),
                         int(conf.get("session_max_per_user", DEFAULT_SESSION_MAX_PER_USER)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"the server's session settings are not numbers (--conf session_max_count, "
                             f"session_max_mb, session_idle_seconds): {exc}", 500) from None
        if limits.max_count < 1 or limits.max_mb <= 0 or limits.idle_seconds < 1 or limits.per_user < 1:
            raise InputError("the server's session settings must be positive (--conf session_max_count, "
                             "session_max_mb, session_idle_seconds, session_max_per_user)", 500)
        return limits


def session_expired(info, limits: SessionLimits, now: float | None = None) -> bool:
    """Unused for longer than the idle limit (or the session's own, shorter, expiry)."""
    idle = min(int(info.expiry), limits.idle_seconds) if getattr(info, "expiry", 0) else limits.idle_seconds
    return (time.time() if now is None else now) > int(info.last_access_ts) + idle


def live_sessions(sessions, limits: SessionLimits) -> int:
    """Remove this server's expired (or dangling) sessions; the number left."""
    with _sessions_lock:
        for session_id, info in list(sessions.items()):
            if info is None or session_expired(info, limits) or not os.path.exists(info.image):
                sessions.remove_session(session_id)
        return len(sessions) + _pending[0]


def user_sessions(sessions, user: str) -> int:
    """Live sessions ``user`` created (forgetting the ones that are gone)."""
    with _sessions_lock:
        for session_id in [k for k in _owners if k not in sessions]:
            _owners.pop(session_id, None)
        return sum(1 for owner in _owners.values() if owner == user)


def check_session_room(sessions, limits: SessionLimits, user: str = "") -> None:
    """503 when this server holds as many live sessions as it may (after removing the expired ones); 429 when the
    user holds as many as one user may."""
    n = live_sessions(sessions, limits)
    mine = user_sessions(sessions, user) if user else 0
    if mine >= limits.per_user:
        raise InputError(f"{user or 'you'} already hold(s) {mine} live sessions, the limit per user (--conf "
                         f"session_max_per_user {limits.per_user}): end one (DELETE /session/{{id}}) or let it "
                         f"expire ({limits.idle_seconds} s unused)", 429)
    if n >= limits.max_count:
        raise InputError(f"this server holds {n} live sessions, its limit (--conf session_max_count "
                         f"{limits.max_count}): a session unused for {limits.idle_seconds} s expires, and "
                         "DELETE /session/{id} ends one now; try again later", 503)


def private(folder: str) -> None:
    """Owner-only permissions on a folder and everything in it (uploaded scans are patients' data)."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)


def add_session(sessions, limits: SessionLimits, data: str, expiry: int, user: str = ""):
    """Register ``data`` (a file or a DICOM series folder) as a new session of ``user``, within the count limit."""
    expiry = min(int(expiry), limits.idle_seconds) if expiry and expiry > 0 else limits.idle_seconds
    with _sessions_lock:
        n = len(sessions) + _pending[0]
        if n >= limits.max_count:  # another upload took the last place while this one arrived
            raise InputError(f"this server holds {n} live sessions, its limit (--conf session_max_count "
                             f"{limits.max_count}); try again later", 503)
        _pending[0] += 1  # its place is taken while its files move (outside the lock: other requests go on)
    try:
        # a random id (MONAI Label's is a time-based uuid1: the next one can be guessed) and a folder only the
        # server's user can read
        session_id, info = sessions.add_session(data, expiry, False, session_id=str(uuid.uuid4()))
        private(os.path.join(sessions.store_path, session_id))
        with _sessions_lock:
            _owners[session_id] = user
        return session_id, info
    finally:
        with _sessions_lock:
            _pending[0] -= 1


async def receive_files(request, folder: str, max_bytes: int, field: str = "files") -> list[tuple[str | None, str]]:
    """Stream the files of a ``multipart/form-data`` request body into ``folder`` as they arrive, each part
    straight to its own file (``(client filename, path)`` in order); 413 the moment their total passes
    ``max_bytes`` (the partial files stay in ``folder`` for its owner to remove). Form fields beside the files are
    read and dropped (at most 64 KB)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not options.get(b"boundary"):
        raise InputError(f"upload the volume as multipart/form-data, field '{field}'", 400)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD_BYTES:
        raise _too_large(max_bytes)  # refused before a byte is read
    files: list[tuple[str | None, str]] = []
    state = {"headers": {}, "name": b"", "value": b"", "out": None, "bytes": 0, "fields": 0}

    def on_part_begin():
        state["headers"] = {}

    def on_header_field(data, start, end):
        state["name"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["name"].lower()] = state["value"]
        state["name"], state["value"] = b"", b""

    def on_headers_finished():
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if b"filename" in opts and opts.get(b"name", b"").decode("latin-1") == field:
            path = os.path.join(folder, f"part{len(files):05d}")
            files.append((opts[b"filename"].decode("utf-8", "replace"), path))
            state["out"] = open(path, "wb")

    def on_part_data(data, start, end):
        n = end - start
        if state["out"] is None:
            state["fields"] += n
            if state["fields"] > MAX_FORM_FIELD_BYTES:
                raise InputError(f"the form fields beside the upload are over {MAX_FORM_FIELD_BYTES >> 10} KB", 413)
            return
        state["bytes"] += n
        if state["bytes"] > max_bytes:
            raise _too_large(max_bytes)
        state["out"].write(data[start:end])

    def on_part_end():
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None

    parser = MultipartParser(options[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except InputError:
        raise
    except Exception as exc:
        from python_multipart.exceptions import FormParserError

        if isinstance(exc, FormParserError):
            raise InputError(f"the upload is not valid multipart/form-data: {exc}", 400) from None
        raise
    finally:
        if state["out"] is not None:
            state["out"].close()
    return files


def _too_large(max_bytes: int) -> InputError:
    return InputError(f"the upload is over the limit of one session, {max_bytes / (1 << 20):g} MB "
                      "(--conf session_max_mb)", 413)


def name_uploads(folder: str, files: list[tuple[str | None, str]]) -> str:
    """The received parts under names of our choosing: one file as ``image<ext>``, several as the files of a
    DICOM series folder ``series/00000<ext>``; returns the file or the folder."""
    if len(files) == 1:
        filename, path = files[0]
        target = os.path.join(folder, "image" + _safe_extension(filename, ".nii.gz"))
        os.replace(path, target)
        return target
    series = os.path.join(folder, "series")
    os.makedirs(series)
    for i, (filename, path) in enumerate(files):
        os.replace(path, os.path.join(series, f"{i:05d}" + _safe_extension(filename, ".dcm")))
    return series
