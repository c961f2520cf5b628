"""Connections that never finish their request headers are closed (``--conf header_timeout_seconds``, default 10).

uvicorn's keep-alive timer starts only after a first answer, so a client that opens connections and trickles
(or never sends) its headers keeps each of them for ever. This adds a deadline from the moment a connection is
made until its first request's headers are complete; request bodies have their own idle timeout
(:class:`lib.server.guard.RequestGuard`).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
_state = {"seconds": 10.0, "installed": False}


def install(seconds: float) -> None:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    _state["seconds"] = float(seconds)
    if _state["installed"] or _state["seconds"] <= 0:
        return
    original = H11Protocol.connection_made

    def connection_made(self, transport):
        original(self, transport)

        def no_headers_yet():
            if self.cycle is None and not transport.is_closing():
                logger.info(f"Closed a connection from {self.client}: no complete request headers within "
                            f"{_state['seconds']:g} s")
                transport.close()

        self.loop.call_later(_state["seconds"], no_headers_yet)

    H11Protocol.connection_made = connection_made
    _state["installed"] = True
