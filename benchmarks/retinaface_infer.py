"""RetinaFace inference speed on CPU: images/s and ms per image, split into network forward and post-processing.

The model is built by the face-detection task (``face`` section defaults: score > 0.02, top 5000, NMS 0.4, keep
750) and timed with its :class:`~visiontune.tasks.face_detection.InferenceTimer` hooks, one image per call, at

* VGA: the photo resized to 640x480;
* test: the VGA frame rescaled as the WIDER FACE test does (short side 1600, long side at most 2160: 2133x1600);
* original: the photo at its own size.

Post-processing time depends on how many priors pass the score threshold, so use trained weights on a real photo
(defaults: ``../shared/fixtures/retinaface/mobilenet0.25_Final.pth`` and ``images/selfie.jpg`` next to the repository
root, when present; random weights otherwise, with a warning).

    python benchmarks/retinaface_infer.py [--model retinaface_mobilenet0.25] [--checkpoint PATH] [--image PATH]
                                          [--threads N] [--repeats 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from visiontune.config import load_config
from visiontune.data.face_geometry import resize_image
from visiontune.data.face_transforms import compute_eval_scale, to_normalized_tensor
from visiontune.data.widerface_dataset import load_bgr_image
from visiontune.tasks import create_task

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "retinaface"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="retinaface_mobilenet0.25",
                        choices=["retinaface_mobilenet0.25", "retinaface_resnet50"])
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained RetinaFace weights")
    parser.add_argument("--image", type=Path, default=None, help="photo to run on")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per size (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per size")
    return parser.parse_args()


def default_inputs(args: argparse.Namespace) -> tuple[Path | None, np.ndarray]:
    """The checkpoint (or None) and a ``uint8 [H, W, 3]`` BGR photo (a smooth random image when none is found)."""
    checkpoint = args.checkpoint
    reference = FIXTURES / "mobilenet0.25_Final.pth"
    if checkpoint is None and args.model == "retinaface_mobilenet0.25" and reference.is_file():
        checkpoint = reference
    image_path = args.image or (FIXTURES / "images" / "selfie.jpg")
    if image_path.is_file():
        return checkpoint, load_bgr_image(image_path)
    generator = np.random.default_rng(0)
    coarse = generator.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    return checkpoint, resize_image(coarse, size=(768, 1024))


def time_size(model: torch.nn.Module, timer, image: torch.Tensor, *, repeats: int, warmup: int) -> dict[str, float]:
    """Median forward / post-processing milliseconds of ``model(image[None])`` and the number of detections."""
    forward, post = [], []
    detections = 0
    with torch.no_grad():
        for call in range(warmup + repeats):
            timer.reset()
            (output,) = model(image[None])
            if call >= warmup:
                forward.append(1e3 * timer.forward_seconds)
                post.append(1e3 * timer.postprocess_seconds)
                detections = len(output["scores"])
    forward_ms, post_ms = statistics.median(forward), statistics.median(post)
    return {"forward_ms": forward_ms, "post_ms": post_ms, "total_ms": forward_ms + post_ms,
            "images_per_s": 1e3 / (forward_ms + post_ms), "detections": detections}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    checkpoint, photo = default_inputs(args)
    overrides = ["task=face_detection", f"model.name={args.model}", "device=cpu"]
    if checkpoint is not None:
        overrides.append(f"model.checkpoint={checkpoint}")
    else:
        print("warning: random weights; post-processing time is not representative of a trained model")
    task = create_task(load_config(None, overrides))
    model = task.build_model().eval()

    vga = resize_image(photo, size=(480, 640))
    scale = compute_eval_scale(480, 640, target_size=task.config.face.target_size, max_size=task.config.face.max_size)
    test = resize_image(vga, size=(round(480 * scale), round(640 * scale)))
    mean = tuple(task.config.face.rgb_mean)
    rows = [("VGA", vga), ("test", test), ("original", photo)]

    print(f"{args.model}, {'trained' if checkpoint else 'random'} weights, CPU, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} calls, batch 1")
    header = (f"{'input':<9} {'size (WxH)':>11} {'forward ms':>11} {'post ms':>9} {'total ms':>9} {'img/s':>7} "
              f"{'faces':>6}")
    print(header)
    print("-" * len(header))
    for name, image in rows:
        result = time_size(model, task.timer, to_normalized_tensor(image, mean), repeats=args.repeats,
                           warmup=args.warmup)
        size = f"{image.shape[1]}x{image.shape[0]}"
        print(f"{name:<9} {size:>11} {result['forward_ms']:>11.1f} {result['post_ms']:>9.2f} "
              f"{result['total_ms']:>9.1f} {result['images_per_s']:>7.2f} {result['detections']:>6d}")


if __name__ == "__main__":
    main()
