"""The app's versions of MONAI Label's data-path routes, registered in front of the stock ones.

Same paths, parameters and answers as MONAI Label 0.8.5 (the Slicer and OHIF plugins call them unchanged), with
what the stock routes lack: names checked, uploads written to private temporary folders removed after every
request, labels checked and versioned, requests checked before work starts, and every long route a plain ``def``,
so FastAPI runs it in its thread pool and a long inference never holds up ``/info`` or a label submit. One module
per concern: :mod:`lib.server.datastore_routes`, :mod:`lib.server.session_routes`,
:mod:`lib.server.infer_routes`, :mod:`lib.server.train_routes`.
"""

from __future__ import annotations

from fastapi import APIRouter
from monailabel.config import settings

from lib.server import datastore_routes, infer_routes, session_routes, train_routes

router = APIRouter(prefix=settings.MONAI_LABEL_API_STR)
for _module in (datastore_routes, session_routes, infer_routes, train_routes):
    router.include_router(_module.router)
