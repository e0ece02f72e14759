"""Label overlays saved as PNG (matplotlib Agg, imported lazily).

Two pictures: the three orthogonal planes of a labelled volume (dataset previews), and one
slice drawn as image / reference / prediction (what a reviewer looks at when a model or a
precision got worse). Both draw panels of ``(image, labels or None)`` the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_file
from medseg.deps import require

__all__ = ["CLASS_COLOURS", "save_overlay_png", "save_prediction_png"]

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

Panel = tuple[str, np.ndarray, np.ndarray | None]


def save_overlay_png(
    image: np.ndarray,
    label: np.ndarray,
    path: Path,
    class_names: Mapping[str, int],
    title: str = "",
    alpha: float = 0.45,
) -> Path:
    """Save three orthogonal planes of a volume with its labels overlaid.

    Args:
        image: ``(X, Y, Z)`` intensities (RAS voxel order, as NIfTI files in canonical
            orientation are stored).
        label: ``(X, Y, Z)`` integer class indices, same shape. Each plane is the one with
            the most labelled voxels along its axis (off the midline of a symmetric brain).
        path: PNG to write (atomically); its parent folder must exist.
        class_names: name -> label value; value 0 is drawn transparent.
        title: figure title.
        alpha: opacity of the label colours.

    Returns:
        ``path``.
    """
    fg = label > 0
    centre = [int(np.argmax(fg.sum(axis=tuple(a for a in range(3) if a != ax)))) for ax in range(3)]
    panels: list[Panel] = [
        ("sagittal", image[centre[0], :, :], label[centre[0], :, :]),
        ("coronal", image[:, centre[1], :], label[:, centre[1], :]),
        ("axial", image[:, :, centre[2]], label[:, :, centre[2]]),
    ]
    return _save_panels(panels, path, class_names, title, alpha, figsize=(13, 4.6))


def save_prediction_png(
    image: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    path: Path,
    class_names: Mapping[str, int],
    title: str = "",
    alpha: float = 0.45,
) -> Path:
    """Save one 2D slice three ways: image, reference labels, predicted labels.

    Args:
        image: ``(H, W)`` intensities of the slice (first axis drawn left to right).
        reference: ``(H, W)`` reference class indices.
        prediction: ``(H, W)`` predicted class indices.
        path: PNG to write (atomically).
        class_names: name -> label value; value 0 is drawn transparent.
        title: figure title.
        alpha: opacity of the label colours.

    The panels are cropped to the box around the labels (plus a margin), so a small
    structure stays visible.
    """
    rows, cols = np.nonzero((reference > 0) | (prediction > 0))
    if len(rows):
        margin = 8
        r0, r1 = max(rows.min() - margin, 0), rows.max() + margin + 1
        c0, c1 = max(cols.min() - margin, 0), cols.max() + margin + 1
        image, reference, prediction = (a[r0:r1, c0:c1] for a in (image, reference, prediction))
    panels: list[Panel] = [
        ("image", image, None),
        ("reference", image, reference),
        ("prediction", image, prediction),
    ]
    return _save_panels(panels, path, class_names, title, alpha, figsize=(12, 4.6))


def _save_panels(
    panels: Sequence[Panel],
    path: Path,
    class_names: Mapping[str, int],
    title: str,
    alpha: float,
    figsize: tuple[float, float],
) -> Path:
    """Draw ``(name, image, labels or None)`` panels side by side with one legend."""
    require("matplotlib", "PNG overlays")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n_colours = max([1, *(int(lab.max()) for _, _, lab in panels if lab is not None)])
    colours = [CLASS_COLOURS[i % len(CLASS_COLOURS)] for i in range(n_colours)]
    cmap = ListedColormap([(0.0, 0.0, 0.0, 0.0)] + [(*c, alpha) for c in colours])
    fig, axes = plt.subplots(1, len(panels), figsize=figsize)
    for ax, (name, img, lab) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(img.T, cmap="gray", origin="lower", interpolation="nearest")
        if lab is not None:
            ax.imshow(
                lab.T, cmap=cmap, vmin=0, vmax=n_colours, origin="lower", interpolation="nearest"
            )
        ax.set_title(name)
        ax.axis("off")
    handles = [
        Patch(color=colours[value - 1], label=f"{value} {name}")
        for name, value in class_names.items()
        if 0 < value <= n_colours
    ]
    fig.legend(handles=handles, loc="lower center", ncol=max(len(handles), 1), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
