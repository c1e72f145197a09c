"""The typed configuration schema shared by every task.

One YAML file maps onto :class:`Config`; each top-level section is a dataclass. Unknown keys and wrong
types are errors (see :mod:`visiontune.config.loader`). Task-specific settings live in their own section
(``face``, ``segmentation``) so that one schema serves all tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from visiontune.config.constraints import AtLeastOne, Fraction, NonNegative, Pattern, Positive, Range

# Value ranges are declared on the fields (``Annotated[float, Positive]``); the loader checks them and
# ``visiontune config keys`` shows them. Non-finite floats are refused in every field (see ``constraints``).

MAX_IMAGE_SIZE = 8192
"""The largest ``data.image_size`` (pixels): larger inputs need more memory than any machine has."""
MAX_SEED = 2**31 - 1
"""The largest ``seed`` (each process adds its rank; NumPy takes seeds below 2**32)."""
DEVICE = Pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:N or mps")
"""The devices ``device`` accepts (what :func:`torch.device` understands, checked without importing torch)."""


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
    num_classes: Annotated[int | None, AtLeastOne] = None
    """Number of output classes; ``None`` takes it from the training data."""
    drop_rate: Annotated[float, Fraction] = 0.0
    """Dropout before the classifier (timm ``drop_rate``)."""
    drop_path_rate: Annotated[float | None, Fraction] = None
    """Stochastic depth rate (timm ``drop_path_rate``); ``null``: the model's default."""
    min_loaded_fraction: Annotated[float, Fraction] = 0.9
    """Fail when fewer than this fraction of the non-head tensors could be loaded from the checkpoint."""
    mindspore_padding: bool = True
    """Classification from MindCV weights (a ``.ckpt``, or a ``.safetensors`` written by ``visiontune convert``):
    give strided depthwise convolutions MindSpore's ``pad_mode="same"`` padding (MobileNetV3), so the model computes
    what MindSpore computes; recorded in the checkpoints' ``meta``. ``false`` keeps timm's symmetric padding."""
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
    test_split: str | None = None
    """Test split, as ``val_split``; ``null``: none. When set, training evaluates ``best.pt`` on it once at the end:
    the headline of ``summary.json`` (``test``) and of the before/after table, as the best epoch was selected on the
    validation split (an optimistic estimate of it)."""
    test_images_dir: str | None = None
    """Image folder of the test split when it differs from ``images_dir`` (``list``/``retinaface``/``official``/
    ``coco`` formats)."""
    image_ext: str = ".jpg"
    """``list`` format: the suffix added to each image id (``images_dir / (id + image_ext)``)."""
    categories: list[str] | None = None
    """Instance segmentation: keep only these COCO category names (remapped to 1..K)."""
    empty_images: Literal["keep", "drop"] = "keep"
    """Instance segmentation: training images without annotations are kept or dropped."""
    on_corrupt: Literal["error", "skip"] = "error"
    """An unreadable image: stop with an error naming it, or skip it with a warning."""
    duplicates: bool = True
    """``check-data`` and ``train`` look for duplicate images within and across the splits: exact (same SHA-1 of the
    bytes) and near (pHash within 8 of 64 bits: resized or re-encoded copies); hashes are cached in
    ``<project>/.cache/image_hashes.json``. ``false``: not looked for."""
    sampler: Literal["random", "balanced", "repeat_factor"] = "random"
    """Training order. ``random``: a permutation per epoch. ``balanced`` (classification): draws with replacement,
    weights inversely proportional to the class frequency, same epoch length. ``repeat_factor`` (detection,
    segmentation): LVIS repeat-factor sampling, an image repeats ``max(1, sqrt(data.repeat_thresh / f(c)))`` times
    for its rarest category ``c`` (``f``: fraction of training images holding ``c``), rounded stochastically per
    epoch. Every rank takes its share of one draw seeded by ``seed`` and the epoch; resumes continue mid-epoch."""
    repeat_thresh: Annotated[float, Range(0, 1, low_open=True)] = 0.001
    """``data.sampler=repeat_factor``: categories in fewer than this fraction of the training images repeat."""

    image_size: Annotated[int, Range(1, MAX_IMAGE_SIZE)] = 224
    """Classification: input size in pixels (square)."""
    crop_pct: Annotated[float | None, Range(0, 1, low_open=True)] = None
    """Evaluation: resize to ``image_size / crop_pct``, then center-crop; ``null``: the model's pretrained value."""
    interpolation: str = "bilinear"
    mean: Annotated[list[float] | None, Range(0, 1, length=3)] = None
    """Normalisation mean (RGB, 0..1); ``null``: the model's pretrained value."""
    std: Annotated[list[float] | None, Range(0, 1, low_open=True, length=3)] = None
    """Normalisation standard deviation (RGB, 0..1); ``null``: the model's pretrained value."""
    scale: Annotated[list[float], Range(0, 1, low_open=True, length=2, increasing=True)] = field(
        default_factory=lambda: [0.08, 1.0])
    """Training: area range of the random resized crop."""
    ratio: Annotated[list[float], Range(0, low_open=True, length=2, increasing=True)] = field(
        default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])
    """Training: aspect-ratio range of the random resized crop."""
    hflip: Annotated[float, Fraction] = 0.5
    """Training: probability of a horizontal flip."""
    vflip: Annotated[float, Fraction] = 0.0
    """Training: probability of a vertical flip."""
    auto_augment: str | None = None
    """timm auto-augment string (``rand-m7-mstd0.5`` RandAugment, ``original``/``v0``/``3a`` AutoAugment,
    ``augmix-m5``) or ``trivialaugment`` (torchvision's TrivialAugmentWide)."""
    color_jitter: Annotated[float | None, NonNegative] = 0.4
    """Training: color jitter strength; ``null`` or 0: none."""
    reprob: Annotated[float, Fraction] = 0.0
    """Training: random erasing probability (timm ``re_prob``)."""
    remode: str = "pixel"
    """Random erasing fill mode (timm ``re_mode``: ``const``, ``rand``, ``pixel``)."""
    mixup: Annotated[float, NonNegative] = 0.0
    """Mixup alpha; 0: off."""
    cutmix: Annotated[float, NonNegative] = 0.0
    """CutMix alpha; 0: off."""
    mixup_prob: Annotated[float, Fraction] = 1.0
    """Probability of applying mixup or CutMix to a batch."""
    mixup_switch_prob: Annotated[float, Fraction] = 0.5
    """Probability of CutMix instead of mixup when both are on."""
    label_smoothing: Annotated[float, Range(0, 1, high_open=True)] = 0.0
    """Classification: label smoothing of the training loss."""

    batch_size: Annotated[int, AtLeastOne] = 32
    """Images per batch per process (the global batch is ``batch_size * processes * train.accumulate``)."""
    eval_batch_size: Annotated[int | None, AtLeastOne] = None
    """Images per evaluation batch; ``null``: ``batch_size``."""
    num_workers: Annotated[int, NonNegative] = 2
    """DataLoader worker processes per process (0: load in the main process)."""
    pin_memory: bool = True
    """DataLoader ``pin_memory``."""
    persistent_workers: bool = True
    """Keep the DataLoader workers alive between epochs (with ``num_workers > 0``)."""


