"""SIGTERM (and Ctrl-C) stop the server and everything it started within a few seconds.

uvicorn alone waits for running requests (an hour-long inference kept it alive) and leaves child
processes (training, scoring, the compiled-package builder) running. The handler installed here lets
uvicorn begin its shutdown, terminates every descendant process (SIGTERM, then SIGKILL after
``CHILD_GRACE`` s) and, if the server is still alive ``EXIT_GRACE`` s after the signal, exits hard.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

logger = logging.getLogger(__name__)

CHILD_GRACE = 3.0
EXIT_GRACE = 6.0


def stop_children(grace: float = CHILD_GRACE) -> int:
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    return len(children)


def install() -> bool:
    """Wrap the current SIGTERM/SIGINT handlers (uvicorn's); only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            logger.info(f"Signal {signal.Signals(signum).name}: stopping the server and its child processes")
            server = getattr(previous, "__self__", None)
            if callable(previous):
                previous(signum, frame)
            if server is not None and hasattr(server, "force_exit"):
                server.force_exit = True  # do not wait for running requests

            def finish():
                started = time.time()
                count = stop_children()
                if count:
                    logger.info(f"Stopped {count} child process(es)")
                time.sleep(max(0.0, EXIT_GRACE - (time.time() - started)))
                logger.warning("Server still running after the shutdown grace period: exiting now")
                os._exit(0)

            threading.Thread(target=finish, name="shutdown", daemon=True).start()

        signal.signal(sig, handler)
    return True
