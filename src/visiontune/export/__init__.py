"""Export to ONNX and inference with ONNX Runtime.

``visiontune export checkpoint=best.pt`` (or :func:`export_checkpoint`) traces the checkpoint's model, stores the
training config and class names in the ONNX metadata, checks the graph against PyTorch with ONNX Runtime on two input
sizes and only then writes the file. :func:`predict_onnx` runs such a file with the same pre- and post-processing and
writes the same prediction files as the PyTorch path.

``onnx`` and ``onnxruntime`` are optional (``pip install visiontune[export]``); they are imported on first use, so
``import visiontune.export`` works without them.
"""

from __future__ import annotations

from visiontune.utils.lazy import lazy_attributes

_LAZY = {
    "ExportOptions": "visiontune.export.options",
    "ExportResult": "visiontune.export.exporter",
    "export_checkpoint": "visiontune.export.exporter",
    "export_model": "visiontune.export.exporter",
    "ExportMetadata": "visiontune.export.metadata",
    "ParityError": "visiontune.export.parity",
    "MissingExportDependencyError": "visiontune.export._dependencies",
    "OnnxModel": "visiontune.export.runtime",
    "predict_onnx": "visiontune.export.runtime",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = sorted(_LAZY)
