"""Choosing the calibration slices for INT8 post-training quantisation.

INT8 activation ranges are measured on a small set of real slices. The set must look like
what the scanner will send: every tissue class, slices from every case and from the whole
depth of each volume (the top and bottom of a brain look nothing like its middle), and only
a few empty, background-only slices. :func:`select_calibration_slices` makes that choice
deterministically from the training split, and :class:`CalibrationSet` carries it into the
bundle manifest (slice ids, class coverage, method) and an ``.npz`` file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.atomic import atomic_file
from medseg.data.slicing import SliceRef
from medseg.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from medseg.data.samples import SliceSet
    from medseg.plan.cases import PreparedCase

__all__ = [
    "MIN_CALIBRATION_SLICES",
    "CalibrationSet",
    "select_calibration_patches",
    "select_calibration_slices",
]

#: Fewer slices than this cannot give trustworthy INT8 ranges: selection refuses.
MIN_CALIBRATION_SLICES = 8


@dataclass(frozen=True)
class CalibrationSet:
    """The slices INT8 calibration runs on.

    Attributes:
        images: ``(N, C, H, W)`` float32, normalised and padded exactly like training inputs.
        refs: where each slice comes from, in the order of ``images``.
        method: one sentence saying how the slices were chosen (for logs and manifests).
        class_coverage: class name -> number of selected slices containing that class.
        requested: how many slices were asked for (``N`` is smaller when fewer were available).
        available: how many training slices there were to choose from.
        background_only: how many selected slices contain background only.
    """

    images: np.ndarray
    refs: tuple[SliceRef, ...]
    method: str
    class_coverage: Mapping[str, int]
    requested: int = 0
    available: int = 0
    background_only: int = 0

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def slice_ids(self) -> tuple[str, ...]:
        """``str(ref)`` of each slice, e.g. ``"MNI152_001:z=094"``."""
        return tuple(str(ref) for ref in self.refs)

    def to_manifest(self) -> dict[str, Any]:
        """JSON-ready provenance: slice ids, counts, class coverage and method."""
        return {
            "method": self.method,
            "num_slices": len(self),
            "requested": self.requested,
            "available": self.available,
            "background_only": self.background_only,
            "class_coverage": dict(self.class_coverage),
            "slice_ids": list(self.slice_ids),
        }

    def save_npz(self, path: Path) -> Path:
        """Write ``images`` and ``slice_ids`` (plus the provenance) to ``path`` atomically."""
        path = Path(path)
        names = list(self.class_coverage)
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                images=np.ascontiguousarray(self.images, dtype=np.float32),
                slice_ids=np.array(self.slice_ids, dtype=np.str_),
                method=np.array(self.method, dtype=np.str_),
                class_names=np.array(names, dtype=np.str_),
                class_counts=np.array([self.class_coverage[n] for n in names], dtype=np.int64),
                counts=np.array([self.requested, self.available, self.background_only]),
            )
        return path

    @classmethod
    def load_npz(cls, path: Path) -> CalibrationSet:
        """Read a file written by :meth:`save_npz`.

        A hand-made file needs only ``images`` ``(N, C, H, W)`` and ``slice_ids`` ``(N,)``
        (``"<case>:<x|y|z>=<index>"``); the provenance then reads "loaded from <path>".

        Raises:
            DatasetError: missing file or arrays, wrong shapes, non-finite values, bad ids.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read calibration file {path}: {exc}") from exc
        missing = [key for key in ("images", "slice_ids") if key not in arrays]
        if missing:
            raise DatasetError(
                f"calibration file {path} lacks array(s) {missing}; "
                "accepted: an .npz with 'images' (N, C, H, W) and 'slice_ids' (N,)"
            )
        images, ids = arrays["images"], arrays["slice_ids"]
        if images.ndim != 4 or ids.shape != (images.shape[0],):
            raise DatasetError(
                f"calibration file {path} has images {images.shape} and slice_ids {ids.shape}; "
                "accepted: images (N, C, H, W) and N slice ids"
            )
        refs = tuple(_parse_slice_id(str(s), path) for s in ids)
        images = np.ascontiguousarray(images, dtype=np.float32)
        _check_finite(images, refs)
        if "class_names" in arrays:
            coverage = {
                str(n): int(c)
                for n, c in zip(arrays["class_names"], arrays["class_counts"], strict=True)
            }
            method = str(arrays["method"])
            requested, available, background = (int(v) for v in arrays["counts"])
        else:
            coverage, method = {}, f"loaded from {path}"
            requested = available = len(refs)
            background = 0
        return cls(images, refs, method, coverage, requested, available, background)


