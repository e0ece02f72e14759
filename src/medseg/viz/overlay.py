"""Label overlays on orthogonal slices, saved as PNG (matplotlib Agg, imported lazily)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_file
from medseg.deps import require

__all__ = ["CLASS_COLOURS", "save_overlay_png"]

#: RGB colours of classes 1.. (background is transparent).
CLASS_COLOURS = (
    (0.12, 0.47, 0.71),
    (1.00, 0.50, 0.05),
    (0.17, 0.63, 0.17),
    (0.84, 0.15, 0.16),
    (0.58, 0.40, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.74, 0.74, 0.13),
)


def save_overlay_png(
    image: np.ndarray,
    label: np.ndarray,
    path: Path,
    class_names: Mapping[str, int],
    title: str = "",
    alpha: float = 0.45,
) -> Path:
    """Save the three orthogonal mid-planes of a volume with its labels overlaid.

    Args:
        image: ``(X, Y, Z)`` intensities (RAS voxel order, as NIfTI files in canonical
            orientation are stored).
        label: ``(X, Y, Z)`` integer class indices, same shape. Each plane is the one with
            the most labelled voxels along its axis.
        path: PNG to write (atomically); its parent folder must exist.
        class_names: name -> label value; value 0 is drawn transparent.
        title: figure title.
        alpha: opacity of the label colours.

    Returns:
        ``path``.
    """
    require("matplotlib", "PNG previews")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    # per axis, the plane with the most labelled voxels (off the midline of a symmetric brain)
    fg = label > 0
    centre = [int(np.argmax(fg.sum(axis=tuple(a for a in range(3) if a != ax)))) for ax in range(3)]
    planes = [
        ("sagittal", image[centre[0], :, :], label[centre[0], :, :]),
        ("coronal", image[:, centre[1], :], label[:, centre[1], :]),
        ("axial", image[:, :, centre[2]], label[:, :, centre[2]]),
    ]
    n_colours = max(int(label.max()), 1)
    colours = [(0.0, 0.0, 0.0, 0.0)] + [(*c, alpha) for c in _colours(n_colours)]
    cmap = ListedColormap(colours)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, (name, img, lab) in zip(axes, planes, strict=True):
        ax.imshow(img.T, cmap="gray", origin="lower", interpolation="nearest")
        ax.imshow(lab.T, cmap=cmap, vmin=0, vmax=n_colours, origin="lower", interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    handles = [
        Patch(color=_colours(n_colours)[value - 1], label=f"{value} {name}")
        for name, value in class_names.items()
        if value > 0
    ]
    fig.legend(handles=handles, loc="lower center", ncol=max(len(handles), 1), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _colours(n: int) -> list[tuple[float, float, float]]:
    return [CLASS_COLOURS[i % len(CLASS_COLOURS)] for i in range(n)]