@dataclass
class LossConfig:
    """The training loss (classification's cross-entropy; ``data.label_smoothing`` smooths it)."""

    class_weights: Literal["none", "inverse", "effective"] = "none"
    """Classification: per-class weights of the cross-entropy, from the training split's class counts ``n_c``.
    ``inverse``: ``1 / n_c``; ``effective``: the effective number of samples (Cui et al. 2019),
    ``(1 - beta) / (1 - beta ** n_c)``. Normalised to average 1 over the classes; the log lists them."""
    class_weights_beta: Annotated[float, Range(0, 1, high_open=True)] = 0.999
    """``loss.class_weights=effective``: ``beta`` (0: equal weights; towards 1: ``inverse``)."""


@dataclass
class FinetuneConfig:
    """Which layers train and at which learning rate."""

    freeze: Any = "none"
    """``none`` | ``backbone`` (linear probe) | ``{first_n: N}`` (or the string ``first_n:N``) | a list of
    regular expressions matched against parameter names."""
    unfreeze_at_epoch: Annotated[int | None, NonNegative] = None
    """Gradual unfreezing: from this epoch (0-based) on, every layer trains."""
    head_lr_mult: Annotated[float, NonNegative] = 1.0
    """Learning-rate multiplier of the classifier / detection heads."""
    lr_mults: Annotated[dict[str, float], NonNegative] = field(default_factory=dict)
    """``{regex: multiplier}``; the first matching regex wins."""
    layer_decay: Annotated[float | None, Range(0, 1, low_open=True)] = None
    """timm layer-wise LR decay: layer ``i`` of ``L`` gets ``layer_decay ** (L - i)``."""
    no_weight_decay_norm_bias: bool = True
    """No weight decay on normalisation weights and biases."""
    trainable_backbone_layers: Annotated[int | None, Range(0, 5)] = None
    """Instance segmentation: number of trainable ResNet stages (0-5), as torchvision."""
    cache_features: Literal["auto", True, False] = "auto"
    """Classification: run the frozen backbone once per split and train the head on the kept features (the
    MobileNetV2 tutorial's linear probe, ~100x faster on a CPU). ``auto``: on when ``freeze: backbone`` leaves only
    the classifier trainable and the training transform is deterministic (``data.scale`` and ``data.ratio`` both
    ``[1, 1]``, no flips, ``color_jitter``, ``auto_augment``, ``reprob``, ``mixup``, ``cutmix``: the training
    images then get the evaluation transform); the log says why when it stays off. ``true``: the same, any
    obstacle is an error naming the keys to change. ``false``: never."""
    cache_memory_limit_mb: Annotated[float, NonNegative] = 1024.0
    """Feature caches up to this size stay in memory; larger ones are written to ``<run>/feature_cache/`` and
    memory-mapped (reused on resume while the backbone weights, transform and file list are unchanged)."""


