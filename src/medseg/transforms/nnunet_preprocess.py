"""nnU-Net v2's per-case pipeline around the network, in numpy/scipy (no nnunetv2, no torch).

Order, as nnU-Net's ``DefaultPreprocessor.run_case_npy`` and
``convert_predicted_logits_to_segmentation_with_correct_shape``:

1. :func:`nnunet_array`: the NIfTI channels as nnU-Net's reader gives them, ``(C, z, y, x)``
   float32 (nibabel's ``(x, y, z)`` transposed; spacing reversed; ``NibabelIOWithReorient``
   reorients to RAS first).
2. :func:`preprocess`: ``transpose_forward``; crop to the non-zero box of all channels (holes
   filled); per-channel normalisation (CT: clip to the fingerprint's percentiles, then
   ``(x - mean) / std``; z-score, over the non-zero mask when ``use_mask_for_norm``);
   resampling to the configuration's spacing (:mod:`medseg.transforms.nnunet_resample`).
3. the sliding window (:mod:`medseg.runtime.sliding_window`) gives logits at that spacing.
4. :func:`logits_to_segmentation`: logits resampled to the cropped shape (order 1,
   separate-z rule), softmax, argmax, pasted into the uncropped shape (probabilities: background
   1 outside the box), ``transpose_backward``.
5. :func:`to_file_order`: the mask back in the input file's voxel order, to be written with
   the input's affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError, DatasetError
from medseg.transforms.nnunet_recipe import NnunetNormalization, NnunetRecipe
from medseg.transforms.nnunet_resample import compute_new_shape, resample_to_shape

__all__ = [
    "CaseProperties",
    "FileImage",
    "crop_to_nonzero",
    "logits_to_segmentation",
    "nnunet_array",
    "normalize_channel",
    "preprocess",
    "to_file_order",
]


class FileImage(Protocol):
    """One channel as read from its file (:class:`~medseg.data.nifti.NiftiImage` is one).

    Attributes:
        data: voxel array ``(X, Y, Z)`` in the file's order.
        affine: ``(4, 4)`` voxel-to-world matrix (RAS+, mm).
        spacing: voxel size in mm along ``(X, Y, Z)``.
    """

    @property
    def data(self) -> np.ndarray: ...

    @property
    def affine(self) -> np.ndarray: ...

    @property
    def spacing(self) -> tuple[float, float, float]: ...


@dataclass(frozen=True)
class CaseProperties:
    """What :func:`logits_to_segmentation` needs to undo :func:`preprocess`.

    Attributes:
        spacing: the case's spacing in mm in the reader's array order ``(z, y, x)``.
        shape_before_cropping: shape after ``transpose_forward``.
        bbox: ``((start, stop), ...)`` of the non-zero crop, transposed axes, half open.
        shape_after_cropping: shape of the crop (before resampling).
        network_shape: shape at the configuration's spacing (the sliding window's input).
    """

    spacing: tuple[float, float, float]
    shape_before_cropping: tuple[int, int, int]
    bbox: tuple[tuple[int, int], ...]
    shape_after_cropping: tuple[int, int, int]
    network_shape: tuple[int, int, int]


def _reorient(image: FileImage) -> tuple[np.ndarray, tuple[float, ...]]:
    import nibabel
    from nibabel.orientations import io_orientation

    nii = nibabel.Nifti1Image(np.asarray(image.data), image.affine)
    nii.header.set_zooms(image.spacing)
    reoriented = nii.as_reoriented(io_orientation(image.affine))
    return np.asarray(reoriented.dataobj), tuple(float(z) for z in reoriented.header.get_zooms())


def nnunet_array(
    images: Sequence[FileImage], reader: str = "SimpleITKIO"
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The channels of a case as nnU-Net's image reader returns them.

    Args:
        images: one :class:`~medseg.data.nifti.NiftiImage` per channel, ``(X, Y, Z)``.
        reader: ``SimpleITKIO`` / ``NibabelIO`` (no reorientation) or
            ``NibabelIOWithReorient`` (to the closest RAS voxel order first).

    Returns:
        ``(C, z, y, x)`` float32 and the spacing ``(sz, sy, sx)`` in mm.
    """
    if not images:
        raise DatasetError("an nnU-Net case needs at least one channel image")
    arrays, spacings = [], []
    for image in images:
        if np.asarray(image.data).ndim != 3:
            raise DatasetError(f"nnU-Net images must be 3D, got shape {np.shape(image.data)}")
        if reader == "NibabelIOWithReorient":
            data, zooms = _reorient(image)
        elif reader in ("SimpleITKIO", "NibabelIO"):
            data, zooms = np.asarray(image.data), tuple(float(s) for s in image.spacing)
        else:
            raise ConfigError(f"image_reader {reader!r} is not supported")
        arrays.append(data.transpose(2, 1, 0))
        spacings.append(tuple(abs(z) for z in zooms[::-1]))
    if len({a.shape for a in arrays}) != 1:
        raise DatasetError(f"the channels have different shapes {[a.shape for a in arrays]}")
    if len(set(spacings)) != 1:
        raise DatasetError(f"the channels have different spacings {spacings}")
    out = np.stack(arrays).astype(np.float32)
    sz, sy, sx = spacings[0]
    return out, (sz, sy, sx)