def select_calibration_slices(
    train: SliceSet,
    class_values: Mapping[str, int],
    num_slices: int = 64,
    max_background_share: float = 0.1,
    seed: int = 0,
) -> CalibrationSet:
    """Choose calibration slices from the training split, stratified and deterministic.

    1. Slices whose label is background (value 0) everywhere are *background-only*; they make
       up at most ``max_background_share`` of the selection (their natural share if smaller).
    2. The other slices are shared among cases in proportion to each case's slices, and
       within a case spread along its depth: the case's slices, sorted by index, are cut
       into as many quantile bins as it gets slices, and one slice is drawn from each bin
       (``seed`` picks which).
    3. Every foreground class present in the training split appears in at least one selected
       slice: for a missing class, the unselected slice with the most pixels of it is
       swapped in for the selected slice of the same case nearest in depth whose removal
       uncovers no class (or added when no such slice exists).

    Args:
        train: the training slices (``images (N, C, H, W)``, ``labels (N, H, W)``).
        class_values: class name -> label value (``dataset.json`` labels; 0 = background).
        num_slices: how many slices to select.
        max_background_share: largest share of background-only slices, in ``[0, 1]``.
        seed: the same inputs and seed always give the same selection.

    Returns:
        The selection, in slice order. When fewer slices are available than asked (after
        capping background-only slices) a ``UserWarning`` says so and every usable slice
        is returned.

    Raises:
        ConfigError: ``num_slices < 1`` or ``max_background_share`` outside ``[0, 1]``.
        DatasetError: non-finite values in an image (the message names the slice), labels
            that do not match the images, or fewer than :data:`MIN_CALIBRATION_SLICES`
            usable slices.
    """
    _check_request(num_slices, max_background_share)
    images, labels, refs = train.images, train.labels, tuple(train.refs)
    if images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise DatasetError(
            f"training slices have images {images.shape} and labels {labels.shape}; "
            "accepted: images (N, C, H, W) with labels (N, H, W)"
        )
    _check_finite(images, refs)
    order, coverage, n_bg, method = _choose(
        labels, refs, class_values, num_slices, max_background_share, seed, "slices"
    )
    return CalibrationSet(
        images=np.ascontiguousarray(images[order], dtype=np.float32),
        refs=tuple(refs[i] for i in order),
        method=method,
        class_coverage=coverage,
        requested=num_slices,
        available=len(refs),
        background_only=n_bg,
    )


def select_calibration_patches(
    cases: Sequence[PreparedCase],
    class_values: Mapping[str, int],
    patch_size: tuple[int, int],
    num_slices: int = 64,
    max_background_share: float = 0.1,
    seed: int = 0,
    exclude: Collection[str] = (),
) -> CalibrationSet:
    """Calibration samples for a ``"window"`` recipe: patches of the network's patch size.

    Every training slice of ``cases`` (reoriented, resampled and normalised like the runtime
    does: :func:`medseg.plan.cases.load_prepared_cases`) gives one candidate patch,
    centred on the centre of the slice's foreground bounding box (the slice centre when it
    has none), kept inside the slice, zero-padded where the slice is smaller. The patches are
    then chosen exactly as :func:`select_calibration_slices` chooses slices (stratified over
    cases and depth, background-only capped, every class covered); only the chosen patches'
    images are materialised. Slices named in ``exclude`` (``"CASE:z=012"``, the ids of a
    slice-level validation split) are never candidates.

    Returns:
        ``images (N, C, h, w)`` with ``(h, w) = patch_size``; refs name each patch's slice.
    """
    from medseg.plan.cases import centred_start, crop_patch

    _check_request(num_slices, max_background_share)
    ph, pw = int(patch_size[0]), int(patch_size[1])
    refs: list[SliceRef] = []
    labels: list[np.ndarray] = []
    where: list[tuple[int, int, int, int]] = []
    for k, case in enumerate(cases):
        slice_labels = case.slice_labels()
        h, w = slice_labels.shape[1:]
        for n in range(slice_labels.shape[0]):
            if str(SliceRef(case.case_id, case.slice_axis, n)) in exclude:
                continue
            fg = np.argwhere(slice_labels[n] > 0)
            cy, cx = ((fg.min(0) + fg.max(0)) / 2.0) if len(fg) else (h / 2.0, w / 2.0)
            top, left = centred_start(h, ph, float(cy)), centred_start(w, pw, float(cx))
            _, label = crop_patch(slice_labels[n][None], slice_labels[n], (ph, pw), top, left)
            assert label is not None
            refs.append(SliceRef(case.case_id, case.slice_axis, n))
            labels.append(label)
            where.append((k, n, top, left))
    if not refs:
        raise DatasetError("no training slices to draw calibration patches from")
    order, coverage, n_bg, method = _choose(
        np.stack(labels),
        tuple(refs),
        class_values,
        num_slices,
        max_background_share,
        seed,
        "slices",
    )
    images = []
    for i in order:
        k, n, top, left = where[i]
        image, _ = crop_patch(cases[k].slice_images()[n], None, (ph, pw), top, left)
        images.append(image)
    stacked = np.ascontiguousarray(np.stack(images), dtype=np.float32)
    chosen = tuple(refs[i] for i in order)
    _check_finite(stacked, chosen)
    return CalibrationSet(
        images=stacked,
        refs=chosen,
        method=f"{method}; one {ph}x{pw} patch per slice centred on its foreground",
        class_coverage=coverage,
        requested=num_slices,
        available=len(refs),
        background_only=n_bg,
    )