@dataclass
class OptimConfig:
    """Optimizer (any name accepted by ``timm.optim.create_optimizer_v2``)."""

    name: str = "sgd"
    """Optimizer name (``sgd``, ``adamw``, ``lamb``, ... as timm)."""
    lr: Annotated[float, Positive] = 0.01
    """Peak learning rate (after warmup; see ``lr_scale``)."""
    momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.9
    """SGD momentum."""
    nesterov: bool = False
    """SGD: Nesterov momentum."""
    weight_decay: Annotated[float, NonNegative] = 1e-4
    """Weight decay (see ``finetune.no_weight_decay_norm_bias``)."""
    betas: Annotated[list[float] | None, Range(0, 1, high_open=True, length=2)] = None
    """Adam-type betas; ``null``: the optimizer's default."""
    eps: Annotated[float | None, Positive] = None
    """Optimizer epsilon; ``null``: the optimizer's default."""
    lr_scale: Literal["none", "linear", "sqrt"] = "none"
    """Scale ``lr`` with the global batch size relative to ``lr_base_batch_size``."""
    lr_base_batch_size: Annotated[int, AtLeastOne] = 256
    """The global batch size at which ``lr`` applies unscaled."""


@dataclass
class SchedConfig:
    """Learning-rate schedule, stepped every optimizer step."""

    name: Literal["cosine", "step", "multistep", "constant"] = "cosine"
    """Schedule after warmup."""
    warmup_epochs: Annotated[float, NonNegative] = 0.0
    """Linear warmup length in epochs (fractions allowed)."""
    warmup_factor: Annotated[float, Fraction] = 0.1
    """LR at the start of warmup, as a fraction of the target LR."""
    min_lr: Annotated[float, NonNegative] = 0.0
    """``cosine``: the final learning rate."""
    step_size: Annotated[float, Positive] = 30.0
    """``step``: epochs between decays."""
    gamma: Annotated[float, Range(0, 1, low_open=True)] = 0.1
    """``step`` / ``multistep``: the factor of each decay."""
    milestones: Annotated[list[float], Range(0, increasing=True)] = field(default_factory=list)
    """``multistep``: epochs at which the LR is multiplied by ``gamma`` (RetinaFace decay1/decay2)."""


