"""One volume stored in several orientations, each keeping every voxel at its world position."""

from __future__ import annotations

import numpy as np


def variants(image: np.ndarray, affine: np.ndarray):
    """The same volume stored RAS, LPS (first two axes reversed) and with permuted axes (k, i, j), each with
    the affine that keeps every voxel at its world position; and how a RAS index maps into each."""
    nx, ny, _ = image.shape
    lps = image[::-1, ::-1, :].copy()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3], flip[1, 1], flip[1, 3] = -1, nx - 1, -1, ny - 1
    perm = np.transpose(image, (2, 0, 1)).copy()
    p = np.zeros((4, 4))
    p[0, 1] = p[1, 2] = p[2, 0] = p[3, 3] = 1  # permuted index (k, i, j) -> original (i, j, k)
    return {
        "RAS": (image, affine, lambda ijk: ijk),
        "LPS": (lps, affine @ flip, lambda ijk: (nx - 1 - ijk[0], ny - 1 - ijk[1], ijk[2])),
        "permuted": (perm, affine @ p, lambda ijk: (ijk[2], ijk[0], ijk[1])),
    }
