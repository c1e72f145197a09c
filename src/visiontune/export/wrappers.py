"""Export-friendly views of the task models: plain tensors in, a fixed tuple of tensors out.

The visiontune models follow the training contract (``list[dict]`` per image in eval mode); ONNX graphs need a fixed
list of tensors. These wrappers call the models' inference entry points and return tuples, and put the wrapped model
in eval mode (BatchNorm statistics and dropout are frozen into the graph). The wrappers themselves are created in
eval mode: the exporter restores the exported module's mode afterwards, and a wrapper left in train mode would put
the wrapped model back into train mode too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visiontune.models.retinaface import BoxCoder, PriorConfig, RetinaFace
from visiontune.models.retinaface.net import NUM_LANDMARK_POINTS


class ClassifierExport(nn.Module):
    """``images -> logits`` (or probabilities) of a :class:`~visiontune.models.classification.ImageClassifier`.

    Args:
        net: the timm network (``ImageClassifier.net``).
        softmax: return softmax probabilities instead of logits.

    Input ``images: Tensor[B, 3, H, W]`` normalised as the eval transform does; output ``Tensor[B, C]`` float32.
    """

    def __init__(self, net: nn.Module, *, softmax: bool = False) -> None:
        super().__init__()
        self.net = net
        self.softmax = softmax
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        logits = self.net(images).float()
        return logits.softmax(dim=1) if self.softmax else logits


class RetinaFaceRawExport(nn.Module):
    """The raw per-prior outputs of a RetinaFace (:meth:`RetinaFace.forward_raw`), as float32.

    Input ``images: Tensor[B, 3, H, W]`` BGR, 0-255 minus the BGR mean. Outputs, priors ordered as
    :func:`~visiontune.models.retinaface.priors.generate_priors` for ``(H, W)``:
    ``loc: Tensor[B, P, 4]`` box deltas, ``conf: Tensor[B, P, C]`` softmax scores (column 0 background),
    ``landmarks: Tensor[B, P, 10]`` landmark deltas.
    """

    def __init__(self, model: RetinaFace) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        box_deltas, class_scores, landmark_deltas = self.model.forward_raw(images)
        return box_deltas.float(), class_scores.float(), landmark_deltas.float()


def prior_grid_pixels(height: int | Tensor, width: int | Tensor, config: PriorConfig) -> Tensor:
    """RetinaFace priors in pixels, built from tensor operations so that a traced graph keeps ``height, width``
    symbolic (one exported graph serves every input size).

    Equals :func:`~visiontune.models.retinaface.priors.generate_priors` multiplied by ``(W, H, W, H)``.

    Args:
        height: input height in pixels (an int, or a traced size).
        width: input width in pixels.
        config: prior layout; ``clip`` clamps centres to the image and sizes to its width / height.

    Returns:
        ``Tensor[P, 4]`` float32 ``(cx, cy, w, h)`` in pixels; order level, row, column, min size.
    """
    levels = []
    for step, min_sizes in zip(config.steps, config.min_sizes):
        rows = (height + step - 1) // step  # ceil(height / step) in integer arithmetic
        columns = (width + step - 1) // step
        centre_y = (torch.arange(rows, dtype=torch.float32) + 0.5) * step
        centre_x = (torch.arange(columns, dtype=torch.float32) + 0.5) * step
        sizes = torch.tensor(min_sizes, dtype=torch.float32)
        grid_y, grid_x, grid_size = torch.meshgrid(centre_y, centre_x, sizes, indexing="ij")
        levels.append(torch.stack([grid_x, grid_y, grid_size, grid_size], dim=-1).reshape(-1, 4))
    priors = torch.cat(levels, dim=0)
    if config.clip:
        limits = torch.stack([torch.as_tensor(width), torch.as_tensor(height)]).to(torch.float32)
        centres = torch.minimum(priors[:, :2].clamp(min=0.0), limits)
        sizes = torch.minimum(priors[:, 2:].clamp(min=0.0), limits)
        priors = torch.cat([centres, sizes], dim=1)
    return priors


class RetinaFaceDecodedExport(nn.Module):
    """RetinaFace with prior decoding inside the graph: boxes, face scores and landmarks in input pixels.

    Decoding is done in pixel units (prior centres and sizes in pixels), which is the normalised decoding of
    :class:`~visiontune.models.retinaface.box_coder.BoxCoder` multiplied by the image size. Score thresholding,
    top-k and NMS stay outside the graph.

    Input ``images: Tensor[B, 3, H, W]`` BGR, 0-255 minus the BGR mean. Outputs (float32, one row per prior):
    ``boxes: Tensor[B, P, 4]`` xyxy pixels of the input, ``scores: Tensor[B, P]`` face probability,
    ``landmarks: Tensor[B, P, 10]`` ``(x0, y0, ..., x4, y4)`` pixels.

    Args:
        model: a two-class (background, face) RetinaFace.
        box_coder: the variances used in training (``model.loss.box_coder``).

    Raises:
        ValueError: the model has more than one foreground class.
    """

    def __init__(self, model: RetinaFace, box_coder: BoxCoder) -> None:
        super().__init__()
        if model.num_classes != 2:
            raise ValueError(f"decode=true exports face scores and needs a 2-class RetinaFace (background, face); "
                             f"this model has num_classes={model.num_classes}")
        self.model = model
        self.centre_variance, self.size_variance = (float(value) for value in box_coder.variances)
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        box_deltas, class_scores, landmark_deltas = (output.float() for output in self.model.forward_raw(images))
        priors = prior_grid_pixels(images.shape[-2], images.shape[-1], self.model.prior_config)
        prior_centres, prior_sizes = priors[:, :2], priors[:, 2:]
        centres = prior_centres + box_deltas[..., :2] * self.centre_variance * prior_sizes
        sizes = prior_sizes * torch.exp(box_deltas[..., 2:] * self.size_variance)
        top_left = centres - sizes / 2
        boxes = torch.cat([top_left, top_left + sizes], dim=-1)
        points = landmark_deltas.unflatten(-1, (NUM_LANDMARK_POINTS, 2))
        landmarks = prior_centres[:, None] + points * self.centre_variance * prior_sizes[:, None]
        return boxes, class_scores[..., 1], landmarks.flatten(start_dim=-2)


class MaskRCNNExport(nn.Module):
    """A torchvision Mask R-CNN on one image, returning its detections as a tuple.

    Resizing to ``min_size`` / ``max_size``, normalisation, NMS and mask pasting are part of the graph (torchvision's
    traceable inference path).

    Input ``image: Tensor[3, H, W]`` float32 RGB in [0, 1]. Outputs for ``N`` detections (sorted by score):
    ``boxes: Tensor[N, 4]`` float32 xyxy pixels of the input, ``labels: Tensor[N]`` int64 (1..K),
    ``scores: Tensor[N]`` float32, ``masks: Tensor[N, 1, H, W]`` float32 probabilities.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        (detections,) = self.model([image])
        return detections["boxes"], detections["labels"], detections["scores"], detections["masks"]