@dataclass
class TrainConfig:
    """The training loop."""

    deprecated_flags: ClassVar[dict[str, tuple[str, str]]] = {"tensorboard": ("trackers", "tensorboard")}
    """Not config keys: old boolean keys still read, with a warning (``{old: (list key, item)}``): ``true`` adds the
    item to the list key, ``false`` changes nothing (configs saved before the change hold it)."""

    epochs: Annotated[int, NonNegative] = 10
    """Training epochs."""
    max_steps: Annotated[int | None, AtLeastOne] = None
    """Stop after this many optimizer steps (for smoke tests)."""
    accumulate: Annotated[int, AtLeastOne] = 1
    """Gradient accumulation: batches per optimizer step."""
    clip_grad: Annotated[float | None, Positive] = None
    """Clip the gradient norm to this value; ``null``: no clipping."""
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """``auto``: bf16 (or fp16) on CUDA, off on CPU."""
    channels_last: bool | Literal["auto"] = "auto"
    """Channels-last memory format for the model and the image batches (faster convolutions with AMP on tensor
    cores). ``auto``: on for a convolutional network on CUDA, off on the CPU and for transformers."""
    compile: bool = False
    """``torch.compile`` the model."""
    sync_bn: bool = False
    """Distributed: convert BatchNorm to SyncBatchNorm (CUDA only)."""
    find_unused_parameters: bool = False
    """Distributed: DDP's ``find_unused_parameters`` (a graph traversal every step). Only for a model whose
    forward leaves some trainable parameters without a gradient; frozen parameters do not need it (DDP skips
    parameters without ``requires_grad``)."""
    gpu_prefetch: bool = True
    """Classification on CUDA: the loader workers send uint8 images (4x fewer bytes) and a prefetcher normalises
    them, applies random erasing and channels-last on the GPU, copying the next batch on a side stream while the
    current one trains. ``false``: float32 batches normalised in the workers, as on the CPU."""
    ema: bool = False
    """Keep an exponential moving average of the weights (evaluated and saved too)."""
    ema_decay: Annotated[float, Range(0, 1, high_open=True)] = 0.9998
    """EMA decay per optimizer step."""
    eval_every: Annotated[int, AtLeastOne] = 1
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
    patience: Annotated[int | None, AtLeastOne] = None
    """Early stopping: evaluations without improvement before stopping."""
    time_budget: Annotated[float | None, Positive] = None
    """Minutes; training stops (with a checkpoint) after the epoch that exceeds it."""
    nan_policy: Literal["error", "skip"] = "error"
    """A non-finite loss: stop with an error, or skip the step."""
    save_every_steps: Annotated[int, NonNegative] = 0
    """Also write ``step_<N>.pt`` every this many optimizer steps (mid-epoch resumes); 0: off."""
    checkpoint_interval_s: Annotated[float, NonNegative] = 0.0
    """Seconds; ``last.pt`` is written at the end of an epoch only when this long has passed since the last write
    (and always when training ends or stops), and a new best epoch's state waits in memory to be written as
    ``best.pt`` right before the next ``last.pt``, so the two files on disk always agree. For epochs much shorter
    than a checkpoint write (cached features, tiny datasets); a crash loses at most this much training. 0: both files
    after every epoch."""
    keep_last: Annotated[int, AtLeastOne] = 3
    """The newest ``step_<N>.pt`` files to keep (``save_every_steps``)."""
    auto_resume: bool = False
    """Resume from the run's ``last.pt`` when it exists (restarts after a crash or preemption)."""
    deterministic: bool = False
    """Deterministic algorithms (slower; bitwise-reproducible runs on one device)."""
    log_every: Annotated[int, AtLeastOne] = 20
    progress: bool = True
    """Show progress bars."""
    trackers: list[Literal["csv", "tensorboard", "mlflow"]] = field(default_factory=lambda: ["csv"])
    """Where every epoch's ``metrics.csv`` row goes (rank 0): ``csv`` (``metrics.csv``, always written),
    ``tensorboard`` (``<run>/tensorboard``, needs ``tensorboard``), ``mlflow`` (the store of ``MLFLOW_TRACKING_URI``,
    experiment ``MLFLOW_EXPERIMENT_NAME``, else the task's name; with the config, the summary and the report). A
    tracker that fails says so in one warning and stops; training goes on."""
    plots: bool = True
    """Write training curves and evaluation plots to the run directory."""
    report: bool = True
    """Write ``<run>/report.html`` (one self-contained page: metrics, curves, task views, config) at the end of
    training, refreshed after evaluations while that costs under 5% of the wall time (``visiontune report <run>``
    writes it for any run)."""
    save_head_only: bool = False
    """Also write the trainable head alone beside ``best.pt`` / ``last.pt`` (``best_head.pt``, ``last_head.pt``: a few
    hundred KB for a linear probe); load one with ``model.checkpoint=best_head.pt`` plus the backbone's weights in
    ``model.backbone_checkpoint`` (or the training run's backbone source, recorded in the file)."""