def to_file_order(labels: np.ndarray, image: FileImage, reader: str = "SimpleITKIO") -> np.ndarray:
    """Inverse of :func:`nnunet_array`'s axis handling for a ``(z, y, x)`` mask.

    Returns:
        ``(X, Y, Z)`` in the voxel order of ``image`` (write it with ``image.affine``).
    """
    out = np.asarray(labels).transpose(2, 1, 0)
    if reader == "NibabelIOWithReorient":
        from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

        ornt = io_orientation(image.affine)
        ras = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
        out = apply_orientation(out, ornt_transform(ras, ornt))
    if out.shape != np.shape(image.data):
        raise ConfigError(f"mask shape {out.shape} does not match the image {np.shape(image.data)}")
    return np.ascontiguousarray(out)


def crop_to_nonzero(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """nnU-Net's ``crop_to_nonzero`` (without a segmentation).

    Args:
        data: ``(C, *S)``.

    Returns:
        the crop ``(C, *s)``, the filled non-zero mask of the crop ``s`` (bool) and the
        half-open bounding box (the whole image when nothing is non-zero).
    """
    mask = np.any(data != 0, axis=0)
    mask = ndimage.binary_fill_holes(mask)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        box.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[axis]))
    region = tuple(slice(a, b) for a, b in box)
    return data[(slice(None), *region)], mask[region], tuple(box)


def normalize_channel(image: np.ndarray, mask: np.ndarray, norm: NnunetNormalization) -> np.ndarray:
    """One channel, as nnU-Net's normalisation classes (float32 arithmetic, same order).

    Args:
        image: ``S`` float32, modified in place and returned.
        mask: ``S`` bool, the crop's non-zero mask.
    """
    eps = 1e-8
    if norm.scheme == "CTNormalization":
        np.clip(image, norm.percentile_00_5, norm.percentile_99_5, out=image)
        image -= norm.mean
        image /= max(norm.std, eps)  # type: ignore[type-var]
    elif norm.scheme == "ZScoreNormalization":
        if norm.use_mask_for_norm:
            mean = image[mask].mean()
            std = image[mask].std()
            image[mask] = (image[mask] - mean) / (max(std, eps))
        else:
            mean = image.mean()
            std = image.std()
            image -= mean
            image /= max(std, eps)
    elif norm.scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), a_min=eps, a_max=None)
    return image


def _target_spacing(recipe: NnunetRecipe, original: Sequence[float]) -> list[float]:
    spacing = list(recipe.spacing)
    return [float(original[0]), *spacing] if len(spacing) < 3 else spacing


