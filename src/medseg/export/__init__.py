"""Export (torch, onnx, onnxsim, modelopt, onnxruntime): checkpoint -> deployable bundle.

from medseg.export import ExportOptions, export_bundle
manifest = export_bundle(Path("models/mni152-tissue"), Path("/tmp/b"),
                         ExportOptions(fp16=True, int8=True, calib_data=Path("/tmp/mni")), print)
"""

from __future__ import annotations

from medseg.export.pipeline import ExportOptions, export_bundle

__all__ = ["ExportOptions", "export_bundle"]
