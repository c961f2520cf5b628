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
