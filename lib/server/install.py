"""Put the app's routes and request guard into the running MONAI Label web server.

MONAI Label builds its FastAPI app (``monailabel.app:app``) before it constructs our app, inside the
server's start-up; so this runs from the app's constructor: the routes of :mod:`lib.server.routes`,
:mod:`lib.server.ohif` and :mod:`lib.server.dicom_proxy` go in front of the stock ones (Starlette matches in
order), :class:`lib.server.guard.RequestGuard` wraps the rest, :mod:`lib.server.authentication` puts the access guard (hosts, origins, tokens, roles) in front of
everything, and the shutdown handler is installed.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)


def install_into_server(conf: dict | None = None) -> bool:
    module = sys.modules.get("monailabel.app")
    app = getattr(module, "app", None)
    if app is None or getattr(app.state, "dints_label_installed", False):
        return False
    from starlette.middleware import Middleware

    from lib.server import authentication, shutdown, slow_clients
    from lib.server.dicom_proxy import router as proxy_router
    from lib.server.guard import RequestGuard
    from lib.server.ohif import router as ohif_router
    from lib.server.routes import router

    routes = app.router.routes
    before = len(routes)
    app.include_router(authentication.router)
    app.include_router(router)
    app.include_router(ohif_router)
    app.include_router(proxy_router)
    ours = routes[before:]
    del routes[before:]
    routes[0:0] = ours
    conf = conf or {}
    from lib.server.ohif import choose_build

    choose_build(conf.get("ohif", "ours"))
    app.user_middleware.insert(0, Middleware(RequestGuard, volume_mb=float(conf.get("max_upload_mb", 4096)),
                                             label_mb=float(conf.get("max_label_upload_mb", 1024)),
                                             idle_seconds=float(conf.get("upload_idle_seconds", 60)),
                                             min_kbps=float(conf.get("upload_min_kbps", 10))))
    authentication.install(app, conf)
    slow_clients.install(float(conf.get("header_timeout_seconds", 10)))  # outermost: who may call what, before anything else runs
    app.middleware_stack = app.build_middleware_stack()
    app.state.dints_label_installed = True
    shutdown.install()
    logger.info(f"Installed {len(ours)} checked routes, the request guard and the shutdown handler")
    return True
