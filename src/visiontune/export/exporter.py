"""Export a visiontune checkpoint to ONNX, check it against PyTorch with ONNX Runtime, then write it.

Exporter choice: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The ``torch.export``-based exporter
(``dynamo=True``, the default since PyTorch 2.9) needs the separate ``onnxscript`` package, and torchvision's
detection models are written for tracing (their ONNX support in ``torchvision.models.detection`` is tested with the
TorchScript exporter, opset >= 11). Tracing records shape arithmetic (``images.shape`` -> ``Shape``/``Gather``), so
with ``dynamic=true`` one graph serves every batch size and, for the detectors, every image size. The default opset
is 17 (ONNX Runtime >= 1.11, TensorRT >= 8.6).

Order of work: trace into memory, attach the metadata, run the parity check on the in-memory graph, and only when it
passes write the file (to a temporary file in the output folder, renamed into place:
:func:`visiontune.utils.files.atomic_write_bytes`). A failed check raises
:class:`~visiontune.export.parity.ParityError` and leaves no file behind.
"""

from __future__ import annotations

import inspect
import io
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from visiontune import __version__
from visiontune.export._dependencies import import_onnx, import_onnxruntime
from visiontune.export.metadata import ExportMetadata, json_safe_meta
from visiontune.export.options import ExportOptions
from visiontune.export.parity import (
    ParityCheck,
    ParityError,
    compare_outputs,
    format_parity,
    parity_failure_message,
)
from visiontune.export.samples import collect_sample_images
from visiontune.export.specs import ExportSpec, build_export_spec
from visiontune.utils.files import atomic_write_bytes

if TYPE_CHECKING:
    from visiontune.tasks.base import Task

__all__ = ["ExportResult", "export_checkpoint", "export_model", "model_from_checkpoint"]

logger = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """A written export.

    Attributes:
        path: the ONNX file.
        metadata: what was stored in it.
        parity: the parity checks it passed.
        seconds: wall time of tracing, checking and writing.
    """

    path: Path
    metadata: ExportMetadata
    parity: list[ParityCheck] = field(default_factory=list)
    seconds: float = 0.0

    def parity_table(self) -> str:
        """The parity checks as a text table (max abs difference per output and input)."""
        return format_parity(self.parity)


def model_from_checkpoint(state: Mapping[str, Any]) -> tuple[Task, nn.Module]:
    """Rebuild the task and its model from a loaded visiontune checkpoint, in eval mode on the CPU.

    Args:
        state: the dict of :func:`visiontune.engine.checkpoint.load_checkpoint` (``model``, ``config``, ``meta``).

    Returns:
        ``(task, model)`` with the checkpoint's weights.
    """
    from visiontune.config import config_from_dict
    from visiontune.tasks import create_task

    config = config_from_dict(state["config"])
    task = create_task(config)
    task.load_meta(state.get("meta", {}))
    model = task.build_model(load_weights=False)
    model.load_state_dict(state["model"])
    return task, model.eval()


PLAIN_WEIGHTS_HINT = ("export takes the checkpoint of a visiontune run (runs/.../best.pt); for plain weights make "
                      "one first: visiontune train -c <config> model.checkpoint=<weights> train.epochs=0 writes its "
                      "last.pt")


def export_checkpoint(checkpoint: str | Path, *, output: str | Path | None = None,
                      options: ExportOptions | None = None) -> ExportResult:
    """Export a visiontune checkpoint to ONNX and check it against PyTorch.

    Args:
        checkpoint: a visiontune checkpoint (``best.pt``).
        output: the ONNX file to write; default: the checkpoint's path with suffix ``.onnx``.
        options: export options (defaults: dynamic, opset 17, float32).

    Returns:
        The written file, its metadata and the parity checks.

    Raises:
        CheckpointError: the checkpoint is missing or not a visiontune checkpoint.
        ValueError: an option does not apply to the task.
        ParityError: ONNX Runtime does not reproduce PyTorch within the tolerance (nothing is written).
        MissingExportDependencyError: onnx or onnxruntime is not installed.
        FileWriteError: the file cannot be written (disk full, read-only folder; one line naming it).
        OutputPathError: ``output`` is the checkpoint or the parity sample, or lies in another run's folder
            (:func:`~visiontune.engine.run_dir.check_output_path`); checked before anything is read.
    """
    from visiontune.engine.checkpoint import load_checkpoint
    from visiontune.engine.run_dir import check_output_path, run_folder_of

    checkpoint = Path(checkpoint)
    output = check_output_path(output if output is not None else checkpoint.with_suffix(".onnx"), command="export",
                               writes="file", own_run=run_folder_of(checkpoint),
                               inputs={"checkpoint": checkpoint, "sample": options.sample if options else None})
    state = load_checkpoint(checkpoint, plain_weights_hint=PLAIN_WEIGHTS_HINT)
    task, model = model_from_checkpoint(state)
    return export_model(task, model, output, options=options, stored_config=state["config"])


