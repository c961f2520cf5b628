"""Draw a DiNTS architecture: cells (paths between resolutions), their operations, and active nodes.

Columns are the network's blocks (column 0 holds the multi-resolution stems' outputs), rows the
resolutions (top: full resolution, each row down halves it). A line from column b to b+1 is an active path
(a cell); its colour is the cell operation. Filled circles are active nodes; the top-right filled nodes
feed the decoder.
"""

from __future__ import annotations

import os
from pathlib import Path


from lib import atomic
from lib.networks.arch_code import ArchCode

OP_NAMES = ("skip", "conv 3x3x3", "P3D 3x3x1", "P3D 3x1x3", "P3D 1x3x3")  # monai Cell.OPS3D order
OP_COLOURS = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e")
DIRECTIONS = 3


def path_endpoints(num_depths: int) -> tuple[list[int], list[int]]:
    """Resolution index each path reads from and writes to (as ``TopologyConstruction`` numbers them)."""
    n = DIRECTIONS * num_depths - 2
    code2in = [(i + 1) // DIRECTIONS - 1 + (i + 1) % DIRECTIONS for i in range(n)]
    code2out = [m for m in range(num_depths) for _ in range(DIRECTIONS)][1:-1]
    return code2in, code2out


def draw_architecture(arch: ArchCode, arch_path: str | os.PathLike, title: str | None = None) -> list[str]:
    """Write ``<arch file stem>.svg`` and ``.png`` next to the architecture file; returns their paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    nb, nd = arch.num_blocks, arch.num_depths
    code2in, code2out = path_endpoints(nd)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * (nb + 2)), 1.2 * nd + 1.8))
    for b in range(nb):
        for i in range(len(code2in)):
            if not arch.arch_code_a[b, i]:
                continue
            op = int(arch.arch_code_c[b, i])
            x0, y0, x1, y1 = b, -code2in[i], b + 1, -code2out[i]
            ax.plot([x0, x1], [y0, y1], color=OP_COLOURS[op], lw=2.5, zorder=1, solid_capstyle="round")
    for col in range(nb + 1):
        for d in range(nd):
            active = bool(arch.node_a[col, d])
            ax.scatter([col], [-d], s=120, zorder=2, facecolor="black" if active else "white", edgecolor="black")
    # decoder: the last column's active nodes are summed coarse-to-fine into the output
    ax.annotate("output", xy=(nb, 0), xytext=(nb + 0.55, 0), va="center", arrowprops=dict(arrowstyle="<-"))
    ax.annotate("input", xy=(0, 0), xytext=(-0.9, 0), va="center", ha="right", arrowprops=dict(arrowstyle="->"))
    ax.set_xticks(range(nb + 1))
    ax.set_xticklabels(["stem"] + [f"block {b + 1}" for b in range(nb)], rotation=45 if nb > 6 else 0, fontsize=8)
    ax.set_yticks([-d for d in range(nd)])
    ax.set_yticklabels([f"1/{2 ** (d + 1)}" for d in range(nd)])
    ax.set_ylabel("resolution (of the input)")
    ax.set_xlim(-1.6, nb + 1.4)
    ax.set_ylim(-nd + 0.4, 0.6)
    handles = [Line2D([0], [0], color=c, lw=2.5, label=n) for n, c in zip(OP_NAMES, OP_COLOURS)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18 if nb <= 6 else -0.3), ncol=5, fontsize=8,
              frameon=False)
    ax.set_title(title or f"DiNTS architecture ({arch.describe()})", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    base = Path(arch_path)
    out = []
    for ext in (".svg", ".png"):
        target = base.with_suffix(ext)
        atomic.write_with(target, lambda tmp: fig.savefig(tmp, dpi=110), suffix=ext)
        out.append(str(target))
    plt.close(fig)
    return out
