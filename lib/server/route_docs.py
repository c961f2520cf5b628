"""Every REST route the running server answers, with a one-line purpose: documentation data, read by nobody at
run time.

``scripts/make_reference.py`` writes ``docs/reference/rest-api.md`` from :data:`ROUTES`, with the role each route
needs taken from :func:`lib.server.access.required_role` (so the table cannot disagree with the access guard).
``tests/test_docs.py`` fails when a route the app registers (:mod:`lib.server.routes`, :mod:`lib.server.authentication`,
:mod:`lib.server.ohif`, :mod:`lib.server.dicom_proxy`) or a pattern of :data:`lib.server.access.ROUTE_ROLES` has no
row here, or when the committed page differs from what the generator writes.

``source`` is ``app`` for a route this app serves (its own, or its checked version of MONAI Label's, registered in
front of the stock one) and ``MONAI Label`` for a stock MONAI Label 0.8.5 route served unchanged. ``purpose`` is
Markdown; its links are relative to ``docs/reference/``.
"""

from __future__ import annotations

from typing import NamedTuple

APP = "app"
STOCK = "MONAI Label"


class Route(NamedTuple):
    methods: tuple[str, ...]
    path: str
    source: str
    purpose: str


ROUTES: list[Route] = [
    # ---- pages and static files ------------------------------------------------------------------------
    Route(("GET",), "/", STOCK, "the API page (Swagger UI)"),
    Route(("GET",), "/docs", STOCK, "the API page (ReDoc)"),
    Route(("GET",), "/openapi.json", STOCK, "the OpenAPI description of the routes that are in the schema"),
    Route(("GET",), "/favicon.ico", STOCK, "the icon"),
    Route(("GET",), "/static/{path}", STOCK, "the API page's static files"),
    Route(("GET",), "/ohif/{path}", APP,
          "the OHIF v3 viewer bundled in the monailabel wheel, every file served as itself "
          "(`/ohif/monai-label?StudyInstanceUIDs=...` opens a study in the MONAI Label mode)"),
    # ---- login -----------------------------------------------------------------------------------------
    Route(("GET",), "/auth/", APP, "whether the server asks for a token (the clients' login dialog)"),
    Route(("POST",), "/auth/token", APP,
          "log in: a token for a user name and password (with a token file the password is the token itself)"),
    Route(("GET",), "/auth/token/valid", APP, "who the sent token identifies, with the roles it holds"),
    # ---- app ---------------------------------------------------------------------------------------------
    Route(("GET",), "/info/", STOCK,
          "models, labels (a list by value), task, profile, model checksum, trainers' request parameters, last "
          "training stats"),
    # ---- datastore -------------------------------------------------------------------------------------
    Route(("GET",), "/datastore/", APP, "images and labels of the datastore"),
    Route(("PUT",), "/datastore/image", APP, "upload a new image (`.nii.gz`, `.nii`, `.nrrd`); an existing id is a 409"),
    Route(("PUT",), "/datastore/", APP, "old name of `PUT /datastore/image`"),
    Route(("HEAD",), "/datastore/image", APP, "whether an image exists"),
    Route(("GET",), "/datastore/image", APP, "download an image"),
    Route(("DELETE",), "/datastore/image", APP,
          "remove an image: its file moves to `<studies>/.deleted/`, its labels' histories stay"),
    Route(("DELETE",), "/datastore/", APP, "old name of `DELETE /datastore/image`"),
    Route(("GET",), "/datastore/image/info", STOCK, "an image's info"),
    Route(("PUT",), "/datastore/image/info", STOCK, "update an image's info"),
    Route(("GET",), "/datastore/dataset", APP, "the labelled dataset as a ZIP archive"),
    Route(("PUT",), "/datastore/label", APP,
          "save a label, checked against its image; `If-Match: \"N\"` or `rev=N` makes a stale save a 409; the answer "
          "carries the new `revision` ([labels and their history](../how-to/backups.md))"),
    Route(("HEAD",), "/datastore/label", APP, "whether a label exists"),
    Route(("GET",), "/datastore/label", APP, "download the current label (its revision in the `ETag` header)"),
    Route(("DELETE",), "/datastore/label", APP, "remove the current label (recorded as a deletion revision)"),
    Route(("GET",), "/datastore/label/versions", APP, "every version of a label, oldest first"),
    Route(("GET",), "/datastore/label/version", APP, "download one version (`rev=N`)"),
    Route(("POST",), "/datastore/label/restore", APP, "make an earlier version current again (as a new version)"),
    Route(("GET",), "/datastore/label/info", STOCK, "a label's info"),
    Route(("PUT",), "/datastore/label/info", STOCK, "update a label's info"),
    Route(("PUT",), "/datastore/updatelabelinfo", STOCK, "old name of `PUT /datastore/label/info`"),
    # ---- sessions ----------------------------------------------------------------------------------------
    Route(("PUT",), "/session/", APP,
          "upload a volume that is not in the datastore (multipart field `files`: one volume file or a DICOM "
          "series); answers its `session_id`"),
    Route(("GET",), "/session/{session_id}", APP, "a session's details (`image=true`: its volume)"),
    Route(("DELETE",), "/session/{session_id}", STOCK, "end a session and remove its files"),
    # ---- inference ---------------------------------------------------------------------------------------
    Route(("POST",), "/infer/{model}", APP,
          "segment a datastore image (`image=`), a session (`session_id=`) or an upload (`file`); `params` holds "
          "the request parameters and prompts; `save_label` needs the annotator role"),
    Route(("POST",), "/infer/wsi/{model}", STOCK, "MONAI Label's whole-slide pathology inference (no such model here)"),
    Route(("POST",), "/infer/wsi_v2/{model}", STOCK, "the same, second version"),
    Route(("GET",), "/batch/infer", STOCK, "status of a batch inference"),
    Route(("DELETE",), "/batch/infer", STOCK, "stop a batch inference"),
    Route(("POST",), "/batch/infer/{model}", STOCK, "infer every image of the datastore with a model"),
    # ---- training, scoring, active learning -------------------------------------------------------------
    Route(("GET",), "/train/", APP,
          "training status: epoch, loss, Dice (the run's output lines for the admin role only)"),
    Route(("POST",), "/train/", APP,
          "train the served models one after another (OHIF's *Update Model*; never the architecture search)"),
    Route(("POST",), "/train/{model}", APP,
          "start training `<network>_<task>`, `deepedit_<task>` or `dints_search`; 409 with the reason when the data "
          "cannot train; 429 while one runs unless `enqueue`"),
    Route(("DELETE",), "/train/", STOCK, "stop the running training; the last published weights stay"),
    Route(("POST",), "/scoring/{method}", APP, "run a scoring method now (`dints_uncertainty`)"),
    Route(("GET",), "/scoring/", STOCK, "status of the scoring run"),
    Route(("DELETE",), "/scoring/", STOCK, "stop the scoring run"),
    Route(("POST",), "/scoring/", STOCK, "run every scoring method"),
    Route(("POST",), "/activelearning/{strategy}", APP,
          "next image to label: `uncertainty`, `random` or `first` (*Next Sample*)"),
    # ---- models and logs ---------------------------------------------------------------------------------
    Route(("GET",), "/model/{model}", STOCK, "download a model's current weights"),
    Route(("GET",), "/model/info/{model}", STOCK, "checksum and details of a model's current weights file"),
    Route(("PUT",), "/model/{model}", APP, "upload new weights, checked to load; the previous file is kept"),
    Route(("DELETE",), "/model/{model}", STOCK, "delete a model's weights file"),
    Route(("GET",), "/logs/", STOCK, "the server log"),
    Route(("GET",), "/logs/gpu", STOCK, "`nvidia-smi` output"),
    # ---- DICOMweb ----------------------------------------------------------------------------------------
    Route(("GET",), "/proxy/dicom/{path}", APP,
          "OHIF's DICOMweb proxy (`qido/...`, `wado/...`): query string and `Accept` passed to the PACS byte for "
          "byte with the server's own credentials, never the browser's; 502 when the PACS cannot be reached"),
    Route(("POST",), "/proxy/dicom/{path}", APP, "the same for STOW-RS (`stow/...`) and POSTed queries, body passed on"),
]


def example_path(path: str) -> str:
    """A concrete path for a route pattern (``{model}`` -> ``x``, ``{path}`` -> ``x/y``), to ask the access guard."""
    import re

    path = re.sub(r"\{path(:path)?\}", "x/y", path)
    return re.sub(r"\{[^}]+\}", "x", path)
