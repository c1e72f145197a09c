"""The typed configuration schema shared by every task.

One YAML file maps onto :class:`Config`; each top-level section is a dataclass. Unknown keys and wrong
types are errors (see :mod:`visiontune.config.loader`). Task-specific settings live in their own section
(``face``, ``segmentation``) so that one schema serves all tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ModelConfig:
    """Which network to build and where its initial weights come from."""

    name: str = "mobilenetv3_small_100"
    """Classification: any timm model name. Face detection: ``retinaface_mobilenet0.25`` or
    ``retinaface_resnet50``. Instance segmentation: ``maskrcnn_resnet50_fpn`` or ``maskrcnn_resnet50_fpn_v2``."""
    pretrained: bool = False
    """Download the library's pretrained weights (timm/torchvision hub). Needs network access."""
    checkpoint: str | None = None
    """Local weights: ``.pth``/``.pt`` (state dict, or dict with ``state_dict``/``model``/``model_ema``),
    ``.safetensors``, or a MindSpore ``.ckpt``."""
    checkpoint_key: str | None = None
    """Which entry of a checkpoint dict holds the weights (default: first of state_dict, model, model_ema)."""
    backbone_checkpoint: str | None = None
    """Detection tasks: ImageNet weights for the backbone only."""
    init: Literal["coco", "backbone", "none"] = "none"
    """Instance segmentation: detector initialisation."""
    num_classes: int | None = None
    """Number of output classes; ``None`` takes it from the training data."""
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    min_loaded_fraction: float = 0.9
    """Fail when fewer than this fraction of the non-head tensors could be loaded from the checkpoint."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the model factory."""


@dataclass
class DataConfig:
    """Where the data is, how it is read, augmented and batched."""

    format: str = "folder"
    """Classification: ``folder`` (ImageFolder), ``list`` (``<id> <label words>`` lines), ``csv``
    (``path,label``). Face detection: ``retinaface`` (label.txt), ``official`` (wider_face_*_bbx_gt.txt).
    Instance segmentation: ``coco``."""
    root: str | None = None
    train_split: str = "train"
    """Folder (``folder`` format) or annotation file relative to ``root`` (other formats)."""
    val_split: str | None = "val"
    images_dir: str = "images"
    """``list``/``retinaface``/``official``/``coco`` formats: image folder relative to ``root``."""
    val_images_dir: str | None = None
    """Image folder of the validation split when it differs from ``images_dir``."""
    image_ext: str = ".jpg"
    categories: list[str] | None = None
    """Instance segmentation: keep only these COCO category names (remapped to 1..K)."""
    empty_images: Literal["keep", "drop"] = "keep"
    on_corrupt: Literal["error", "skip"] = "error"

    image_size: int = 224
    crop_pct: float | None = None
    interpolation: str = "bilinear"
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    hflip: float = 0.5
    vflip: float = 0.0
    auto_augment: str | None = None
    """timm auto-augment string (``rand-m7-mstd0.5`` RandAugment, ``original``/``v0``/``3a`` AutoAugment,
    ``augmix-m5``) or ``trivialaugment`` (torchvision's TrivialAugmentWide)."""
    color_jitter: float | None = 0.4
    reprob: float = 0.0
    remode: str = "pixel"
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.0

    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True


@dataclass
class FinetuneConfig:
    """Which layers train and at which learning rate."""

    freeze: Any = "none"
    """``none`` | ``backbone`` (linear probe) | ``{first_n: N}`` (or the string ``first_n:N``) | a list of
    regular expressions matched against parameter names."""
    unfreeze_at_epoch: int | None = None
    """Gradual unfreezing: from this epoch (0-based) on, every layer trains."""
    head_lr_mult: float = 1.0
    lr_mults: dict[str, float] = field(default_factory=dict)
    """``{regex: multiplier}``; the first matching regex wins."""
    layer_decay: float | None = None
    """timm layer-wise LR decay: layer ``i`` of ``L`` gets ``layer_decay ** (L - i)``."""
    no_weight_decay_norm_bias: bool = True
    trainable_backbone_layers: int | None = None
    """Instance segmentation: number of trainable ResNet stages (0-5), as torchvision."""


