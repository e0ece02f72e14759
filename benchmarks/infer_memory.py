"""Peak host memory and time split of ``medseg infer`` on a CT-sized volume (512x512x300).

Writes a synthetic CT-like scan (int16 HU, a body ellipse with organs and noise, 0.7 x 0.7 x
1.5 mm, LPS like an axial DICOM series) and runs ``medseg infer`` on it in a child process with
a sliding-window bundle; the child's peak resident set size (``ru_maxrss``) is the number the
issue's target (< 3 GB) is about, and the summary line of ``medseg infer`` gives the share of
pre/post-processing in the backend time. Without ``--bundle`` a one-convolution CT bundle
with a 256x256 patch at 1 mm is written (the network costs almost nothing then, so the memory
measured is the runtime's own: volume, normalised copy, label map, one block of windows).

    python benchmarks/infer_memory.py                       # runtime memory, conv bundle
    python benchmarks/infer_memory.py --bundle /tmp/b       # a real exported window bundle
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE = (512, 512, 300)
SPACING = (0.7, 0.7, 1.5)


def write_ct(path: Path, shape: tuple[int, int, int]) -> None:
    """A body-like int16 CT volume in LPS voxel order (flipped X and Y)."""
    from medseg.data.nifti import save_nifti

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    organ = ((x - 0.25) / 0.3) ** 2 + ((y + 0.1) / 0.25) ** 2 < 1
    volume = np.full(shape, -1000, dtype=np.int16)
    for z in range(shape[2]):
        sl = np.where(body, 40, -1000).astype(np.int16)
        sl[organ & (z > shape[2] // 4)] = 120
        volume[:, :, z] = sl + rng.normal(0, 15, sl.shape).astype(np.int16)
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    save_nifti(path, volume, affine, dtype=np.int16)


def write_conv_bundle(root: Path) -> Path:
    """A real ONNX one-convolution CT bundle: window recipe, 256x256 patch, 1 mm, batch 1:16:32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from medseg.bundle.entries import DimRange, InputSpec, PrecisionEntry, file_sha256
    from medseg.bundle.manifest import Manifest
    from medseg.transforms.preprocessing import Recipe

    root.mkdir(parents=True)
    patch = (256, 256)
    weight = np.zeros((3, 1, 3, 3), dtype=np.float32)
    weight[:, 0, 1, 1] = [-2.0, 1.0, 3.0]
    conv = helper.make_node("Conv", ["image", "w", "b"], ["logits"], pads=[1] * 4)
    graph = helper.make_graph(
        [conv],
        "conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, *patch])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, *patch])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array([0.5, 0.0, -1.5], np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(root / "model.onnx"))
    recipe = Recipe(
        modality="CT",
        ct_window=(-200.0, 300.0),
        ct_zscore=(60.0, 50.0),
        size_policy="window",
        patch_size=patch,
        target_spacing=(1.0, 1.0),
        mirror_axes=(0, 1),
    )
    path = root / "model.onnx"
    static = (DimRange(256, 256, 256), DimRange(256, 256, 256))
    Manifest(
        model={"arch": "conv", "name": "memory-benchmark"},
        classes={"background": 0, "soft": 1, "organ": 2},
        input=InputSpec("image", 1, DimRange(1, 16, 32), *static),
        output_name="logits",
        preprocessing=recipe,
        precisions={"fp32": PrecisionEntry("model.onnx", file_sha256(path), 0, {}, {}, {})},
        calibration=None,
        source={},
        tool_versions={},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        orientation="RAS",
    ).save(root)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="sliding-window bundle (default: conv)")
    parser.add_argument("--slices", type=int, default=SHAPE[2], help="Z size (default 300)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "infer_memory.json")
    parser.add_argument("--quick", action="store_true", help="seconds-long check: 8 slices")
    args = parser.parse_args()
    if args.quick:
        args.slices = 8
    with tempfile.TemporaryDirectory(prefix="medseg-mem-") as tmp:
        scan = Path(tmp) / "ct.nii.gz"
        shape = (SHAPE[0], SHAPE[1], args.slices)
        write_ct(scan, shape)
        bundle = args.bundle or write_conv_bundle(Path(tmp) / "bundle")
        medseg = Path(sys.executable).with_name("medseg")
        cmd = [str(medseg), "infer", str(bundle), str(scan), "--out", str(Path(tmp) / "m.nii.gz")]
        cmd += ["--backend", "onnxruntime", "--threads", str(args.threads)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            return proc.returncode
    summary = [line for line in proc.stdout.splitlines() if "network" in line or "% of" in line]
    result = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_1min": os.getloadavg()[0],
        "volume": {"shape": list(shape), "spacing_mm": list(SPACING), "dtype": "int16"},
        "bundle": str(args.bundle) if args.bundle else "one-convolution CT bundle (256x256, 1 mm)",
        "threads": args.threads,
        "peak_rss_mb": round(peak_mb, 1),
        "target_mb": 3000,
        "passed": peak_mb < 3000,
        "wall_s": round(wall, 1),
        "infer_summary": " ".join(" ".join(summary).split()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
