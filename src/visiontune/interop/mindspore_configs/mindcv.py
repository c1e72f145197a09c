"""Translate a MindCV training config (``configs/<model>/<name>_ascend.yaml``) to visiontune.

A MindCV YAML sets the defaults of MindCV's ``config.py`` argument parser, so a key the file does not set keeps
MindCV's default (e.g. ``opt: adam``, ``lr: 0.001``, ``warmup_epochs: 3``, ``warmup_factor: 0.0``); those defaults
are applied where visiontune's differ, and listed. Semantics follow MindCV's ``config.py``,
``mindcv/scheduler/scheduler_factory.py`` (warmup first, then the main schedule counted from the end of warmup),
``mindcv/data/transforms_factory.py`` and ``mindcv/data/auto_augment.py``.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from visiontune.interop.mindspore_configs.common import (
    ConfigTranslator,
    ImportedConfig,
    SourceConfig,
    boolean,
    integer,
    list_of,
    number,
    one_of,
    optional,
    run_name,
    text,
)

MINDCV_LABEL = "MindCV"

MINDCV_MARKERS = frozenset({
    "epoch_size", "opt", "scheduler", "image_resize", "data_dir", "dataset", "ckpt_save_dir", "amp_level",
    "num_parallel_workers", "dataset_sink_mode", "decay_epochs", "decay_rate", "drop_remainder", "warmup_epochs",
    "val_while_train", "distribute", "filter_bias_and_bn", "weight_decay_filter", "use_nesterov", "crop_pct",
    "label_smoothing", "multi_step_decay_milestones",
})
"""Keys that only a MindCV config has (with a string ``model``, used to recognise the family)."""

MINDCV_DEFAULTS: MappingProxyType[str, Any] = MappingProxyType({
    "model": "mobilenet_v2_035_224",
    "opt": "adam",
    "lr": 0.001,
    "weight_decay": 1e-6,
    "eps": 1e-10,
    "scheduler": "cosine_decay",
    "min_lr": 1e-6,
    "warmup_epochs": 3,
    "warmup_factor": 0.0,
    "decay_epochs": 100,
    "decay_rate": 0.9,
    "multi_step_decay_milestones": [30, 60, 90],
    "batch_size": 128,
    "epoch_size": 90,
    "num_parallel_workers": 8,
    "crop_pct": 0.875,
    "amp_level": "O0",
    "keep_checkpoint_max": 10,
    "log_interval": 100,
    "ema_decay": 0.9999,
    "clip_value": 15.0,
})
"""MindCV ``config.py`` defaults of the options whose visiontune default differs."""

_OPTIMIZERS = MappingProxyType({
    "sgd": "momentum", "momentum": "momentum", "adam": "adam", "adamw": "adamw", "lion": "lion",
    "rmsprop": "rmsproptf", "adagrad": "adagrad", "lamb": "lamb", "nadam": "nadam",
})
"""MindCV ``opt`` -> timm optimizer name (``momentum`` becomes ``sgd`` when ``momentum`` is 0)."""

_EPSILON_OPTIMIZERS = frozenset({"adam", "adamw", "rmsproptf", "adagrad", "lamb", "nadam"})

_INTERPOLATIONS = MappingProxyType({
    "bilinear": "bilinear", "linear": "bilinear", "bicubic": "bicubic", "cubic": "bicubic", "pilcubic": "bicubic",
    "nearest": "nearest", "area": "box",
})
"""MindSpore ``Inter`` names (case-insensitive) -> timm interpolation names."""

_AMP_LEVELS = MappingProxyType({"O0": "off", "O1": "auto", "O2": "auto", "O3": "auto"})

_TORCHRUN = "visiontune uses torchrun for distribution (torchrun --nproc_per_node=N -m visiontune train ...)"
_LOSS_SCALE = "torch AMP scales float16 losses dynamically (GradScaler) and bfloat16 needs no scaling"
_MODELARTS = "Huawei ModelArts / OBS storage setting"

_NO_COUNTERPART = MappingProxyType({
    "mode": "MindSpore graph / PyNative execution mode; PyTorch runs eagerly (train.compile=true compiles the model)",
    "distribute": _TORCHRUN,
    "device_target": "visiontune picks the device itself (device: auto uses CUDA when available, else the CPU); "
                     "Ascend NPUs are not supported",
    "dataset_sink_mode": "MindSpore sinks the dataset to the device; PyTorch feeds batches from a DataLoader "
                         "(data.num_workers, data.pin_memory)",
    "dataset_download": "visiontune never downloads datasets; point data.root at a local image folder",
    "shuffle": "visiontune always shuffles the training split",
    "num_samples": "visiontune reads every sample of a split; train.max_steps stops a run early",
    "drop_remainder": "visiontune keeps the last, partial training batch",
    "aug_repeats": "repeated augmentation is not supported",
    "aug_splits": "augmentation splits (AugMix with a JSD loss) are not supported",
    "re_scale": "timm's RandomErasing uses the area range (0.02, 1/3)",
    "re_ratio": "timm's RandomErasing uses the aspect-ratio range (0.3, 3.3)",
    "re_max_attempts": "timm's RandomErasing makes up to 10 attempts",
    "resume_opt": "visiontune resumes optimizer state only from its own checkpoints (resume=path/to/last.pt)",
    "ckpt_save_interval": "visiontune writes last.pt every epoch and best.pt on improvement; train.save_every_steps "
                          "adds step checkpoints",
    "ckpt_save_policy": "visiontune keeps best.pt (best metric) and the train.keep_last newest step checkpoints",
    "loss_scale": _LOSS_SCALE,
    "loss_scale_type": _LOSS_SCALE,
    "dynamic_loss_scale": _LOSS_SCALE,
    "drop_overflow_update": _LOSS_SCALE,
    "val_amp_level": "visiontune has one mixed-precision setting, train.amp",
    "amp_cast_list": "torch autocast chooses the precision of each operation",
    "aux_factor": "auxiliary-head losses are not supported",
    "reduction": "the loss is averaged over the batch",
    "eval_shuffle": "evaluation reads the validation split in order",
    "enable_modelarts": _MODELARTS,
    "multi_data_url": _MODELARTS,
    "data_url": _MODELARTS,
    "ckpt_url": _MODELARTS,
    "train_url": _MODELARTS,
})


def translate_mindcv(source: SourceConfig) -> ImportedConfig:
    """Translate a MindCV config.

    Raises:
        ImportConfigError: a value of the wrong type, or an unknown ``opt`` / ``amp_level`` / ``auto_augment``.
    """
    translator = ConfigTranslator(source, family="mindcv", family_label=MINDCV_LABEL, defaults=MINDCV_DEFAULTS)
    translator.put("task", "classification", sources=())
    translator.put("name", run_name(source.path), sources=())
    _translate_model(translator)
    _translate_dataset(translator)
    _translate_augmentation(translator)
    _translate_optimizer(translator)
    _translate_schedule(translator)
    _translate_training(translator)
    for key, reason in _NO_COUNTERPART.items():
        translator.skip(key, reason)
    return translator.finish(unknown_reason="not a MindCV option (MindCV's config.py rejects unknown keys)")


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def timm_model_name(mindcv_name: str) -> str | None:
    """The timm name of a MindCV model (``mobilenet_v3_small_100`` -> ``mobilenetv3_small_100``), or None."""
    import timm

    from visiontune.interop.mindspore import UnknownArchitectureError, get_mindspore_architecture

    try:
        architecture = get_mindspore_architecture(mindcv_name)
    except UnknownArchitectureError:
        architecture = None
    if architecture is not None and architecture.target_library == "timm":
        return architecture.target_name
    without_resolution = re.sub(r"_224$", "", mindcv_name)
    timm_spelling = re.sub(r"^mobilenet_v(\d)", r"mobilenetv\1", without_resolution)
    for candidate in (mindcv_name, without_resolution, timm_spelling):
        if timm.is_model(candidate):
            return candidate
    return None


def _translate_model(translator: ConfigTranslator) -> None:
    mindcv_name = translator.get("model", text)
    timm_name = timm_model_name(mindcv_name)
    if timm_name is None:
        translator.put("model.name", mindcv_name, sources=("model",))
        translator.note(f"model: {mindcv_name!r} has no known timm equivalent; set model.name to a timm model name")
    else:
        translator.put("model.name", timm_name, sources=("model",))
    translator.copy("num_classes", "model.num_classes", optional(integer))
    if translator.copy("pretrained", "model.pretrained", boolean):
        translator.note("pretrained: visiontune downloads timm's pretrained weights of model.name, not MindCV's; "
                        "offline, convert a MindCV .ckpt and set model.checkpoint instead")
    checkpoint = translator.get("ckpt_path", text)
    if checkpoint is not None:
        translator.put("model.checkpoint", checkpoint or None, sources=("ckpt_path",))
        if checkpoint.lower().endswith(".ckpt"):
            _note_checkpoint_support(translator, checkpoint, timm_name or mindcv_name)
    for key, target in (("drop_rate", "model.drop_rate"), ("drop_path_rate", "model.drop_path_rate")):
        value = translator.get(key, optional(number))
        if value is None:
            translator.skip(key, f"null means MindCV's per-model default; visiontune uses {target}'s default")
        else:
            translator.put(target, value, sources=(key,))
    channels = translator.get("in_channels", integer)
    if channels is not None:
        reason = "visiontune feeds 3-channel RGB images"
        translator.skip("in_channels", reason if channels == 3 else f"{reason}; {channels} channels are not supported")


def _note_checkpoint_support(translator: ConfigTranslator, checkpoint: str, model_name: str) -> None:
    from visiontune.interop.mindspore import (
        UnknownArchitectureError,
        get_mindspore_architecture,
        list_mindspore_architectures,
    )

    try:
        get_mindspore_architecture(model_name)
    except UnknownArchitectureError:
        translator.note(
            f"ckpt_path: visiontune converts MindSpore checkpoints of {', '.join(list_mindspore_architectures())} "
            f"only, so {checkpoint} cannot be loaded into {model_name}"
        )


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def _translate_dataset(translator: ConfigTranslator) -> None:
    dataset = translator.get("dataset", text, use_default=False)
    if dataset is not None:
        if dataset.lower() in ("imagenet", ""):
            translator.put("data.format", "folder", sources=("dataset",))
        else:
            translator.skip("dataset", f"visiontune reads image folders, lists or CSV files, not MindCV's {dataset!r} "
                                       "reader; store the images as <root>/<split>/<class>/*.jpg (data.format=folder)")
    translator.copy("data_dir", "data.root", text)
    translator.copy("train_split", "data.train_split", text)
    translator.copy("val_split", "data.val_split", optional(text))
    translator.copy("batch_size", "data.batch_size", integer)
    translator.copy("num_parallel_workers", "data.num_workers", integer)


def _translate_augmentation(translator: ConfigTranslator) -> None:
    translator.copy("image_resize", "data.image_size", integer)
    translator.copy("crop_pct", "data.crop_pct", number)
    translator.copy("scale", "data.scale", list_of(number, length=2))
    translator.copy("ratio", "data.ratio", list_of(number, length=2))
    translator.copy("hflip", "data.hflip", number)
    translator.copy("vflip", "data.vflip", number)
    translator.copy("color_jitter", "data.color_jitter", optional(number))
    translator.copy("mixup", "data.mixup", number)
    translator.copy("cutmix", "data.cutmix", number)
    translator.copy("cutmix_prob", "data.mixup_prob", number)
    translator.copy("label_smoothing", "data.label_smoothing", number)
    for key in ("mean", "std"):
        values = translator.get(key, list_of(number, length=3), use_default=False)
        if values is not None:
            translator.put(f"data.{key}", [round(value / 255.0, 6) for value in values], sources=(key,))
    _translate_interpolation(translator)
    _translate_auto_augment(translator)
    _translate_random_erasing(translator)
    loss = translator.get("loss", text)
    if loss is not None:
        reason = "visiontune trains classifiers with cross-entropy (soft-target cross-entropy with mixup / cutmix)"
        translator.skip("loss", reason if loss.upper() == "CE" else f"{reason}; {loss!r} is not supported")


def _translate_interpolation(translator: ConfigTranslator) -> None:
    name = translator.get("interpolation", text)
    if name is None:
        return
    timm_name = _INTERPOLATIONS.get(name.lower())
    if timm_name is None:
        translator.put("data.interpolation", "bilinear", sources=("interpolation",))
        translator.note(f"interpolation: MindCV falls back to bilinear for {name!r}, and so does the output")
        return
    translator.put("data.interpolation", timm_name, sources=("interpolation",))
    if name.lower() == "area":
        translator.note("interpolation: MindSpore's area resampling is approximated by timm's 'box'")


def timm_auto_augment(policy: str) -> tuple[str | None, str]:
    """Translate a MindCV ``auto_augment`` string to timm's.

    Returns:
        ``(timm string, note)``; the string is None when timm has no equivalent (the note says why), and the note
        is empty for an exact translation.

    Raises:
        ValueError: ``policy`` is not a MindCV policy (MindCV rejects it too).
    """
    head, *sections = policy.split("-")
    has_noise = any(section.startswith("mstd") for section in sections)
    if head == "randaug":
        dropped = [section for section in sections if re.fullmatch(r"w\d+", section)]
        kept = [section for section in sections if section not in dropped]
        # MindCV's RandAugment defaults to magnitude noise 0.5; timm's to none.
        timm_policy = "-".join(["rand", *kept, *([] if has_noise else ["mstd0.5"])])
        note = (f"section {'-'.join(dropped)} (weighted choice of operations) has no timm equivalent and was dropped"
                if dropped else "")
        return timm_policy, note
    if head in ("autoaug", "autoaugr", "3a"):
        timm_head = {"autoaug": "original", "autoaugr": "originalr", "3a": "3a"}[head]
        return "-".join([timm_head, *sections, *([] if has_noise else ["mstd0.5"])]), ""
    if head == "augmix":
        return policy, ""
    if head == "trivialaugwide":
        return None, "timm has no TrivialAugmentWide policy string; choose a timm auto_augment (e.g. rand-m9-mstd0.5)"
    raise ValueError("expected a MindCV policy (randaug-..., autoaug-..., autoaugr-..., 3a, augmix-..., "
                     f"trivialaugwide-...), got {policy!r}")


def _translate_auto_augment(translator: ConfigTranslator) -> None:
    policy = translator.get("auto_augment", optional(text))
    if policy is None:
        if translator.has("auto_augment"):
            translator.put("data.auto_augment", None, sources=("auto_augment",))
        return
    try:
        timm_policy, note = timm_auto_augment(policy)
    except ValueError as error:
        raise translator.error("auto_augment", str(error)) from None
    if timm_policy is None:
        translator.skip("auto_augment", note)
        return
    translator.put("data.auto_augment", timm_policy, sources=("auto_augment",))
    if note:
        translator.note(f"auto_augment: {note}")


def _translate_random_erasing(translator: ConfigTranslator) -> None:
    probability = translator.copy("re_prob", "data.reprob", number)
    if not translator.has("re_value"):
        return
    value = translator.source.values["re_value"]
    if not probability:
        translator.skip("re_value", "random erasing is off (re_prob is 0)")
    elif value == 0 and not isinstance(value, bool):
        translator.put("data.remode", "const", sources=("re_value",))  # zeros after normalisation, like MindCV
    elif value == "random":
        translator.put("data.remode", "pixel", sources=("re_value",))  # per-pixel normal noise, like MindSpore
    else:
        translator.skip("re_value", f"timm erases with zeros (remode const) or random values, not {value!r}")


# --------------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------------


def _translate_optimizer(translator: ConfigTranslator) -> None:
    mindcv_name = translator.get("opt", one_of(*_OPTIMIZERS))
    name = _OPTIMIZERS[mindcv_name]
    momentum_optimizer = name == "momentum"
    if momentum_optimizer:
        momentum = translator.copy("momentum", "optim.momentum", number)
        if momentum == 0:
            name = "sgd"
        translator.copy("use_nesterov", "optim.nesterov", boolean)
    else:
        translator.skip("momentum", f"not used by {mindcv_name}")
        translator.skip("use_nesterov", f"not used by {mindcv_name}")
    translator.put("optim.name", name, sources=("opt",))
    if mindcv_name == "rmsprop":
        translator.note("opt: rmsprop -> timm rmsproptf: MindSpore's RMSProp adds eps inside the square root, as "
                        "TensorFlow's and timm's rmsproptf do")
    weight_decay = translator.copy("weight_decay", "optim.weight_decay", number)
    if name in _EPSILON_OPTIMIZERS:
        translator.copy("eps", "optim.eps", number)
    else:
        translator.skip("eps", f"not used by {mindcv_name}")
    _translate_weight_decay_filter(translator, weight_decay=weight_decay)


def _translate_weight_decay_filter(translator: ConfigTranslator, *, weight_decay: float) -> None:
    policy = translator.get("weight_decay_filter", one_of("disable", "auto", "norm_and_bias"), use_default=False)
    filter_bias_and_norm = translator.get("filter_bias_and_bn", boolean, use_default=False)
    translator.put("finetune.no_weight_decay_norm_bias", True, sources=("weight_decay_filter", "filter_bias_and_bn"))
    exact = policy == "norm_and_bias" or filter_bias_and_norm is True
    if weight_decay and not exact:
        translator.note(
            "weight_decay_filter: MindSpore's optimizers skip weight decay on norm gamma/beta by default but decay "
            "biases; finetune.no_weight_decay_norm_bias=true skips both"
        )


def _translate_schedule(translator: ConfigTranslator) -> None:
    scheduler = translator.get("scheduler", text)
    epochs = translator.get("epoch_size", integer)
    warmup = translator.copy("warmup_epochs", "sched.warmup_epochs", integer)
    translator.copy("warmup_factor", "sched.warmup_factor", number)
    translator.copy("lr", "optim.lr", number)
    stair = translator.get("lr_epoch_stair", boolean)
    if stair is not None:
        translator.skip("lr_epoch_stair", "visiontune updates the LR every optimizer step"
                        + ("; MindCV keeps it constant within each epoch" if stair else ", as lr_epoch_stair: false"))
    unused: tuple[str, ...]
    if scheduler in ("cosine_decay", "warmup_cosine_decay"):
        _translate_cosine(translator, epochs=epochs, warmup=warmup)
        unused = ("decay_rate", "multi_step_decay_milestones")
    elif scheduler == "step_decay":
        _translate_step_decay(translator, epochs=epochs, warmup=warmup)
        unused = ("min_lr", "multi_step_decay_milestones", "num_cycles", "cycle_decay")
    elif scheduler == "multi_step_decay":
        milestones = translator.get("multi_step_decay_milestones", list_of(integer))
        translator.put("sched.name", "multistep", sources=("scheduler",))
        translator.put("sched.milestones", [warmup + milestone for milestone in milestones],
                       sources=("multi_step_decay_milestones",))
        translator.copy("decay_rate", "sched.gamma", number)
        if warmup:
            translator.note(f"multi_step_decay_milestones: MindCV counts them from the end of the {warmup} warmup "
                            "epochs; sched.milestones counts from the start of training")
        unused = ("min_lr", "decay_epochs", "num_cycles", "cycle_decay")
    elif scheduler == "constant":
        translator.put("sched.name", "constant", sources=("scheduler",))
        unused = ("min_lr", "decay_epochs", "decay_rate", "multi_step_decay_milestones", "num_cycles", "cycle_decay")
    else:
        translator.skip("scheduler", f"{scheduler!r} has no visiontune counterpart (sched.name: cosine, step, "
                                     "multistep or constant); the output keeps visiontune's default, cosine")
        unused = ("min_lr", "decay_epochs", "decay_rate", "multi_step_decay_milestones", "num_cycles", "cycle_decay")
    for key in unused:
        translator.skip(key, f"not used by MindCV's {scheduler} scheduler")


def _translate_cosine(translator: ConfigTranslator, *, epochs: int, warmup: int) -> None:
    translator.put("sched.name", "cosine", sources=("scheduler",))
    translator.copy("min_lr", "sched.min_lr", number)
    decay = translator.get("decay_epochs", integer)
    if decay == epochs - warmup:
        translator.fold("decay_epochs", "the cosine length, epoch_size - warmup_epochs (train.epochs, "
                                        "sched.warmup_epochs)")
    else:
        translator.skip("decay_epochs", f"visiontune's cosine spans the {epochs - warmup} epochs after warmup "
                                        f"(epoch_size - warmup_epochs); MindCV decays over {decay} epochs and then "
                                        "holds min_lr")
    for key, single in (("num_cycles", 1), ("cycle_decay", 1.0)):
        value = translator.get(key, number)
        if value is not None:
            translator.skip(key, "visiontune's cosine has one cycle" + ("" if value == single else f"; {key}={value} "
                                                                                              "is not supported"))


def _translate_step_decay(translator: ConfigTranslator, *, epochs: int, warmup: int) -> None:
    decay = translator.get("decay_epochs", integer)
    if decay < 1:
        raise translator.error("decay_epochs", f"expected a positive number of epochs for step_decay, got {decay}")
    translator.copy("decay_rate", "sched.gamma", number)
    if not warmup:
        translator.put("sched.name", "step", sources=("scheduler",))
        translator.put("sched.step_size", decay, sources=("decay_epochs",))
        return
    # MindCV counts the steps from the end of warmup; visiontune's step schedule counts from epoch 0, so the same
    # curve is a multistep schedule with the shifted decay epochs.
    milestones = list(range(warmup + decay, epochs, decay))
    translator.put("sched.name", "multistep", sources=("scheduler",))
    translator.put("sched.milestones", milestones, sources=("decay_epochs",))
    translator.note(f"scheduler: step_decay after {warmup} warmup epochs decays at epochs {milestones} "
                    "(sched.milestones; visiontune's step schedule would count from epoch 0)")


# --------------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------------


def _translate_training(translator: ConfigTranslator) -> None:
    translator.copy("seed", "seed", integer)
    translator.copy("epoch_size", "train.epochs", integer)
    translator.copy("keep_checkpoint_max", "train.keep_last", integer)
    translator.copy("ckpt_save_dir", "project", text)
    translator.copy("log_interval", "train.log_every", integer)
    translator.copy("gradient_accumulation_steps", "train.accumulate", integer)
    translator.copy("layer_decay", "finetune.layer_decay", optional(number))
    level = translator.get("amp_level", one_of(*_AMP_LEVELS))
    translator.put("train.amp", _AMP_LEVELS[level], sources=("amp_level",))
    if _AMP_LEVELS[level] == "auto":
        translator.note(f"amp_level: {level} -> train.amp=auto: bfloat16 (or float16) autocast on CUDA, float32 on "
                        "the CPU; torch autocast keeps BatchNorm and reductions in float32")
    if translator.copy("ema", "train.ema", boolean):
        translator.copy("ema_decay", "train.ema_decay", number)
    else:
        translator.skip("ema_decay", "EMA is off")
    _translate_validation(translator)
    if translator.get("clip_grad", boolean):
        value = translator.get("clip_value", number)
        translator.put("train.clip_grad", value, sources=("clip_grad", "clip_value"))
    elif translator.has("clip_grad"):
        translator.put("train.clip_grad", None, sources=("clip_grad",))
        translator.skip("clip_value", "gradient clipping is off (clip_grad: false)")


def _translate_validation(translator: ConfigTranslator) -> None:
    enabled = translator.get("val_while_train", boolean)
    interval = translator.copy("val_interval", "train.eval_every", integer)
    if enabled is False:
        translator.skip("val_while_train", "visiontune validates data.val_split every train.eval_every epochs; set "
                                           "data.val_split=null to train without validation")
    elif enabled and interval is None:
        translator.put("train.eval_every", 1, sources=("val_while_train",))
    elif enabled:
        translator.fold("val_while_train", "train.eval_every (validation every val_interval epochs)")