def preprocess(
    array: np.ndarray, spacing: Sequence[float], recipe: NnunetRecipe
) -> tuple[np.ndarray, CaseProperties]:
    """nnU-Net's ``run_case_npy`` for an image without segmentation.

    Args:
        array: ``(C, z, y, x)`` from :func:`nnunet_array`.
        spacing: ``(sz, sy, sx)`` mm.
        recipe: the configuration's recipe.

    Returns:
        ``(C, *network_shape)`` float32, transposed, cropped, normalised and resampled, and the
        :class:`CaseProperties` to map logits back.
    """
    if array.ndim != 4 or array.shape[0] != recipe.num_input_channels:
        raise DatasetError(
            f"the case has shape {array.shape}; the model takes "
            f"({recipe.num_input_channels}, z, y, x)"
        )
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DatasetError(f"spacing {tuple(spacing)} must be three positive values in mm")
    fwd = recipe.transpose_forward
    data = array.astype(np.float32).transpose([0, *[a + 1 for a in fwd]])
    original = [float(spacing[a]) for a in fwd]
    before = tuple(int(s) for s in data.shape[1:])
    data, mask, bbox = crop_to_nonzero(data)
    data = np.ascontiguousarray(data)
    after = tuple(int(s) for s in data.shape[1:])
    target = _target_spacing(recipe, original)
    new_shape = compute_new_shape(after, original, target)
    for c, norm in enumerate(recipe.normalization):
        data[c] = normalize_channel(data[c], mask, norm)
    r = recipe.resampling
    data = resample_to_shape(
        data,
        new_shape,
        original,
        target,
        r.order_data,
        r.order_z,
        r.force_separate_z,
        r.separate_z_anisotropy_threshold,
    )
    props = CaseProperties(
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        shape_before_cropping=before,  # type: ignore[arg-type]
        bbox=bbox,
        shape_after_cropping=after,  # type: ignore[arg-type]
        network_shape=tuple(int(s) for s in new_shape),  # type: ignore[arg-type]
    )
    return np.ascontiguousarray(data, dtype=np.float32), props


def logits_to_segmentation(
    logits: np.ndarray, props: CaseProperties, recipe: NnunetRecipe
) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``.

    Args:
        logits: ``(K, *network_shape)`` float32 (the sliding window's, fold-averaged), or
            float16: then the resampled logits are float16 too, as nnU-Net's (whose
            predictor hands half-precision logits to this step).
        props: from :func:`preprocess`.
        recipe: the same recipe.

    Returns:
        labels ``(z, y, x)`` uint8 in the reader's array order and probabilities
        ``(K, z, y, x)`` float32 (softmax; background 1 outside the crop).
    """
    k = recipe.num_classes
    if logits.ndim != 4 or logits.shape[0] != k or tuple(logits.shape[1:]) != props.network_shape:
        raise ConfigError(
            f"logits of shape {logits.shape} do not match (K={k}, *{props.network_shape})"
        )
    original = [props.spacing[a] for a in recipe.transpose_forward]
    current = _target_spacing(recipe, original)
    r = recipe.resampling
    dtype = logits.dtype if logits.dtype in (np.float16, np.float32) else np.float32
    resampled = resample_to_shape(
        logits.astype(dtype, copy=False),
        props.shape_after_cropping,
        current,
        original,
        r.order_probabilities,
        r.order_z,
        r.force_separate_z,
        r.separate_z_anisotropy_threshold,
    )
    prob = resampled.astype(np.float32)  # a copy: softmax in float32, as nnU-Net
    prob -= prob.max(axis=0, keepdims=True)
    np.exp(prob, out=prob)
    prob /= prob.sum(axis=0, keepdims=True)
    seg = prob.argmax(axis=0).astype(np.uint8 if k < 256 else np.uint16)
    region = tuple(slice(a, b) for a, b in props.bbox)
    labels = np.zeros(props.shape_before_cropping, dtype=seg.dtype)
    labels[region] = seg
    full = np.zeros((k, *props.shape_before_cropping), dtype=np.float32)
    full[0] = 1.0
    full[(slice(None), *region)] = prob
    bwd = recipe.transpose_backward
    labels = np.ascontiguousarray(labels.transpose(bwd))
    full = np.ascontiguousarray(full.transpose([0, *[a + 1 for a in bwd]]))
    return labels, full
