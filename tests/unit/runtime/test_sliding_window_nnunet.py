"""The N-D sliding window against nnU-Net v2's own ``nnUNetPredictor`` code (CPU, torch).

nnU-Net accumulates the weighted logits in float16 (``predicted_logits`` is ``torch.half``,
the Gaussian scaled by 10 in half): where only window corners cover a voxel (the image's
corners), ``weight * logit`` underflows and nnU-Net's logits come out exactly 0. The runtime
accumulates in float32 by default; ``accumulate="float16"`` reproduces nnU-Net's accumulator,
and then the logits agree to float16 rounding everywhere (asserted below).
"""

from __future__ import annotations

import copy
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from medseg.runtime.sliding_window import (
    accumulation_gaussian,
    gaussian_importance,
    pad_to_patch,
    predict_ensemble_windows,
    predict_windows,
    window_starts,
)

torch = pytest.importorskip("torch")
sw = pytest.importorskip("nnunetv2.inference.sliding_window_prediction")
pfr = pytest.importorskip("nnunetv2.inference.predict_from_raw_data")


def _net(in_ch: int, k: int, nd: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if nd == 3 else torch.nn.Conv2d
    net = torch.nn.Sequential(
        conv(in_ch, 4, 3, padding=1), torch.nn.Tanh(), conv(4, k, 3, padding=1)
    )
    return net.eval()


def _numpy_batch(net: torch.nn.Module):  # type: ignore[no-untyped-def]
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    return predict


def _predictor(nets: list, patch: tuple[int, ...], k: int, mirror: tuple[int, ...]):  # type: ignore[no-untyped-def]
    p = pfr.nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=bool(mirror),
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    p.network = copy.deepcopy(nets[0])  # nnU-Net loads each fold's weights into it
    p.list_of_parameters = [copy.deepcopy(n.state_dict()) for n in nets]
    p.configuration_manager = SimpleNamespace(patch_size=list(patch))
    p.label_manager = SimpleNamespace(num_segmentation_heads=k)
    p.allowed_mirroring_axes = mirror
    return p


@pytest.mark.parametrize("patch", [(16, 24), (8, 16, 12), (17, 15, 9)])
def test_gaussian_is_nnunets_compute_gaussian(patch: tuple[int, ...]) -> None:
    ref = sw.compute_gaussian(patch, 1.0 / 8, 1, dtype=torch.float64, device=torch.device("cpu"))
    np.testing.assert_allclose(gaussian_importance(patch), ref.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("patch", [(40, 48, 64), (17, 15, 9), (48, 64)])
def test_float16_weights_are_nnunets_half_gaussian(patch: tuple[int, ...]) -> None:
    ref = sw.compute_gaussian(patch, 1.0 / 8, 10, dtype=torch.float16, device=torch.device("cpu"))
    np.testing.assert_array_equal(accumulation_gaussian(patch, np.float16), ref.numpy())


@pytest.mark.parametrize(
    ("size", "patch"), [((40, 64, 33), (16, 32, 16)), ((110, 7), (64, 7)), ((97,), (32,))]
)
def test_window_starts_are_nnunets_steps(size: tuple[int, ...], patch: tuple[int, ...]) -> None:
    ref = sw.compute_steps_for_sliding_window(size, patch, 0.5)
    assert [window_starts(s, p, 0.5) for s, p in zip(size, patch, strict=True)] == ref


@pytest.mark.parametrize(
    ("shape", "patch", "mirror", "folds"),
    [
        ((2, 21, 30, 19), (16, 16, 12), (0, 1, 2), 1),  # 3D, padded on no axis, mirrored
        ((1, 10, 40, 18), (16, 24, 12), (1, 2), 2),  # 3D, padded on two axes, two folds
        ((2, 5, 37, 50), (24, 32), (0, 1), 2),  # nnU-Net 2d: slices of a volume
    ],
)
def test_logits_match_nnunet_predictor(
    shape: tuple[int, ...], patch: tuple[int, ...], mirror: tuple[int, ...], folds: int
) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape).astype(np.float32)
    k = 3
    nets = [_net(shape[0], k, len(patch), seed) for seed in range(folds)]
    predictor = _predictor(nets, patch, k, mirror)
    with torch.inference_mode():
        ref = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(image))
    ref = ref.float().numpy()
    batches = [_numpy_batch(n) for n in nets]
    exact = predict_ensemble_windows(
        image, batches, patch, max_batch=1, mirror_axes=mirror, accumulate="float16"
    )
    assert exact.shape == ref.shape == (k, *shape[1:]) and exact.dtype == np.float16
    # one window per call, as nnUNetPredictor: the same network outputs, and every rounding of
    # its float16 accumulation reproduced (Gaussian, weighting, sums, divisions, fold mean)
    np.testing.assert_array_equal(exact, ref)
    ours16 = predict_ensemble_windows(
        image, batches, patch, max_batch=3, mirror_axes=mirror, accumulate="float16"
    )
    # 3 windows per call: torch's conv output moves by ~1e-7, a float16 rounding may flip
    np.testing.assert_allclose(ours16, ref, rtol=0, atol=2e-3)
    ours = predict_ensemble_windows(image, batches, patch, max_batch=3, mirror_axes=mirror)
    # float32 accumulation: equal to nnU-Net wherever its float16 weights are not tiny
    covered = _weights(shape[1:], patch) > 1e-3
    assert covered.mean() > 0.6  # measured 0.69-0.84 here; the rest is window corners
    # measured max |diff| 7.2e-4 on covered voxels
    np.testing.assert_allclose(ours[:, covered], ref[:, covered], rtol=0, atol=1.5e-3)
    assert (ours.argmax(0) == ref.argmax(0))[covered].mean() >= 0.999


def _weights(shape: tuple[int, ...], patch: tuple[int, ...]) -> np.ndarray:
    """Summed Gaussian weight of every voxel (float64; the last ``len(patch)`` axes tiled)."""
    nd = len(patch)
    padded, region = pad_to_patch(np.zeros((1, 1, *shape)), patch)
    size = padded.shape[-nd:]
    weight = np.zeros(size)
    g = gaussian_importance(patch)
    starts = [window_starts(s, p, 0.5) for s, p in zip(size, patch, strict=True)]
    for corner in itertools.product(*starts):
        weight[tuple(slice(o, o + p) for o, p in zip(corner, patch, strict=True))] += g
    weight = weight[region]
    return np.broadcast_to(weight, shape)


def test_batch_size_does_not_change_the_logits() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 20, 26, 17)).astype(np.float32)
    predict = _numpy_batch(_net(1, 2, 3, 0))
    a = predict_windows(image, predict, (12, 16, 8), max_batch=1, mirror_axes=(2,))
    b = predict_windows(image, predict, (12, 16, 8), max_batch=7, mirror_axes=(2,))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
