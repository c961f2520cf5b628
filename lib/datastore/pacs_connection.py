"""Connecting to a DICOMweb PACS (``--studies http(s)://.../dicom-web``): the client exactly as MONAI Label's own
``_init_dicomweb_datastore`` makes it (Google Cloud, basic auth, QIDO/WADO/STOW prefixes from its settings), and
the datastore on it (:class:`lib.datastore.dicomweb.PACSDatastore`). MONAI Label's method itself is not called: it
would download dcmqi at run time and build the datastore this one replaces."""

from __future__ import annotations

import logging
import os
import shutil
import sys

logger = logging.getLogger(__name__)


def _find_dcmqi() -> None:
    """dcmqi (a pip package) installs ``itkimage2segimage`` beside python: put it on PATH, or say it is missing."""
    venv_bin = os.path.dirname(sys.executable)
    if not shutil.which("itkimage2segimage") and os.path.exists(os.path.join(venv_bin, "itkimage2segimage")):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    if not shutil.which("itkimage2segimage"):
        logger.error("itkimage2segimage (dcmqi) is not on PATH: labels cannot be stored as DICOM SEG; "
                     "run ./scripts/setup.sh (dcmqi is in requirements.txt)")


def dicomweb_client(url: str):
    """The DICOMweb client for ``url``, with MONAI Label's settings (credentials, URL prefixes)."""
    from monailabel.config import settings

    if "googleapis.com" in url:
        from dicomweb_client import DICOMwebClient
        from dicomweb_client.ext.gcp.session_utils import create_session_from_gcp_credentials

        return DICOMwebClient(url=url, session=create_session_from_gcp_credentials())
    from dicomweb_client.session_utils import create_session_from_user_pass
    from monailabel.datastore.dicom import DICOMwebClientX

    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        session = create_session_from_user_pass(settings.MONAI_LABEL_DICOMWEB_USERNAME,
                                                settings.MONAI_LABEL_DICOMWEB_PASSWORD)
    return DICOMwebClientX(url=url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                           wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                           stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)


def pacs_datastore(url: str, labels: dict[str, int], refresh_seconds: float = 10.0):
    """The PACS at ``url`` as the app's datastore: labels as DICOM SEGs mapped to their series, refreshed every
    ``refresh_seconds`` (``--conf dicomweb_refresh_seconds``)."""
    from monailabel.config import settings

    from lib.datastore.dicomweb import PACSDatastore

    _find_dcmqi()
    cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
    logger.info(f"Using the DICOMweb PACS {url} (cache {cache or 'default'})")
    return PACSDatastore(dicomweb_client(url), settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER, labels, cache_path=cache,
                         fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME, refresh_seconds=refresh_seconds)
