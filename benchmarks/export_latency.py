"""Latency of each task's default model on CPU: PyTorch eager vs the exported ONNX graph in ONNX Runtime.

For every task the model is built by the task from its config, exported with ``visiontune.export.export_model``
(which runs the usual parity check and prints it) and timed on the same input, one image per call:

* classification: ``mobilenetv3_small_100`` at 224x224 (1000 classes, random weights: latency does not depend on
  them);
* face detection: ``retinaface_mobilenet0.25`` on a 640x480 photo (raw head outputs; the reference weights
  ``../shared/fixtures/retinaface/mobilenet0.25_Final.pth`` when present);
* instance segmentation: ``maskrcnn_resnet50_fpn`` on a 640x480 image with ``min_size=480, max_size=640`` (random
  weights; the graph includes resizing and NMS and returns 28x28 mask probabilities, which are pasted into the image
  on the host with the PyTorch model's paste; the ONNX Runtime time includes that paste, and every time depends on
  the number of detections, which is printed).

Both runtimes use the same number of threads. The median of ``--repeats`` calls after ``--warmup`` calls is reported,
with the ratio PyTorch / ONNX Runtime (above 1: ONNX Runtime is faster). On a machine shared with other processes use
``--threads 1``: PyTorch's OpenMP threads slow down far more than ONNX Runtime's under contention, which inflates the
ratio.

    python benchmarks/export_latency.py [--tasks classification face_detection instance_segmentation]
                                        [--threads N] [--repeats 20] [--warmup 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from visiontune.config import load_config
from visiontune.export.exporter import export_model
from visiontune.export.options import ExportOptions
from visiontune.export.specs import build_export_spec
from visiontune.models.maskrcnn import paste_masks
from visiontune.tasks import create_task

REPO = Path(__file__).resolve().parents[1]
RETINAFACE_WEIGHTS = REPO.parent / "shared" / "fixtures" / "retinaface" / "mobilenet0.25_Final.pth"
SELFIE = RETINAFACE_WEIGHTS.parent / "images" / "selfie.jpg"

TASK_OVERRIDES: dict[str, list[str]] = {
    "classification": ["task=classification", "model.name=mobilenetv3_small_100", "model.num_classes=1000",
                       "data.image_size=224"],
    "face_detection": ["task=face_detection", "model.name=retinaface_mobilenet0.25"],
    "instance_segmentation": ["task=instance_segmentation", "model.name=maskrcnn_resnet50_fpn", "model.init=none",
                              "segmentation.min_size=480", "segmentation.max_size=640"],
}
"""Config overrides of each task's default model."""


@dataclass
class Timing:
    task: str
    model: str
    input_shape: tuple[int, ...]
    torch_ms: float
    onnx_ms: float
    note: str = ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASK_OVERRIDES), choices=list(TASK_OVERRIDES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads of both runtimes")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per runtime (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per runtime")
    return parser.parse_args()


def median_ms(function: Callable[[], object], *, repeats: int, warmup: int) -> float:
    """Median wall time of ``function()`` in milliseconds."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def build(task_name: str):
    """The task and its model (eval mode), and the export options."""
    overrides = list(TASK_OVERRIDES[task_name])
    if task_name == "face_detection" and RETINAFACE_WEIGHTS.is_file():
        overrides.append(f"model.checkpoint={RETINAFACE_WEIGHTS}")
    config = load_config(None, [*overrides, "train.progress=false"])
    task = create_task(config)
    if task_name == "classification":
        task.meta["class_names"] = [f"class_{index}" for index in range(1000)]
    if task_name == "instance_segmentation":  # COCO's 80 categories (names do not matter for latency)
        task.meta["class_names"] = [f"category_{index}" for index in range(1, 81)]
        task.meta["label_to_category"] = [{"label": index, "id": index, "name": f"category_{index}"}
                                          for index in range(1, 81)]
    model = task.build_model(load_weights=task_name == "face_detection").eval()
    sample = str(SELFIE) if task_name != "classification" and SELFIE.is_file() else None
    options = ExportOptions(input_size=(480, 640) if task_name != "classification" else None, sample=sample)
    return task, model, options


def benchmark(task_name: str, *, threads: int, repeats: int, warmup: int, folder: Path) -> Timing:
    import onnxruntime as ort

    task, model, options = build(task_name)
    result = export_model(task, model, folder / f"{task_name}.onnx", options=options)
    print(f"\n{task_name}: parity of the export\n{result.parity_table()}")
    spec = build_export_spec(task, model, options, [Path(options.sample)] if options.sample else [])
    image = spec.example_input
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(result.path), sess_options=session_options, providers=["CPUExecutionProvider"])
    feed = {spec.input_name: image.numpy()}
    with torch.no_grad():
        torch_ms = median_ms(lambda: spec.reference(image), repeats=repeats, warmup=warmup)
        outputs = spec.reference(image)
    onnx_ms = median_ms(lambda: run_onnx(session, feed, task_name, tuple(image.shape[-2:])), repeats=repeats,
                        warmup=warmup)
    note = f"{len(outputs[0])} detections" if task_name == "instance_segmentation" else ""
    return Timing(task_name, task.config.model.name, tuple(image.shape), torch_ms, onnx_ms, note)


def run_onnx(session, feed: dict, task_name: str, image_size: tuple[int, int]) -> list:
    """One ONNX Runtime call, and for Mask R-CNN the host-side mask paste that prediction does after it."""
    outputs = session.run(None, feed)
    if task_name == "instance_segmentation":
        boxes, _, _, mask_probabilities = (torch.from_numpy(array) for array in outputs)
        outputs[3] = paste_masks(mask_probabilities, boxes, image_size).numpy()
    return outputs


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    timings = []
    with tempfile.TemporaryDirectory() as folder:
        for task_name in args.tasks:
            timings.append(benchmark(task_name, threads=args.threads, repeats=args.repeats, warmup=args.warmup,
                                     folder=Path(folder)))
    print(f"\nCPU latency, one image per call, {args.threads} threads, median of {args.repeats} "
          f"(torch {torch.__version__}):")
    print(f"{'task':<22} {'model':<26} {'input':<16} {'PyTorch ms':>11} {'ORT ms':>9} {'PyTorch/ORT':>12}  note")
    for timing in timings:
        shape = "x".join(str(size) for size in timing.input_shape)
        print(f"{timing.task:<22} {timing.model:<26} {shape:<16} {timing.torch_ms:>11.1f} {timing.onnx_ms:>9.1f} "
              f"{timing.torch_ms / timing.onnx_ms:>11.2f}x  {timing.note}")


if __name__ == "__main__":
    main()