@dataclass
class FaceConfig:
    """RetinaFace settings (task ``face_detection``)."""

    min_sizes: Annotated[list[list[int]], AtLeastOne] = field(default_factory=lambda: [[16, 32], [64, 128], [256, 512]])
    steps: Annotated[list[int], AtLeastOne] = field(default_factory=lambda: [8, 16, 32])
    variance: Annotated[list[float], Range(0, low_open=True, length=2)] = field(default_factory=lambda: [0.1, 0.2])
    clip: bool = False
    match_thresh: Annotated[float, Fraction] = 0.35
    neg_pos_ratio: Annotated[int, AtLeastOne] = 7
    loc_weight: Annotated[float, NonNegative] = 2.0
    class_weight: Annotated[float, NonNegative] = 1.0
    landm_weight: Annotated[float, NonNegative] = 1.0
    in_channel: Annotated[int | None, AtLeastOne] = None
    out_channel: Annotated[int | None, AtLeastOne] = None
    rgb_mean: Annotated[list[float], Range(0, 255, length=3)] = field(default_factory=lambda: [104.0, 117.0, 123.0])
    conf_thresh: Annotated[float, Fraction] = 0.02
    top_k: Annotated[int, AtLeastOne] = 5000
    nms_thresh: Annotated[float, Fraction] = 0.4
    keep_top_k: Annotated[int, AtLeastOne] = 750
    origin_size: bool = True
    target_size: Annotated[int, AtLeastOne] = 1600
    max_size: Annotated[int, AtLeastOne] = 2160
    vis_thresh: Annotated[float, Fraction] = 0.5
    gt_dir: str | None = None
    """Folder with the official ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``."""
    wider_boxes: Literal["int", "decimal"] = "int"
    """Boxes in WIDER evaluation and prediction files: ``int`` writes each box as whole pixels the way the reference
    tools do (``x = int(x1)``, ``w = int(x2) - int(x1)``; the published AP was computed so), ``decimal`` keeps the
    decimal boxes."""


@dataclass
class SegmentationConfig:
    """Mask R-CNN settings (task ``instance_segmentation``)."""

    min_size: Annotated[int, AtLeastOne] = 800
    max_size: Annotated[int, AtLeastOne] = 1333
    box_score_thresh: Annotated[float, Fraction] = 0.05
    detections_per_img: Annotated[int, AtLeastOne] = 100
    mask_thresh: Annotated[float, Fraction] = 0.5
    vis_thresh: Annotated[float, Fraction] = 0.5
    aspect_ratio_grouping: bool = True


@dataclass
class ExportConfig:
    """``visiontune export``: write ``checkpoint`` as ONNX to ``output`` (default: the checkpoint's path with suffix
    ``.onnx``), checked against PyTorch with ONNX Runtime."""

    format: Literal["onnx"] = "onnx"
    """Export format (only ``onnx``)."""
    dynamic: bool = True
    """Dynamic batch size (and image height / width for the detectors); ``false`` fixes every axis to the example
    input's."""
    opset: Annotated[int, Range(11)] = 17
    """ONNX opset of the default domain (at least 11)."""
    half: bool = False
    """float16 weights and input (outputs stay float32), checked against the float32 model."""
    softmax: bool = False
    """Classification: output softmax probabilities instead of logits."""
    decode: bool = False
    """Face detection: boxes, scores and landmarks in pixels instead of the raw head outputs (NMS stays outside)."""
    tolerance: Annotated[float | None, NonNegative] = None
    """Parity tolerance of every compared output, relative to its scale (1 for probabilities); ``null``: 1e-3
    (float32) or 2e-2 (``half``)."""
    input_size: Annotated[list[int] | str | None, Range(32)] = None
    """Detection tasks: the example input, ``HxW`` (``480x640``), ``[H, W]`` or one number for a square, each side
    at least 32 pixels; ``null``: 480x640. Classification always uses ``data.image_size``."""
    sample: str | None = None
    """An image or a folder of images for the parity check; ``null``: synthetic images."""


