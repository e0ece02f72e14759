"""Pre/post-processing share of the network time on a CT-sized volume (issue 12 target: 15 %).

Runs the runtime's own path (:class:`medseg.runtime.Segmenter`, ONNX Runtime CPU) on a
synthetic CT-like scan of 512 x 512 x ``--slices`` voxels at 0.7 x 0.7 x 1.5 mm in LPS order
(the body phantom of ``infer_memory.py``), ``--repeats`` times, and prints per run and as
medians: network seconds (inside the backend), pre-processing (reorientation, resampling
to the bundle's spacing, normalisation), post-processing (windowing and blending outside
the backend, resampling the class probabilities back to the scan grid, argmax, connected
components), and their share of the network time, the number ``medseg bench`` reports as
its ``pre/post %`` column. The share per volume hardly depends on the number of slices
(every step is per slice except the normalisation statistics), so a slab keeps it short.

    python benchmarks/prepost_share.py                          # the committed demo bundle
    python benchmarks/prepost_share.py --bundle /tmp/b --slices 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPACING = (0.7, 0.7, 1.5)


def ct_phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """The int16 body phantom of ``infer_memory.py`` (body ellipse, one organ, noise)."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    organ = ((x - 0.25) / 0.3) ** 2 + ((y + 0.1) / 0.25) ** 2 < 1
    volume = np.full(shape, -1000, dtype=np.int16)
    for z in range(shape[2]):
        sl = np.where(body, 40, -1000).astype(np.int16)
        sl[organ & (z > shape[2] // 4)] = 120
        volume[:, :, z] = sl + rng.normal(0, 15, sl.shape).astype(np.int16)
    return volume


def main() -> int:
    from medseg.runtime import Segmenter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=HERE.parent / "models/mni152-tissue/bundle")
    parser.add_argument("--slices", type=int, default=24, help="Z size (default 24)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out", type=Path, help="also write the result as JSON")
    parser.add_argument("--quick", action="store_true", help="seconds-long check: 4 slices, once")
    args = parser.parse_args()
    if args.quick:
        args.slices, args.repeats = 4, 1
    shape = (512, 512, args.slices)
    image = ct_phantom(shape)[None]
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    rows = []
    with Segmenter.from_bundle(
        args.bundle, "onnxruntime", args.precision, threads=args.threads
    ) as seg:
        seg.segment(image[..., :2], affine=affine)  # warm-up (sessions, thread pools)
        print(f"{'run':>4} {'network s':>10} {'pre s':>7} {'post s':>7} {'pre/post %':>11}")
        for i in range(args.repeats):
            t = time.perf_counter()
            timing = seg.segment(image, affine=affine).timing
            wall = time.perf_counter() - t
            net, pre, post = timing.inference_s, timing.preprocess_s, timing.postprocess_s
            share = 100.0 * (pre + post) / net
            rows.append({"network_s": net, "pre_s": pre, "post_s": post, "share_pct": share})
            rows[-1]["wall_s"] = wall
            print(f"{i:>4} {net:>10.2f} {pre:>7.2f} {post:>7.2f} {share:>11.1f}")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(
        f"{'med':>4} {med['network_s']:>10.2f} {med['pre_s']:>7.2f} {med['post_s']:>7.2f} "
        f"{med['share_pct']:>11.1f}   (target <= 15 %; load {os.getloadavg()[0]:.1f})"
    )
    if args.out is not None:
        result = {
            "bundle": str(args.bundle),
            "volume": {"shape": list(shape), "spacing_mm": list(SPACING), "order": "LPS"},
            "precision": args.precision,
            "threads": args.threads,
            "load_1min": os.getloadavg()[0],
            "runs": rows,
            "median": med,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
