"""The hand-written compact DiNTS architecture that the ``cpu`` profile shipped before its searched one.

Four blocks over four resolutions with every path active (so every node is live) and a mix of full 3-D
and cheaper pseudo-3-D cell operations; 4.6 M parameters at channel_mul 0.25. The shipped ``cpu``
architecture (``model/dints_pancreas_cpu_arch.pth``) is now the one ``scripts/search_cpu_arch.py`` found on
phantoms (35 of 40 paths, 2.0 M parameters), which beat this one at the same training budget (README,
*Shipped weights* and *Does the search pay?*). This one stays as the ``dints-compact`` baseline of
``benchmarks/models.py`` and as a fixed, every-path architecture for tests.
"""

from __future__ import annotations

import numpy as np

from lib.networks.arch_code import ArchCode

# operation per path: 0 skip, 1 conv 3x3x3, 2 conv 3x3x1, 3 conv 3x1x3, 4 conv 1x3x3
_OPS = [
    [1, 2, 1, 4, 1, 2, 1, 4, 1, 1],
    [2, 1, 3, 1, 0, 1, 2, 1, 1, 0],
    [4, 0, 1, 2, 1, 1, 0, 1, 1, 1],
    [1, 1, 1, 1, 2, 1, 1, 3, 1, 0],
]


def compact_cpu_arch() -> ArchCode:
    num_blocks, num_depths = len(_OPS), 4
    return ArchCode(
        node_a=np.ones((num_blocks + 1, num_depths), dtype=np.int64),
        arch_code_a=np.ones((num_blocks, 3 * num_depths - 2), dtype=np.int64),
        arch_code_c=np.asarray(_OPS, dtype=np.int64),
    ).validate()
