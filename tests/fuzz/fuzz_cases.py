"""The fuzz pass's case list: bad inputs for every command of the CLI (issue 22).

Each case is a command line with placeholders: ``{NAME}`` is a path of
:func:`fuzz_workspace.build_workspace` (``{B}``, ``{DS}``, ``{S}``, ``{DS_crc}``, ...),
``{OUT}`` the empty output folder. Every case is a bad input: the command must exit 2 with
one line (no traceback), write nothing and touch no input. ``slow`` cases load a model,
read a whole dataset or start a subprocess; they carry ``@pytest.mark.slow``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CASES", "Case"]


@dataclass(frozen=True)
class Case:
    """One bad command line.

    Attributes:
        id: a short unique name (the pytest id).
        args: the argv after ``medseg``, with ``{NAME}`` placeholders.
        slow: loads a model, reads a dataset or runs a subprocess (``@pytest.mark.slow``).
    """

    id: str
    args: tuple[str, ...]
    slow: bool = False


CASES: list[Case] = []


def _add(
    prefix: str, base: tuple[str, ...], variants: dict[str, tuple[str, ...]], slow: bool = False
) -> None:
    for name, extra in variants.items():
        CASES.append(Case(f"{prefix}-{name}", (*base, *extra), slow))


def _values(option: str, values: list[str], *more: str) -> dict[str, tuple[str, ...]]:
    return {f"{option.lstrip('-')}={v or 'empty'}": (option, v, *more) for v in values}


_NUMBERS_BAD = ["-1", "nan", "inf", "abc"]

# -- train ------------------------------------------------------------------------------------
_TRAIN = ("train", "{DS}", "--out", "{OUT}/run")
_add("train", _TRAIN, _values("--val-fraction", ["1.5", "0", "-0.1", "nan", "1", "inf"]))
_add("train", _TRAIN, _values("--epochs", ["0", "-5", "1000001", "abc"]))
_add("train", _TRAIN, _values("--batch-size", ["0", "100000", "-1", "1.5"]))
_add("train", _TRAIN, _values("--lr", ["0", "-1", "nan", "inf"]))
_add("train", _TRAIN, _values("--slice-axis", ["3", "-1"]))
_add("train", _TRAIN, _values("--arch", ["nope", ""]))
_add("train", _TRAIN, _values("--variant", ["huge"]))
_add("train", _TRAIN, _values("--schedule", ["linear"]))
_add("train", _TRAIN, _values("--device", ["tpu"]))
_add("train", _TRAIN, _values("--max-patch", ["0", "abc", "17x17"]))
_add("train", _TRAIN, _values("--flip-axes", ["2", "x"]))
_add(
    "train",
    _TRAIN,
    {
        "fold5-of-2": ("--fold", "5", "--folds", "2"),
        "folds1": ("--folds", "1"),
        "fold-neg": ("--fold", "-1", "--folds", "3"),
        "seed-abc": ("--seed", "abc"),
    },
)
_add(
    "train",
    _TRAIN,
    {
        name: ("--plan", "{" + name + "}")
        for name in (
            "plan_batch_huge",
            "plan_orientation_qqq",
            "plan_batch_zero",
            "plan_spacing_nan",
            "plan_garbage",
        )
    },
)
_add("train", _TRAIN, {"plan-missing": ("--plan", "{OUT}/none.json")})
for _ds in (
    "DS_file_ending",
    "DS_num_training",
    "DS_no_labels",
    "DS_no_cases",
    "DS_no_suffix",
    "DS_orphan_label",
    "DS_garbage_json",
    "DS_v1_labels",
    "DS_dup_labels",
):
    CASES.append(Case(f"train-{_ds}", ("train", "{" + _ds + "}", "--out", "{OUT}/run")))
for _ds in ("DS_crc", "DS_constant", "DS_label_9"):
    CASES.append(Case(f"train-{_ds}", ("train", "{" + _ds + "}", "--out", "{OUT}/run"), True))
CASES += [
    Case("train-missing-dataset", ("train", "{OUT}/nothing", "--out", "{OUT}/run")),
    Case("train-dataset-is-file", ("train", "{FILE}", "--out", "{OUT}/run")),
    Case("train-resume-nothing", ("train", "{DS}", "--out", "{OUT}/run", "--resume")),
]

# -- export -----------------------------------------------------------------------------------
_EXPORT = ("export", "{RUN}", "--out", "{OUT}/b")
_INT8 = ("--int8", "--calib-data", "{DS}")
_add("export", _EXPORT, _values("--max-dice-drop", ["nan", "-1", "101", "inf"], *_INT8))
_add("export", _EXPORT, _values("--batch", ["1:8:100000", "4:2:1", "0:1:1", "abc", "1:2", "-1"]))
_add(
    "export",
    _EXPORT,
    {
        "calib-data-without-int8": ("--calib-data", "{DS}"),
        "calib-slices-without-int8": ("--calib-slices", "5"),
        "calib-method-without-int8": ("--calib-method", "entropy"),
        "max-dice-drop-without-int8": ("--max-dice-drop", "1"),
        "int8-without-calib": ("--int8",),
        "int8-calib-missing": ("--int8", "--calib-data", "{OUT}/none"),
        "calib-method-foo": ("--calib-method", "foo", *_INT8),
        "calib-slices-0": ("--calib-slices", "0", *_INT8),
        "height-17": ("--height", "17", "--width", "16"),
        "height-only": ("--height", "16"),
        "dynamic-and-fixed": ("--dynamic-hw", "--height", "16", "--width", "16"),
        "guard-tensorrt": ("--guard-backend", "tensorrt", *_INT8),
        "guard-without-int8": ("--guard-backend", "onnxruntime"),
        "data-missing": ("--data", "{OUT}/none"),
        "data-is-file": ("--data", "{FILE}"),
    },
)
CASES += [
    Case("export-run-missing", ("export", "{OUT}/none", "--out", "{OUT}/b")),
    Case("export-run-is-file", ("export", "{FILE}", "--out", "{OUT}/b")),
    Case("export-run-is-dataset", ("export", "{DS}", "--out", "{OUT}/b")),
    Case("export-run-is-bundle", ("export", "{B}", "--out", "{OUT}/b")),
]

# -- build ------------------------------------------------------------------------------------
_BUILD = ("build", "{B}")
_add("build", _BUILD, _values("--precision", ["fp8", "int4", ""]))
_add("build", _BUILD, _values("--workspace", ["1000TB", "0", "abc", "-1", "1T", "9999GiB"]))
_add("build", _BUILD, _values("--opt-level", ["9", "-1", "abc"]))
_add("build", _BUILD, _values("--runtime", ["nope", ""]))
_add(
    "build",
    _BUILD,
    _values("--compute-capability", ["9.9", "abc", "0"], "--runtime", "tensorrt-rtx"),
)
_add("build", _BUILD, _values("--dla-core", ["-1", "abc"]))
for _b in (
    "B_garbage_json",
    "B_no_manifest",
    "B_dup_classes",
    "B_schema99",
    "B_unknown_key",
    "B_height_str",
    "FILE",
):
    CASES.append(Case(f"build-{_b}", ("build", "{" + _b + "}")))
CASES.append(Case("build-missing", ("build", "{OUT}/none")))

# -- infer ------------------------------------------------------------------------------------
_INFER = ("infer", "{B}", "{S}", "--out", "{OUT}/m.nii.gz")
_add("infer", _INFER, _values("--threads", ["0", "-1", "999", "abc"]))
_add("infer", _INFER, _values("--batch-size", ["0", "-1", "100000", "abc"]))
_add("infer", _INFER, _values("--precision", ["fp8", "int4", ""]))
_add("infer", _INFER, _values("--backend", ["tensorflow", ""]))
_add("infer", _INFER, _values("--providers", ["nope", ",,"]))
_add(
    "infer",
    _INFER,
    _values(
        "--server",
        ["http://[::1", "ftp://h:1", "http://h", "http://h:0", "http://h:99999", "h:80/x", ""],
    ),
)
_add(
    "infer",
    _INFER,
    {
        "server-tta": ("--server", "http://127.0.0.1:1", "--tta"),
        "server-no-tta": ("--server", "http://127.0.0.1:1", "--no-tta"),
        "server-no-postprocess": ("--server", "http://127.0.0.1:1", "--no-postprocess"),
        "server-probabilities": ("--server", "http://127.0.0.1:1", "--probabilities"),
        "server-threads": ("--server", "http://127.0.0.1:1", "--threads", "1"),
        "server-backend": ("--server", "http://127.0.0.1:1", "--backend", "onnxruntime"),
        "server-unreachable": ("--server", "http://127.0.0.1:1"),
        "model-without-server": ("--model", "m"),
        "dicom-seg-for-nifti": ("--dicom-seg", "{OUT}/x.dcm"),
        "reference-probabilities": ("--reference", "{probabilities.nii.gz}"),
        "reference-other-shape": ("--reference", "{other_shape.nii.gz}"),
        "reference-missing": ("--reference", "{OUT}/none.nii.gz"),
        "reference-crc": ("--reference", "{crc.nii.gz}"),
        "cuda-graph-on-cpu": ("--cuda-graph", "--backend", "onnxruntime"),
        "providers-openvino": ("--providers", "cpu", "--backend", "openvino"),
        "bf16-onnxruntime": ("--precision", "bf16", "--backend", "onnxruntime"),
    },
)
CASES += [
    Case("infer-out-png", ("infer", "{B}", "{S}", "--out", "{OUT}/m.png")),
    Case("infer-out-folder", ("infer", "{B}", "{S}", "--out", "{OUT}")),
    Case("infer-out-existing", ("infer", "{B}", "{S}", "--out", "{FILE}")),
    Case("infer-missing-input", ("infer", "{B}", "{OUT}/none.nii.gz", "--out", "{OUT}/m.nii.gz")),
    Case(
        "infer-two-shapes",
        ("infer", "{B}", "{S}", "{complex_ok_shape.nii.gz}", "--out", "{OUT}/m.nii.gz"),
    ),
    Case(
        "infer-nifti-and-dicom", ("infer", "{B}", "{S}", "{dcm_slope0}", "--out", "{OUT}/m.nii.gz")
    ),
    Case("infer-bundle-missing", ("infer", "{OUT}/none", "{S}", "--out", "{OUT}/m.nii.gz")),
]
for _scan in (
    "crc.nii.gz",
    "huge.nii",
    "short.nii",
    "short.nii.gz",
    "empty_dim.nii.gz",
    "zero.nii.gz",
    "constant.nii.gz",
    "four_d.nii.gz",
    "spacing100.nii.gz",
    "text.nii.gz",
    "empty.nii.gz",
    "truncated.nii.gz",
    "scan.png",
    "dcm_slope0",
    "dcm_pixel_spacing0",
    "dcm_empty",
    "dcm_cut200",
    "dcm_text",
    "FILE",
):
    CASES.append(
        Case(f"infer-scan-{_scan}", ("infer", "{B}", "{" + _scan + "}", "--out", "{OUT}/m.nii.gz"))
    )
for _b in (
    "B_garbage_json",
    "B_no_manifest",
    "B_dup_classes",
    "B_schema99",
    "B_unknown_key",
    "B_height_str",
    "B_no_onnx",
    "B_tampered",
    "FILE",
):
    CASES.append(
        Case(f"infer-bundle-{_b}", ("infer", "{" + _b + "}", "{S}", "--out", "{OUT}/m.nii.gz"))
    )
for _b in ("B_channels2", "B_classes2", "B_input_name"):
    for _backend in ("onnxruntime", "openvino"):
        CASES.append(
            Case(
                f"infer-bundle-{_b}-{_backend}",
                ("infer", "{" + _b + "}", "{S}", "--out", "{OUT}/m.nii.gz", "--backend", _backend),
                slow=True,
            )
        )

# -- bench ------------------------------------------------------------------------------------
_BENCH = ("bench", "{B}", "--data", "{DS}")
_add("bench", _BENCH, _values("--threads", ["0", "999"]))
_add("bench", _BENCH, _values("--batch", ["0", "100000", "abc"]))
_add("bench", _BENCH, _values("--warmup", ["-1", "abc"]))
_add("bench", _BENCH, _values("--iters", ["0", "-1"]))
_add("bench", _BENCH, _values("--repeats", ["0", "-1"]))
_add("bench", _BENCH, _values("--max-cases", ["0", "-1"]))
_add("bench", _BENCH, _values("--split", ["nope"]))
_add("bench", _BENCH, _values("--backends", ["nope", ""]))
_add("bench", _BENCH, _values("--precisions", ["fp8", ""]))
_add("bench", _BENCH, _values("--max-dice-drop", ["nan", "-1"]))
_add("bench", _BENCH, _values("--min-dice", ["1.5", "nan", "-0.5"]))
_add("bench", _BENCH, _values("--max-p95-ms", ["-1", "nan", "0"]))
_add("bench", _BENCH, _values("--max-latency-regression", ["nan", "-1"]))
_add("bench", _BENCH, _values("--max-dice-regression", ["nan", "-1"]))
_add("bench", _BENCH, _values("--baseline", ["{OUT}/none.json", "{FILE}"]))
CASES += [
    Case("bench-data-missing", ("bench", "{B}", "--data", "{OUT}/none")),
    Case("bench-data-file", ("bench", "{B}", "--data", "{FILE}")),
    Case("bench-bundle-garbage", ("bench", "{B_garbage_json}", "--data", "{DS}")),
    Case("bench-bundle-dup-classes", ("bench", "{B_dup_classes}", "--data", "{DS}")),
]
for _ds in ("DS_file_ending", "DS_num_training", "DS_no_labels", "DS_no_cases", "DS_garbage_json"):
    CASES.append(Case(f"bench-{_ds}", ("bench", "{B}", "--data", "{" + _ds + "}")))

# -- demo -------------------------------------------------------------------------------------
CASES += [
    Case("demo-out-file", ("demo", "--out", "{FILE}")),
    Case("demo-epochs-without-train", ("demo", "--out", "{OUT}/d", "--epochs", "3")),
    Case("demo-model-missing", ("demo", "--out", "{OUT}/d", "--model", "{OUT}/nomodel")),
    Case("demo-model-is-dataset", ("demo", "--out", "{OUT}/d", "--model", "{DS}")),
    Case("demo-out-parent-missing", ("demo", "--out", "{OUT}/a/b/c")),
]

# -- demo-bundle --------------------------------------------------------------------------------
_DEMO_BUNDLE = ("demo-bundle", "--model", "{RUN}")
CASES += [
    Case("demo-bundle-data-missing", (*_DEMO_BUNDLE, "--data", "{OUT}/nodata", "--out", "{OUT}/b")),
    Case(
        "demo-bundle-model-missing",
        ("demo-bundle", "--data", "{DS}", "--model", "{OUT}/nomodel", "--out", "{OUT}/b"),
    ),
    Case("demo-bundle-out-in-data", (*_DEMO_BUNDLE, "--data", "{DS}", "--out", "{DS}/bundle")),
    Case("demo-bundle-out-is-file", (*_DEMO_BUNDLE, "--data", "{DS}", "--out", "{FILE}")),
    Case("demo-bundle-out-is-data", (*_DEMO_BUNDLE, "--data", "{DS}", "--out", "{DS}")),
]

# -- export-triton ----------------------------------------------------------------------------
_TRITON = ("export-triton", "{B}", "--out", "{OUT}/repo")
_add("export-triton", _TRITON, _values("--max-batch", ["0", "-1", "100000", "abc"]))
_add("export-triton", _TRITON, _values("--max-queue-delay-us", ["-1", "abc"]))
_add("export-triton", _TRITON, _values("--segment-precision", ["fp8", ""]))
_add("export-triton", _TRITON, _values("--max-voxels", ["0", "-1", "abc"]))
for _b in ("B_garbage_json", "B_no_manifest", "B_dup_classes", "B_no_onnx", "FILE", "DS"):
    CASES.append(
        Case(f"export-triton-{_b}", ("export-triton", "{" + _b + "}", "--out", "{OUT}/repo"))
    )

# -- plan -------------------------------------------------------------------------------------
_PLAN = ("plan", "{DS}", "--out", "{OUT}/plans.json")
_add("plan", _PLAN, _values("--max-patch", ["0", "abc", "17", "-32"]))
for _ds in (
    "DS_file_ending",
    "DS_num_training",
    "DS_no_labels",
    "DS_no_cases",
    "DS_no_suffix",
    "DS_orphan_label",
    "DS_garbage_json",
    "DS_v1_labels",
    "DS_dup_labels",
    "DS_crc",
    "DS_constant",
    "DS_label_9",
    "FILE",
):
    CASES.append(Case(f"plan-{_ds}", ("plan", "{" + _ds + "}", "--out", "{OUT}/plans.json")))
CASES.append(Case("plan-missing", ("plan", "{OUT}/none", "--out", "{OUT}/plans.json")))

# -- cv-summary -------------------------------------------------------------------------------
for _cv in (
    "cv_fold_one",
    "cv_fold_7_of_3",
    "cv_dice_7_5",
    "cv_dice_nan",
    "cv_folds_1",
    "cv_not_object",
    "cv_no_cases",
    "cv_garbage",
):
    CASES.append(Case(f"cv-summary-{_cv}", ("cv-summary", "{" + _cv + "}")))
CASES += [
    Case("cv-summary-case-twice", ("cv-summary", "{cv_case_twice_a}", "{cv_case_twice_b}")),
    Case("cv-summary-no-record", ("cv-summary", "{DS}")),
    Case("cv-summary-missing", ("cv-summary", "{OUT}/none")),
    Case("cv-summary-json-folder", ("cv-summary", "{cv_dice_7_5}", "--json", "{OUT}/x.json")),
]

# -- serve ------------------------------------------------------------------------------------
_SERVE = ("serve", "{B}")
_add("serve", _SERVE, _values("--port", ["0", "70000", "-1", "abc"]))
_add("serve", _SERVE, _values("--host", ["999.1.1.1", "", "no-such-host.invalid", "1.2.3"]))
_add("serve", _SERVE, _values("--ready-timeout", ["-1", "nan", "0", "inf"]))
_add("serve", _SERVE, _values("--log", ["{OUT}", "{OUT}/missing/log.txt"]))
_add("serve", _SERVE, {"grpc-equals-http": ("--port", "8000", "--grpc-port", "8000")})
CASES += [
    Case("serve-repo-precision", ("serve", "{REPO}", "--precision", "fp16")),
    Case("serve-repo-max-voxels", ("serve", "{REPO}", "--max-voxels", "100")),
    Case("serve-missing", ("serve", "{OUT}/none")),
    Case("serve-file", ("serve", "{FILE}")),
    Case("serve-dataset", ("serve", "{DS}")),
    Case("serve-bundle-garbage", ("serve", "{B_garbage_json}")),
    Case("serve-max-voxels-0", ("serve", "{B}", "--max-voxels", "0"), slow=True),
    Case("serve-precision-fp8", ("serve", "{B}", "--precision", "fp8"), slow=True),
]

# -- data check / mni152 / mni152-cohort / preview --------------------------------------------
for _ds in (
    "DS_file_ending",
    "DS_num_training",
    "DS_no_labels",
    "DS_no_cases",
    "DS_no_suffix",
    "DS_orphan_label",
    "DS_garbage_json",
    "DS_v1_labels",
    "DS_dup_labels",
    "DS_crc",
    "DS_constant",
    "DS_label_9",
    "FILE",
):
    CASES.append(Case(f"data-check-{_ds}", ("data", "check", "{" + _ds + "}")))
CASES += [
    Case("data-check-missing", ("data", "check", "{OUT}/none")),
    Case("data-mni152-out-file", ("data", "mni152", "{FILE}")),
    Case("data-mni152-parent-missing", ("data", "mni152", "{OUT}/a/b/c")),
    Case("data-cohort-out-file", ("data", "mni152-cohort", "{FILE}")),
]
_COHORT = ("data", "mni152-cohort", "{OUT}/c")
_add("data-cohort", _COHORT, _values("--cases", ["0", "501", "-1", "abc"]))
_add("data-cohort", _COHORT, _values("--seed", ["-1", "4294967296", "abc"]))
_PREVIEW = ("data", "preview", "{DS}", "--out", "{OUT}/p.png")
_add("data-preview", _PREVIEW, _values("--case", ["nope", ""]))
for _ds in ("DS_garbage_json", "DS_no_labels", "DS_no_cases", "FILE"):
    CASES.append(
        Case(f"data-preview-{_ds}", ("data", "preview", "{" + _ds + "}", "--out", "{OUT}/p.png"))
    )
CASES.append(
    Case(
        "data-preview-DS_crc",
        ("data", "preview", "{DS_crc}", "--case", "toy_001", "--out", "{OUT}/p.png"),
    )
)

# -- import nnunet ----------------------------------------------------------------------------
for _r in ("R_not_torch", "R_no_checkpoint", "R_no_labels", "R_empty", "FILE", "DS"):
    CASES.append(Case(f"import-{_r}", ("import", "nnunet", "{" + _r + "}", "--out", "{OUT}/r")))
CASES += [
    Case("import-missing", ("import", "nnunet", "{OUT}/none", "--out", "{OUT}/r")),
    Case(
        "import-folds-abc",
        ("import", "nnunet", "{R_not_torch}", "--out", "{OUT}/r", "--folds", "abc"),
    ),
    Case(
        "import-configuration",
        ("import", "nnunet", "{R_no_checkpoint}", "--out", "{OUT}/r", "--configuration", "3d_foo"),
    ),
    Case(
        "import-checkpoint-name",
        ("import", "nnunet", "{R_not_torch}", "--out", "{OUT}/r", "--checkpoint", "nope.pth"),
    ),
]

_ids = [c.id for c in CASES]
if len(set(_ids)) != len(_ids):  # pragma: no cover - a mistake in this list
    raise RuntimeError(f"duplicate fuzz case ids: {sorted({i for i in _ids if _ids.count(i) > 1})}")
