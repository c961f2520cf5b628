"""The compact DiNTS architecture of the ``cpu`` profile: written by hand, not searched.

Four blocks over four resolutions with every path active (so every node is live) and a mix of full 3-D
and cheaper pseudo-3-D cell operations. ``scripts/search_cpu_arch.py`` searches one on phantoms and
``benchmarks/models.py`` compares the two at one training budget (README, *Does the search pay?*); a search
on the user's own labels (``dints_search``) replaces it for training when present. At channel_mul 0.25 it
has 4.6 M parameters and runs one 96^3 window in roughly a second on two CPU cores, about a tenth of the
bundle's 12-block network.
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