def _check_request(num_slices: int, max_background_share: float) -> None:
    if isinstance(num_slices, bool) or not isinstance(num_slices, int) or num_slices < 1:
        raise ConfigError(f"num_slices must be a positive integer, got {num_slices!r}")
    if not 0.0 <= max_background_share <= 1.0:
        raise ConfigError(f"max_background_share {max_background_share} must be in [0, 1]")


def _choose(
    labels: np.ndarray,
    refs: tuple[SliceRef, ...],
    class_values: Mapping[str, int],
    num_slices: int,
    max_background_share: float,
    seed: int,
    what: str,
) -> tuple[list[int], dict[str, int], int, str]:
    """The stratified choice (indices in slice order), its class coverage and description."""
    values = {name: int(v) for name, v in class_values.items()}
    present = [set(np.unique(label).tolist()) for label in labels]
    foreground = [bool(p - {0}) for p in present]

    fg_idx = [i for i, f in enumerate(foreground) if f]
    bg_idx = [i for i, f in enumerate(foreground) if not f]
    fg_take, bg_take = _budget(len(fg_idx), len(bg_idx), num_slices, max_background_share)
    total = fg_take + bg_take
    if total < MIN_CALIBRATION_SLICES:
        raise DatasetError(
            f"only {total} usable calibration slices ({len(fg_idx)} with foreground, "
            f"{len(bg_idx)} background-only, at most {max_background_share:.0%} of them "
            f"background-only) in {len(refs)} training slices; at least "
            f"{MIN_CALIBRATION_SLICES} are needed"
        )
    if total < num_slices:
        warnings.warn(
            f"asked for {num_slices} calibration slices but only {total} are usable "
            f"({len(fg_idx)} with foreground, {len(bg_idx)} background-only, of "
            f"{len(refs)} training slices); calibrating on all {total}",
            UserWarning,
            stacklevel=3,
        )
    rng = np.random.default_rng(seed)
    chosen = set(_stratified(fg_idx, refs, fg_take, rng))
    chosen |= set(_stratified(bg_idx, refs, bg_take, rng))
    chosen = _cover_classes(chosen, fg_idx, refs, labels, present, values)

    order = sorted(chosen, key=lambda i: refs[i])
    coverage = {name: sum(v in present[i] for i in order) for name, v in values.items()}
    missing = [name for name, v in values.items() if v != 0 and coverage[name] == 0]
    if missing:
        warnings.warn(
            f"class(es) {missing} appear in no training slice: calibration cannot cover them",
            UserWarning,
            stacklevel=3,
        )
    n_bg = sum(not foreground[i] for i in order)
    cases = sorted({refs[i].case_id for i in order})
    axes = "".join(sorted({"xyz"[refs[i].axis] for i in order}))
    method = (
        f"stratified selection (seed {seed}) of {len(order)} of {len(refs)} training {what} "
        f"from {len(cases)} case(s): spread over quantile bins of the slice index along "
        f"{axes}, background-only slices capped at {max_background_share:.0%} "
        f"({n_bg} kept), every foreground class present in at least one slice"
    )
    return order, coverage, n_bg, method


