"""Scanner-side file I/O: NIfTI and DICOM series in; NIfTI masks and DICOM SEG out.

pydicom and highdicom are imported when a DICOM file is first read or written.
"""

from __future__ import annotations

from medseg.runtime.io.scan import OutputPaths, Scan, load_scan, plan_outputs, write_outputs

__all__ = ["OutputPaths", "Scan", "load_scan", "plan_outputs", "write_outputs"]
