"""Put the app's routes and request guard into the running MONAI Label web server.

MONAI Label builds its FastAPI app (``monailabel.app:app``) before it constructs our app, inside the
server's start-up; so this runs from the app's constructor: the routes of :mod:`lib.server.routes` go in
front of the stock ones (Starlette matches in order), :class:`lib.server.guard.RequestGuard` wraps the
rest, and the shutdown handler is installed.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)


def install_into_server() -> bool:
    module = sys.modules.get("monailabel.app")
    app = getattr(module, "app", None)
    if app is None or getattr(app.state, "dints_label_installed", False):
        return False
    from starlette.middleware import Middleware

    from lib.server import shutdown
    from lib.server.guard import RequestGuard
    from lib.server.ohif import router as ohif_router
    from lib.server.routes import router

    routes = app.router.routes
    before = len(routes)
    app.include_router(router)
    app.include_router(ohif_router)
    ours = routes[before:]
    del routes[before:]
    routes[0:0] = ours
    app.user_middleware.insert(0, Middleware(RequestGuard))
    app.middleware_stack = app.build_middleware_stack()
    app.state.dints_label_installed = True
    shutdown.install()
    logger.info(f"Installed {len(ours)} checked routes, the request guard and the shutdown handler")
    return True