def _budget(n_fg: int, n_bg: int, wanted: int, share: float) -> tuple[int, int]:
    """How many foreground and background-only slices to take."""
    total = n_fg + n_bg
    if total == 0:
        return 0, 0
    natural = round(wanted * n_bg / total)
    bg = min(n_bg, natural, math.floor(share * wanted + 1e-9))
    if n_fg + bg >= wanted:
        return wanted - bg, bg
    # Not enough slices: every foreground slice, and background-only ones up to the share
    # of the (smaller) total: the largest k with k <= share * (n_fg + k).
    if share >= 1.0:
        return n_fg, n_bg
    return n_fg, min(n_bg, math.floor(share * n_fg / (1.0 - share) + 1e-9))


def _stratified(
    pool: Sequence[int], refs: Sequence[SliceRef], count: int, rng: np.random.Generator
) -> list[int]:
    """``count`` slices of ``pool``, shared among cases and spread along each case's depth."""
    if count <= 0 or not pool:
        return []
    by_case: dict[str, list[int]] = {}
    for i in pool:
        by_case.setdefault(refs[i].case_id, []).append(i)
    cases = sorted(by_case)
    quotas = _apportion([len(by_case[c]) for c in cases], count)
    chosen: list[int] = []
    for case, quota in zip(cases, quotas, strict=True):
        slices = sorted(by_case[case], key=lambda i: refs[i].index)
        for bin_ in np.array_split(np.asarray(slices), quota) if quota else []:
            chosen.append(int(bin_[rng.integers(len(bin_))]))
    return chosen


def _apportion(sizes: Sequence[int], count: int) -> list[int]:
    """Share ``count`` in proportion to ``sizes`` (largest remainder), capped by each size."""
    total = sum(sizes)
    exact = [count * s / total for s in sizes]
    quotas = [min(s, math.floor(e)) for s, e in zip(sizes, exact, strict=True)]
    by_remainder = sorted(range(len(sizes)), key=lambda k: (-(exact[k] - quotas[k]), k))
    while sum(quotas) < count:
        for k in by_remainder:
            if quotas[k] < sizes[k] and sum(quotas) < count:
                quotas[k] += 1
    return quotas


def _cover_classes(
    chosen: set[int],
    pool: Sequence[int],
    refs: Sequence[SliceRef],
    labels: np.ndarray,
    present: Sequence[set[int]],
    values: Mapping[str, int],
) -> set[int]:
    """Swap in (or add) slices until every foreground class found in ``pool`` is covered."""
    chosen, in_pool = set(chosen), set(pool)
    for value in sorted({v for v in values.values() if v != 0}):
        if any(value in present[i] for i in chosen):
            continue
        candidates = [i for i in pool if i not in chosen and value in present[i]]
        if not candidates:
            continue  # the class is absent from the training split (reported by the caller)
        best = max(candidates, key=lambda i: (int(np.count_nonzero(labels[i] == value)), -i))
        chosen.add(best)
        removable = [
            i
            for i in chosen
            if i != best
            and refs[i].case_id == refs[best].case_id
            and i in in_pool
            and all(any(v in present[j] for j in chosen - {i}) for v in present[i] - {0})
        ]
        if removable:
            nearest = min(removable, key=lambda i: (abs(refs[i].index - refs[best].index), i))
            chosen.discard(nearest)
    return chosen


def _check_finite(images: np.ndarray, refs: Sequence[SliceRef]) -> None:
    bad = ~np.isfinite(images.reshape(images.shape[0], -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"calibration slice {refs[first]} contains NaN or Inf values "
            f"({int(bad.sum())} of {len(refs)} slices do); accepted: finite normalised images"
        )


def _parse_slice_id(text: str, path: Path) -> SliceRef:
    case_id, sep, rest = text.rpartition(":")
    axis_name, eq, index = rest.partition("=")
    if not (sep and eq and axis_name in ("x", "y", "z") and index.isdigit() and case_id):
        raise DatasetError(
            f"calibration file {path} has slice id {text!r}; accepted: '<case>:<x|y|z>=<index>'"
        )
    return SliceRef(case_id, "xyz".index(axis_name), int(index))