@dataclass
class OptimConfig:
    """Optimizer (any name accepted by ``timm.optim.create_optimizer_v2``)."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: list[float] | None = None
    eps: float | None = None
    lr_scale: Literal["none", "linear", "sqrt"] = "none"
    """Scale ``lr`` with the global batch size relative to ``lr_base_batch_size``."""
    lr_base_batch_size: int = 256


@dataclass
class SchedConfig:
    """Learning-rate schedule, stepped every optimizer step."""

    name: Literal["cosine", "step", "multistep", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.1
    """LR at the start of warmup, as a fraction of the target LR."""
    min_lr: float = 0.0
    step_size: float = 30.0
    """``step``: epochs between decays."""
    gamma: float = 0.1
    milestones: list[float] = field(default_factory=list)
    """``multistep``: epochs at which the LR is multiplied by ``gamma`` (RetinaFace decay1/decay2)."""


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10
    max_steps: int | None = None
    """Stop after this many optimizer steps (for smoke tests)."""
    accumulate: int = 1
    clip_grad: float | None = None
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """``auto``: bf16 (or fp16) on CUDA, off on CPU."""
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    ema: bool = False
    ema_decay: float = 0.9998
    eval_every: int = 1
    metric: str | None = None
    """Metric that picks ``best.pt`` and drives early stopping (default: the task's)."""
    metric_mode: Literal["max", "min"] | None = None
    patience: int | None = None
    """Early stopping: evaluations without improvement before stopping."""
    time_budget: float | None = None
    """Minutes; training stops (with a checkpoint) after the epoch that exceeds it."""
    nan_policy: Literal["error", "skip"] = "error"
    save_every_steps: int = 0
    keep_last: int = 3
    auto_resume: bool = False
    deterministic: bool = False
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = False
    plots: bool = True


@dataclass
class FaceConfig:
    """RetinaFace settings (task ``face_detection``)."""

    min_sizes: list[list[int]] = field(default_factory=lambda: [[16, 32], [64, 128], [256, 512]])
    steps: list[int] = field(default_factory=lambda: [8, 16, 32])
    variance: list[float] = field(default_factory=lambda: [0.1, 0.2])
    clip: bool = False
    match_thresh: float = 0.35
    neg_pos_ratio: int = 7
    loc_weight: float = 2.0
    class_weight: float = 1.0
    landm_weight: float = 1.0
    in_channel: int | None = None
    out_channel: int | None = None
    rgb_mean: list[float] = field(default_factory=lambda: [104.0, 117.0, 123.0])
    conf_thresh: float = 0.02
    top_k: int = 5000
    nms_thresh: float = 0.4
    keep_top_k: int = 750
    origin_size: bool = True
    target_size: int = 1600
    max_size: int = 2160
    vis_thresh: float = 0.5
    gt_dir: str | None = None
    """Folder with the official ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``."""


@dataclass
class SegmentationConfig:
    """Mask R-CNN settings (task ``instance_segmentation``)."""

    min_size: int = 800
    max_size: int = 1333
    box_score_thresh: float = 0.05
    detections_per_img: int = 100
    mask_thresh: float = 0.5
    vis_thresh: float = 0.5
    aspect_ratio_grouping: bool = True


@dataclass
class Config:
    """Everything a run needs. Saved as ``config.yaml`` in the run directory and inside every checkpoint."""

    task: str = "classification"
    name: str = "exp"
    project: str = "runs"
    """Runs are written to ``<project>/<task>/<name>[-N]``."""
    seed: int = 42
    device: str = "auto"
    checkpoint: str | None = None
    """``eval`` / ``predict`` / ``export``: the visiontune checkpoint to use."""
    source: str | None = None
    """``predict``: an image, a folder, or a list/CSV file of images."""
    output: str | None = None
    """``eval`` / ``predict`` / ``export``: where to write results (default: next to the checkpoint)."""
    resume: Any = None
    """``true`` (newest run of this task and name) or a checkpoint path."""
    topk: int = 5
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