@dataclass
class EvalConfig:
    """How certain the reported metrics are: bootstrap intervals over the evaluated images, for ``top1`` and
    ``macro_f1`` (classification), ``ap`` / ``ap_easy`` / ``ap_medium`` / ``ap_hard`` (face detection) and
    ``bbox_AP`` / ``segm_AP`` (instance segmentation), in ``summary.json``, the before/after table and the
    ``metrics.json`` of ``visiontune eval``."""

    intervals: bool = True
    """Report 95% percentile bootstrap intervals (each resample draws the evaluated images with replacement; the
    matches are computed once and the metrics recomputed per resample); the change best - baseline gets a paired
    interval (the same resampled images for both), and the table says "within noise" when it contains 0. The EMA's
    ``val_ema_*`` metrics get none."""
    resamples: Annotated[int, Range(10, 100_000)] = 1000
    """Bootstrap resamples (the same default for every task). 1000 resamples of WIDER FACE AP on the 3226 val images
    (100k boxes) take about 1 s on 2 cores; COCO AP costs more per image, about 1.5 s for 100 images with 20
    detections each, growing with the detections per category: lower it for large COCO sets
    (``benchmarks/bootstrap_intervals.py`` measures both)."""
    seed: Annotated[int, Range(0, MAX_SEED)] = 0
    """Seed of the resampled image sets (the same sets for every evaluation of a run, so changes are paired)."""


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
class TuneConfig:
    """``visiontune tune``: a hyper-parameter search with Optuna. Every trial is an ordinary training run of this
    config with the sampled values of ``space``; the study lives in ``<project>/<task>/<name>/study.db``."""

    trials: Annotated[int, AtLeastOne] = 20
    """Trials to finish: completed, pruned or failed with a reason (a trial interrupted by a crash or a kill does not
    count). A resumed study runs only the missing ones."""
    timeout_s: Annotated[float | None, Positive] = None
    """Seconds; no new trial starts after this much wall time of this invocation; ``null``: no limit."""
    space: dict[str, str] = field(default_factory=dict)
    """``{config key: distribution}``: ``loguniform(a, b)``, ``uniform(a, b)``, ``int(a, b)`` (both ends included) or
    ``choice([v1, v2, ...])`` (numbers, strings, true/false, null), e.g. ``{optim.lr: 'loguniform(1e-4, 0.3)',
    finetune.freeze: 'choice([backbone, none])'}``."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """How trials pick values: ``tpe`` (Optuna's TPE, after ``startup_trials`` random ones), ``random``, or ``grid``
    (every combination once, in order, at most ``trials``; ``int`` and ``choice`` specs only)."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """Stop a trial early from its per-epoch validation metric: ``median`` (below the median of earlier trials at
    the same epoch), ``hyperband``, or ``none``."""
    startup_trials: Annotated[int, NonNegative] = 5
    """Trials that TPE samples at random, and that finish before the median pruner stops any."""
    metric: str | None = None
    """The validation metric to optimise (without ``val_``); ``null``: ``train.metric`` (the task's). The trials'
    ``best.pt`` picks by it too; ``train.metric_mode`` (or the task's) says whether higher is better."""
    seed: Annotated[int | None, Range(0, MAX_SEED)] = None
    """Seed of the sampler; ``null``: ``seed``. Every trial trains with ``seed``."""
    final_seeds: Annotated[int, NonNegative] = 3
    """After the search, train the best config again with this many other seeds (``seed + 1``, ...) and report
    the mean and spread of the metric (``final.json``); 0: off."""
    resume: bool = True
    """Continue the study in the newest ``<name>[-N]`` folder when its ``study.db`` was made for the same config
    (apart from ``trials``, ``timeout_s``, ``final_seeds`` and per-invocation keys); ``false``: a new folder."""


@dataclass
class Config:
    """Everything a run needs. Saved as ``config.yaml`` in the run directory and inside every checkpoint."""

    set_keys: ClassVar[frozenset[str] | None] = None
    """Not a config key: the dotted keys that :func:`~visiontune.config.loader.load_config` read from the YAML file
    and the overrides (what the user set explicitly; a resume applies exactly these over the checkpoint's config);
    ``None`` for a config built otherwise. Not saved."""
    preset_file: ClassVar[str | None] = None
    """Not a config key: the YAML file :func:`~visiontune.config.loader.load_config` read (``-c``), or ``None``.
    The run folder keeps a copy (``preset.yaml``) so the run report shows what the command line changed."""

    task: str = "classification"
    """``classification``, ``face_detection`` or ``instance_segmentation``."""
    name: str = "exp"
    """Run name (the run folder ``<project>/<task>/<name>``)."""
    project: str = "runs"
    """Runs are written to ``<project>/<task>/<name>[-N]``."""
    seed: Annotated[int, Range(0, MAX_SEED)] = 42
    """Random seed (each process adds its rank)."""
    device: Annotated[str, DEVICE] = "auto"
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
    topk: Annotated[int, AtLeastOne] = 5
    """Classification: labels per image written by ``predict``."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