def export_model(task: Task, model: nn.Module, output: str | Path, *, options: ExportOptions | None = None,
                 stored_config: Mapping[str, Any] | None = None) -> ExportResult:
    """Export ``model`` of ``task`` to ``output``, checked against PyTorch (see :func:`export_checkpoint`).

    Args:
        task: the task with its metadata loaded (class names).
        model: the task's model with trained weights; it is put in eval mode.
        output: the ONNX file to write.
        options: export options.
        stored_config: the config dict to embed (a checkpoint's ``config``); default: ``task.config``.

    Returns:
        The written file, its metadata and the parity checks.

    Raises:
        ValueError: an option does not apply to the task.
        ParityError: ONNX Runtime does not reproduce PyTorch within the tolerance (nothing is written).
        MissingExportDependencyError: onnx or onnxruntime is not installed.
        FileWriteError: the file cannot be written (disk full, read-only folder; one line naming it).
    """
    onnx = import_onnx()
    import_onnxruntime()
    options = options or ExportOptions()
    start = time.perf_counter()
    samples = collect_sample_images(options.sample) if options.sample else []
    model.eval()
    spec = build_export_spec(task, model, options, samples)
    graph = onnx.load_model_from_string(_trace(spec, options))
    onnx.checker.check_model(graph)
    metadata = _metadata(task, spec, options, stored_config)
    onnx.helper.set_model_props(graph, metadata.to_props())
    checks = run_parity(graph.SerializeToString(), spec, tolerance=options.resolved_tolerance)
    logger.debug("parity with PyTorch (ONNX Runtime, CPU):\n%s", format_parity(checks))  # the CLI prints it
    if not all(check.ok for check in checks):
        raise ParityError(parity_failure_message(checks))
    if spec.detections is not None and not any(check.compared_detections for check in checks):
        logger.warning("no detection scored >= %g on the parity inputs, so only the output shapes were compared; "
                       "pass sample= with images that contain objects the model finds", spec.detections.min_score)
    metadata.parity = [check.as_dict() for check in checks]
    onnx.helper.set_model_props(graph, metadata.to_props())
    path = atomic_write_bytes(graph.SerializeToString(), Path(output))
    seconds = time.perf_counter() - start
    logger.info("exported %s (%s, %s, opset %d, %.1f MB) in %.1f s", path, task.name, spec.output_kind, options.opset,
                path.stat().st_size / 1e6, seconds)
    return ExportResult(path=path, metadata=metadata, parity=checks, seconds=seconds)


def _metadata(task: Task, spec: ExportSpec, options: ExportOptions,
              stored_config: Mapping[str, Any] | None) -> ExportMetadata:
    """The metadata of an export (without the parity results, added once the check passed)."""
    from visiontune.config import config_to_dict

    config = dict(stored_config) if stored_config is not None else config_to_dict(task.config)
    return ExportMetadata(
        task=task.name, config=config, task_meta=json_safe_meta(task.state_for_checkpoint()),
        class_names=spec.class_names, input_name=spec.input_name, input_shape=spec.input_shape(dynamic=options.dynamic),
        input_size=[int(size) for size in spec.example_input.shape[-2:]],
        input_dtype="float16" if options.half else "float32", preprocessing=spec.preprocessing,
        output_names=list(spec.output_names), output_kind=spec.output_kind, exporter=_exporter_description(),
        opset=options.opset, visiontune_version=__version__,
    )


def _trace(spec: ExportSpec, options: ExportOptions) -> bytes:
    """Trace ``spec.module`` with the TorchScript exporter into serialized ONNX."""
    example = spec.example_input.half() if options.half else spec.example_input
    keyword_arguments: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        keyword_arguments["dynamo"] = False
    if options.dynamic:
        keyword_arguments["dynamic_axes"] = spec.dynamic_axes
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings flag Python-level shape arithmetic; the parity check on a second size verifies the result.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The TorchScript exporter is chosen deliberately (see the module docstring); its deprecation notice is noise.
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        # Exporter notes about constant folding and index lowering; parity decides whether the graph is right.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        # torchvision's detection models script a few helpers and copy-construct shape tensors while traced.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"To copy construct from a tensor", category=UserWarning)
        torch.onnx.export(spec.module, (example,), buffer, input_names=[spec.input_name],  # type: ignore[arg-type]
                          output_names=spec.output_names, opset_version=options.opset, do_constant_folding=True,
                          **keyword_arguments)
    return buffer.getvalue()


def cpu_session(model: bytes | str | Path) -> Any:
    """An ONNX Runtime CPU session for a serialized model or a file."""
    ort = import_onnxruntime()
    session_options = ort.SessionOptions()
    session_options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options, providers=["CPUExecutionProvider"])


def run_parity(model: bytes, spec: ExportSpec, *, tolerance: float | Mapping[str, float]) -> list[ParityCheck]:
    """Run the graph (ONNX Runtime, CPU) and the float32 PyTorch module on every parity input and compare.

    Args:
        model: the serialized ONNX model.
        spec: the export recipe (reference module, inputs, output names).
        tolerance: relative tolerance of every output, or one per output name (see
            :func:`visiontune.export.parity.compare_output`).

    Returns:
        One :class:`ParityCheck` per parity input.
    """
    session = cpu_session(model)
    input_type = session.get_inputs()[0].type
    input_dtype = np.float16 if input_type == "tensor(float16)" else np.float32
    checks = []
    for images in spec.parity_inputs:
        with torch.no_grad():
            reference = _as_numpy(spec.reference(images))
        actual = session.run(spec.output_names, {spec.input_name: images.numpy().astype(input_dtype)})
        at_graph_detections = None
        if spec.at_graph_detections is not None:
            with torch.no_grad():
                at_graph_detections = spec.at_graph_detections(images, actual)
        checks.append(compare_outputs(spec.output_names, reference, actual, tolerance=tolerance,
                                      input_shape=images.shape, detections=spec.detections,
                                      at_graph_detections=at_graph_detections))
    return checks


def _as_numpy(outputs: torch.Tensor | Sequence[torch.Tensor]) -> list[np.ndarray]:
    tensors = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    return [tensor.detach().cpu().numpy() for tensor in tensors]


def _exporter_description() -> str:
    import onnx

    return f"torch.onnx TorchScript exporter (torch {torch.__version__}, onnx {onnx.__version__})"
