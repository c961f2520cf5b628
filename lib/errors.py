"""Errors that reach the user as a clear HTTP answer instead of a stack trace."""

from __future__ import annotations


class InputError(Exception):
    """A request the server cannot serve because of its input; carries the HTTP status to answer with."""

    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


def http_error(exc: Exception, what: str, log) -> Exception:
    """The HTTP answer for an exception a route did not expect to handle itself, in one place.

    :class:`InputError` keeps its status and message; MONAI Label's own exceptions are the client's (400); anything
    else is a 500 whose answer names only the kind of failure and an error id: the traceback, with the paths and
    addresses in it, goes to the server log under that id."""
    import traceback
    import uuid

    from fastapi import HTTPException
    from monailabel.interfaces.exception import MONAILabelException

    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, InputError):
        return HTTPException(status_code=exc.status_code, detail=exc.message)
    if isinstance(exc, MONAILabelException):
        return HTTPException(status_code=400, detail=exc.msg)
    error_id = uuid.uuid4().hex[:12]
    log.error(f"{what} failed (error {error_id}):\n{traceback.format_exc()}")
    return HTTPException(status_code=500, detail=f"{what} failed ({type(exc).__name__}); the server log has the "
                                                 f"details under error id {error_id}")
