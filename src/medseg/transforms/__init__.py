"""Scanner-side transforms: the preprocessing recipe, resampling, orientation, post-processing.

What the runtime applies to a scan before and after the network (and training applies to its
cases, so both sides agree): :mod:`~medseg.transforms.preprocessing` (the bundle's recipe,
intensity window / normalisation, resize), :mod:`~medseg.transforms.resample`,
:mod:`~medseg.transforms.orientation`, :mod:`~medseg.transforms.postprocess`, the nnU-Net
recipe and its preprocessing (:mod:`~medseg.transforms.nnunet_recipe`,
:mod:`~medseg.transforms.nnunet_preprocess`, :mod:`~medseg.transforms.nnunet_resample`) and
:class:`~medseg.transforms.volume.Volume`. Importing it costs numpy (scipy when resampling):
never torch, onnx or nibabel.
"""

from __future__ import annotations

__all__: list[str] = []
