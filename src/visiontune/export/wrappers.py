"""Export-friendly views of the task models: plain tensors in, a fixed tuple of tensors out.

The visiontune models follow the training contract (``list[dict]`` per image in eval mode); ONNX graphs need a fixed
list of tensors. These wrappers call the models' inference entry points and return tuples, and put the wrapped model
in eval mode (BatchNorm statistics and dropout are frozen into the graph). The wrappers themselves are created in
eval mode: the exporter restores the exported module's mode afterwards, and a wrapper left in train mode would put
the wrapped model back into train mode too.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, cast

import torch
import torch.nn.functional as F
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
        # traced, rows and columns are 0-d tensors, which torch.arange takes like ints
        centre_y = (torch.arange(cast(int, rows), dtype=torch.float32) + 0.5) * step
        centre_x = (torch.arange(cast(int, columns), dtype=torch.float32) + 0.5) * step
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


def resize_like_torchvision(image: Tensor, *, min_size: int, max_size: int,
                            fixed_size: tuple[int, int] | None = None) -> Tensor:
    """Resize as torchvision's ``GeneralizedRCNNTransform`` does in eval mode, with the same output size when traced.

    torchvision computes the size as ``floor(side * min(min_size / short, max_size / long))`` in float64 (Python
    floats) in eager mode, but in float32 when traced, so an exported graph resizes some images to one pixel less
    (e.g. 97x61 -> 95x60 instead of 96x60) and its detections differ. Here the arithmetic is float64 tensor math in both
    modes (1-D tensors: the TorchScript exporter would turn 0-d constants into float32 scalars) and the resize gets
    the explicit size.

    Args:
        image: ``Tensor[3, H, W]`` float (normalised).
        min_size: target of the short side (``transform.min_size[-1]``).
        max_size: bound of the long side.
        fixed_size: ``(width, height)`` to resize to instead (``transform.fixed_size``).

    Returns:
        ``Tensor[3, H', W']``, bilinear (``align_corners=False``).
    """
    height, width = image.shape[-2], image.shape[-1]
    if fixed_size is not None:
        size: list[int | Tensor] = [fixed_size[1], fixed_size[0]]
    else:
        sides = torch.stack([torch.as_tensor(height), torch.as_tensor(width)]).to(torch.float64)
        limits = torch.tensor([min_size, max_size], dtype=torch.float64)
        scale = (limits / torch.stack([sides.min(), sides.max()])).min()
        new_size = torch.floor(sides * scale).to(torch.int64)
        size = [new_size[0], new_size[1]] if torch.jit.is_tracing() else [int(new_size[0]), int(new_size[1])]
    # traced, the sizes are 0-d tensors (a symbolic output size), which F.interpolate takes like ints
    return F.interpolate(image[None], size=cast(list[int], size), mode="bilinear", align_corners=False)[0]


class MaskRCNNExport(nn.Module):
    """A torchvision Mask R-CNN on one image, as a traceable module returning its detections before mask pasting.

    The eval-mode forward of ``GeneralizedRCNN`` (normalise, resize, pad, backbone, RPN, RoI heads, rescale the
    boxes) written out with the model's own components, except for the resize, which uses
    :func:`resize_like_torchvision` so that the graph resizes to the same size as the eager model. NMS is part of the
    graph; pasting the masks into the image is not: the host pastes with
    :func:`~visiontune.models.maskrcnn.paste_masks`, the function the eager model pastes with (torchvision's traced
    paste rounds the paste window differently and moves mask edges by a pixel).

    Input ``image: Tensor[3, H, W]`` float32 RGB in [0, 1]. Outputs for ``N`` detections (sorted by score):
    ``boxes: Tensor[N, 4]`` float32 xyxy pixels of the input, ``labels: Tensor[N]`` int64 (1..K),
    ``scores: Tensor[N]`` float32, ``mask_probabilities: Tensor[N, 1, M, M]`` float32 (M = 28: the mask of each
    detection's label, in the frame of its box).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from torchvision.models.detection.image_list import ImageList
        from torchvision.models.detection.transform import resize_boxes

        transform: Any = self.model.transform  # torchvision's GeneralizedRCNNTransform
        model: Any = self.model
        original_size = (image.shape[-2], image.shape[-1])
        resized = resize_like_torchvision(transform.normalize(image), min_size=transform.min_size[-1],
                                          max_size=transform.max_size, fixed_size=transform.fixed_size)
        batched = transform.batch_images([resized], size_divisible=transform.size_divisible)
        images = ImageList(batched, [(resized.shape[-2], resized.shape[-1])])
        features = model.backbone(images.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = model.rpn(images, features)
        (detection,), _ = model.roi_heads(features, proposals, images.image_sizes)
        boxes = resize_boxes(detection["boxes"], images.image_sizes[0], original_size)
        return boxes, detection["labels"], detection["scores"], detection["masks"]


def mask_probabilities_at(model: nn.Module, image: Tensor, boxes: Tensor, labels: Tensor) -> Tensor:
    """The eager Mask R-CNN's mask probabilities for given detections: its mask head applied at ``boxes``.

    The parity check compares a graph's mask probabilities with these, computed at the graph's own boxes: the mask
    head samples its features in each box's frame, so comparing at PyTorch's boxes would mix the boxes' (separately
    compared) rounding-level differences into the masks.

    Args:
        model: a torchvision Mask R-CNN in eval mode.
        image: ``Tensor[3, H, W]`` float32 RGB in [0, 1].
        boxes: ``Tensor[N, 4]`` float32 xyxy pixels of ``image``.
        labels: ``Tensor[N]`` int64 labels (1..K) whose mask is taken.

    Returns:
        ``Tensor[N, 1, M, M]`` float32 probabilities.
    """
    from torchvision.models.detection.roi_heads import maskrcnn_inference
    from torchvision.models.detection.transform import resize_boxes

    net: Any = model
    images, _ = net.transform([image])
    features = net.backbone(images.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    resized_boxes = resize_boxes(boxes, (image.shape[-2], image.shape[-1]), images.image_sizes[0])
    roi_heads = net.roi_heads
    mask_features = roi_heads.mask_head(roi_heads.mask_roi_pool(features, [resized_boxes], images.image_sizes))
    (probabilities,) = maskrcnn_inference(roi_heads.mask_predictor(mask_features), [labels])
    return probabilities


class MaskRCNNReference(nn.Module):
    """The PyTorch prediction path the Mask R-CNN graph is checked against: ``model([image])``, as a tuple, with the
    mask probabilities the model pasted (taken from its RoI heads) in place of the pasted masks.

    Outputs as :class:`MaskRCNNExport`; the model's pasted masks equal
    ``paste_masks(mask_probabilities, boxes, (H, W))``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        unpasted: list[Tensor] = []

        def keep_mask_probabilities(module: nn.Module, inputs: Any, outputs: Any) -> None:
            unpasted.append(outputs[0][0]["masks"])

        roi_heads = cast(nn.Module, self.model.roi_heads)
        handle = roi_heads.register_forward_hook(keep_mask_probabilities)
        try:
            (detection,) = self.model([image])
        finally:
            handle.remove()
        return detection["boxes"], detection["labels"], detection["scores"], unpasted[0]
