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
    """Dropout before the classifier (timm ``drop_rate``)."""
    drop_path_rate: float | None = None
    """Stochastic depth rate (timm ``drop_path_rate``); ``null``: the model's default."""
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
    """Validation split, as ``train_split``; ``null``: no validation."""
    images_dir: str = "images"
    """``list``/``retinaface``/``official``/``coco`` formats: image folder relative to ``root``."""
    val_images_dir: str | None = None
    """Image folder of the validation split when it differs from ``images_dir``."""
    image_ext: str = ".jpg"
    """``list`` format: the suffix added to each image id (``images_dir / (id + image_ext)``)."""
    categories: list[str] | None = None
    """Instance segmentation: keep only these COCO category names (remapped to 1..K)."""
    empty_images: Literal["keep", "drop"] = "keep"
    """Instance segmentation: training images without annotations are kept or dropped."""
    on_corrupt: Literal["error", "skip"] = "error"
    """An unreadable image: stop with an error naming it, or skip it with a warning."""

    image_size: int = 224
    """Classification: input size in pixels (square)."""
    crop_pct: float | None = None
    """Evaluation: resize to ``image_size / crop_pct``, then center-crop; ``null``: the model's pretrained value."""
    interpolation: str = "bilinear"
    mean: list[float] | None = None
    """Normalisation mean (RGB, 0..1); ``null``: the model's pretrained value."""
    std: list[float] | None = None
    """Normalisation standard deviation (RGB, 0..1); ``null``: the model's pretrained value."""
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Training: area range of the random resized crop."""
    ratio: list[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    """Training: aspect-ratio range of the random resized crop."""
    hflip: float = 0.5
    """Training: probability of a horizontal flip."""
    vflip: float = 0.0
    """Training: probability of a vertical flip."""
    auto_augment: str | None = None
    """timm auto-augment string (``rand-m7-mstd0.5`` RandAugment, ``original``/``v0``/``3a`` AutoAugment,
    ``augmix-m5``) or ``trivialaugment`` (torchvision's TrivialAugmentWide)."""
    color_jitter: float | None = 0.4
    """Training: color jitter strength; ``null`` or 0: none."""
    reprob: float = 0.0
    """Training: random erasing probability (timm ``re_prob``)."""
    remode: str = "pixel"
    """Random erasing fill mode (timm ``re_mode``: ``const``, ``rand``, ``pixel``)."""
    mixup: float = 0.0
    """Mixup alpha; 0: off."""
    cutmix: float = 0.0
    """CutMix alpha; 0: off."""
    mixup_prob: float = 1.0
    """Probability of applying mixup or CutMix to a batch."""
    mixup_switch_prob: float = 0.5
    """Probability of CutMix instead of mixup when both are on."""
    label_smoothing: float = 0.0
    """Classification: label smoothing of the training loss."""

    batch_size: int = 32
    """Images per batch per process (the global batch is ``batch_size * processes * train.accumulate``)."""
    eval_batch_size: int | None = None
    """Images per evaluation batch; ``null``: ``batch_size``."""
    num_workers: int = 2
    """DataLoader worker processes per process (0: load in the main process)."""
    pin_memory: bool = True
    """DataLoader ``pin_memory``."""
    persistent_workers: bool = True
    """Keep the DataLoader workers alive between epochs (with ``num_workers > 0``)."""


@dataclass
class FinetuneConfig:
    """Which layers train and at which learning rate."""

    freeze: Any = "none"
    """``none`` | ``backbone`` (linear probe) | ``{first_n: N}`` (or the string ``first_n:N``) | a list of
    regular expressions matched against parameter names."""
    unfreeze_at_epoch: int | None = None
    """Gradual unfreezing: from this epoch (0-based) on, every layer trains."""
    head_lr_mult: float = 1.0
    """Learning-rate multiplier of the classifier / detection heads."""
    lr_mults: dict[str, float] = field(default_factory=dict)
    """``{regex: multiplier}``; the first matching regex wins."""
    layer_decay: float | None = None
    """timm layer-wise LR decay: layer ``i`` of ``L`` gets ``layer_decay ** (L - i)``."""
    no_weight_decay_norm_bias: bool = True
    """No weight decay on normalisation weights and biases."""
    trainable_backbone_layers: int | None = None
    """Instance segmentation: number of trainable ResNet stages (0-5), as torchvision."""


@dataclass
class OptimConfig:
    """Optimizer (any name accepted by ``timm.optim.create_optimizer_v2``)."""

    name: str = "sgd"
    """Optimizer name (``sgd``, ``adamw``, ``lamb``, ... as timm)."""
    lr: float = 0.01
    """Peak learning rate (after warmup; see ``lr_scale``)."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = False
    """SGD: Nesterov momentum."""
    weight_decay: float = 1e-4
    """Weight decay (see ``finetune.no_weight_decay_norm_bias``)."""
    betas: list[float] | None = None
    """Adam-type betas; ``null``: the optimizer's default."""
    eps: float | None = None
    """Optimizer epsilon; ``null``: the optimizer's default."""
    lr_scale: Literal["none", "linear", "sqrt"] = "none"
    """Scale ``lr`` with the global batch size relative to ``lr_base_batch_size``."""
    lr_base_batch_size: int = 256
    """The global batch size at which ``lr`` applies unscaled."""


@dataclass
class SchedConfig:
    """Learning-rate schedule, stepped every optimizer step."""

    name: Literal["cosine", "step", "multistep", "constant"] = "cosine"
    """Schedule after warmup."""
    warmup_epochs: float = 0.0
    """Linear warmup length in epochs (fractions allowed)."""
    warmup_factor: float = 0.1
    """LR at the start of warmup, as a fraction of the target LR."""
    min_lr: float = 0.0
    """``cosine``: the final learning rate."""
    step_size: float = 30.0
    """``step``: epochs between decays."""
    gamma: float = 0.1
    """``step`` / ``multistep``: the factor of each decay."""
    milestones: list[float] = field(default_factory=list)
    """``multistep``: epochs at which the LR is multiplied by ``gamma`` (RetinaFace decay1/decay2)."""


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 10
    """Training epochs."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (for smoke tests)."""
    accumulate: int = 1
    """Gradient accumulation: batches per optimizer step."""
    clip_grad: float | None = None
    """Clip the gradient norm to this value; ``null``: no clipping."""
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """``auto``: bf16 (or fp16) on CUDA, off on CPU."""
    channels_last: bool = False
    """Channels-last memory format (faster convolutions on recent GPUs)."""
    compile: bool = False
    """``torch.compile`` the model."""
    sync_bn: bool = False
    """Distributed: convert BatchNorm to SyncBatchNorm (CUDA only)."""
    ema: bool = False
    """Keep an exponential moving average of the weights (evaluated and saved too)."""
    ema_decay: float = 0.9998
    """EMA decay per optimizer step."""
    eval_every: int = 1
    """Evaluate every this many epochs."""
    eval_before: bool | None = None
    """Evaluate the model before the first step (the pretrained baseline): the epoch-0 row of ``metrics.csv``, the
    "baseline" of ``summary.json``, and the first candidate for ``best.pt`` (a fine-tuned epoch must beat it).
    Not repeated when a run that has it resumes. ``null``: on when ``data.val_split`` is set. With
    ``train.epochs=0`` a run only measures the baseline and writes ``best.pt`` / ``last.pt`` of the unchanged
    model."""
    metric: str | None = None
    """Metric that picks ``best.pt`` and drives early stopping (default: the task's)."""
    metric_mode: Literal["max", "min"] | None = None
    """Whether ``metric`` improves upwards or downwards; ``null``: the task's."""
    patience: int | None = None
    """Early stopping: evaluations without improvement before stopping."""
    time_budget: float | None = None
    """Minutes; training stops (with a checkpoint) after the epoch that exceeds it."""
    nan_policy: Literal["error", "skip"] = "error"
    """A non-finite loss: stop with an error, or skip the step."""
    save_every_steps: int = 0
    """Also write ``step_<N>.pt`` every this many optimizer steps (mid-epoch resumes); 0: off."""
    keep_last: int = 3
    """The newest ``step_<N>.pt`` files to keep (``save_every_steps``)."""
    auto_resume: bool = False
    """Resume from the run's ``last.pt`` when it exists (restarts after a crash or preemption)."""
    deterministic: bool = False
    """Deterministic algorithms (slower; bitwise-reproducible runs on one device)."""
    log_every: int = 20
    progress: bool = True
    """Show progress bars."""
    tensorboard: bool = False
    """Write TensorBoard logs to the run directory (needs ``tensorboard``)."""
    plots: bool = True
    """Write training curves and evaluation plots to the run directory."""


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
    wider_boxes: Literal["int", "decimal"] = "int"
    """Boxes in WIDER evaluation and prediction files: ``int`` writes each box as whole pixels the way the reference
    tools do (``x = int(x1)``, ``w = int(x2) - int(x1)``; the published AP was computed so), ``decimal`` keeps the
    decimal boxes."""


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
class ExportConfig:
    """``visiontune export``: write ``checkpoint`` as ONNX to ``output`` (default: the checkpoint's path with suffix
    ``.onnx``), checked against PyTorch with ONNX Runtime."""

    format: str = "onnx"
    """Export format (only ``onnx``)."""
    dynamic: bool = True
    """Dynamic batch size (and image height / width for the detectors); ``false`` fixes every axis to the example
    input's."""
    opset: int = 17
    """ONNX opset of the default domain (at least 11)."""
    half: bool = False
    """float16 weights and input (outputs stay float32), checked against the float32 model."""
    softmax: bool = False
    """Classification: output softmax probabilities instead of logits."""
    decode: bool = False
    """Face detection: boxes, scores and landmarks in pixels instead of the raw head outputs (NMS stays outside)."""
    tolerance: float | None = None
    """Parity tolerance relative to each output's scale; ``null``: 1e-3 (float32) or 2e-2 (``half``)."""
    input_size: list[int] | str | None = None
    """Detection tasks: the example input, ``HxW`` (``480x640``), ``[H, W]`` or one number for a square;
    ``null``: 480x640. Classification always uses ``data.image_size``."""
    sample: str | None = None
    """An image or a folder of images for the parity check; ``null``: synthetic images."""


@dataclass
class ConvertConfig:
    """``visiontune convert IN OUT`` (MindSpore ``.ckpt`` <-> PyTorch weights) and ``visiontune import-config``."""

    arch: str | None = None
    """Architecture of the weights: ``mobilenet_v2_100``, ``mobilenet_v3_small_100``, ``mobilenet_v3_large_100``,
    ``resnet50``, ``convnext_tiny``, ``retinaface_mobilenet025``, ``retinaface_resnet50`` (timm names work).
    Required from MindSpore; to MindSpore the default is the checkpoint's ``model.name``."""
    to: Literal["pytorch", "mindspore"] | None = None
    """Direction; ``null``: ``mindspore`` when the output ends with ``.ckpt``, else ``pytorch``."""
    ema: bool = False
    """To MindSpore: export the checkpoint's EMA weights instead of the raw ones."""
    list_all: bool = False
    """Print every renamed tensor (default: the first few)."""
    family: Literal["mindface", "mindcv"] | None = None
    """``import-config``: the family of the MindSpore config; ``null``: detected from its keys."""


@dataclass
class Config:
    """Everything a run needs. Saved as ``config.yaml`` in the run directory and inside every checkpoint."""

    task: str = "classification"
    """``classification``, ``face_detection`` or ``instance_segmentation``."""
    name: str = "exp"
    """Run name (the run folder ``<project>/<task>/<name>``)."""
    project: str = "runs"
    """Runs are written to ``<project>/<task>/<name>[-N]``."""
    seed: int = 42
    """Random seed (each process adds its rank)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    checkpoint: str | None = None
    """``eval`` / ``predict`` / ``export``: the visiontune checkpoint to use (``best.pt``). ``predict`` also takes an
    exported ``.onnx`` model (run with ONNX Runtime, on the CPU unless ``device`` is given)."""
    source: str | None = None
    """``predict``: an image, a folder, or a list/CSV file of images."""
    output: str | None = None
    """``eval`` / ``predict``: the results folder (default: next to the checkpoint / a new run folder);
    ``export``: the ``.onnx`` file (default: the checkpoint's path with suffix ``.onnx``)."""
    resume: Any = None
    """``true`` (newest run of this task and name) or a checkpoint path."""
    topk: int = 5
    """Classification: labels per image written by ``predict``."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
