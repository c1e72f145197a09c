"""Translate a MindFace RetinaFace config (``mindface/detection/configs/RetinaFace_*.yaml``) to visiontune.

The meaning of every key follows MindFace's ``mindface/detection/train.py``, ``eval.py``, ``infer.py``,
``datasets/dataset.py`` and ``utils/lr_schedule.py``:

* ``lr_type: dynamic_lr`` is a linear warmup from ``initial_lr / 3`` over ``warmup_epoch`` epochs followed by a
  cosine decay (``decay1``, ``decay2`` and ``gamma`` are not used); any other ``lr_type`` is MindFace's step
  schedule: ``initial_lr * gamma`` from the 1-based epoch ``decay1``, ``* gamma**2`` after ``decay2``.
* ``training_dataset`` is a ``label.txt`` whose images are in the sibling ``images/`` folder;
  ``val_dataset_folder`` holds ``label.txt`` and ``images/``.
* MindSpore's optimizers exclude BatchNorm ``gamma``/``beta`` from weight decay by default.
"""

from __future__ import annotations

import math
import os
from pathlib import PurePath

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

MINDFACE_LABEL = "MindFace RetinaFace"

MINDFACE_MODELS = {"MobileNet025": "retinaface_mobilenet0.25", "ResNet50": "retinaface_resnet50"}
"""MindFace ``name`` -> visiontune ``model.name``."""

MINDFACE_MARKERS = frozenset({
    "variance", "match_thresh", "decay1", "decay2", "loc_weight", "class_weight", "landm_weight", "initial_lr",
    "lr_type", "warmup_epoch", "training_dataset", "val_dataset_folder", "num_anchor", "in_channel", "out_channel",
    "resume_net", "val_gt_dir",
})
"""Keys that only a MindFace RetinaFace config has (used to recognise the family)."""

_TORCHRUN = "visiontune uses torchrun for distribution (torchrun --nproc_per_node=N -m visiontune train ...)"

_NO_COUNTERPART = {
    "mode": "MindSpore graph / PyNative execution mode; PyTorch runs eagerly (train.compile=true compiles the model)",
    "device_target": "visiontune picks the device itself (device: auto uses CUDA when available, else the CPU); "
                     "Ascend NPUs are not supported",
    "ngpu": _TORCHRUN,
    "nnpu": _TORCHRUN,
    "device_id": "choose the GPU with CUDA_VISIBLE_DEVICES",
    "num_anchor": "visiontune generates the priors for each input size from face.min_sizes and face.steps",
    "val_model": "visiontune eval reads a MindSpore .ckpt directly: visiontune eval -c <this config.yaml> "
                 "checkpoint=<model.ckpt> (as well as a visiontune checkpoint, checkpoint=run/best.pt); fine-tune "
                 "from it with model.checkpoint=<model.ckpt>",
    "val_save_result": "visiontune eval always writes its predictions and metrics (to `output`, by default next to "
                       "the checkpoint)",
    "T_max": "not read by MindFace's train.py (its adjust_learning_rate implements dynamic_lr and the decay1/decay2 "
             "step schedule only)",
    "eta_min": "not read by MindFace's train.py (its adjust_learning_rate implements dynamic_lr and the decay1/decay2 "
               "step schedule only)",
}


def translate_mindface(source: SourceConfig) -> ImportedConfig:
    """Translate a MindFace RetinaFace config.

    Raises:
        ImportConfigError: a value of the wrong type, an unknown backbone ``name`` or ``optim``.
    """
    translator = ConfigTranslator(source, family="mindface", family_label=MINDFACE_LABEL)
    translator.put("task", "face_detection", sources=())
    translator.put("name", run_name(source.path), sources=())
    _translate_model(translator)
    _translate_data(translator)
    _translate_face(translator)
    _translate_optimizer(translator)
    _translate_schedule(translator)
    _translate_training(translator)
    for key, reason in _NO_COUNTERPART.items():
        translator.skip(key, reason)
    return translator.finish(unknown_reason="not a MindFace RetinaFace option known to visiontune")


def _translate_model(translator: ConfigTranslator) -> None:
    backbone = translator.require("name", one_of(*MINDFACE_MODELS))
    translator.put("model.name", MINDFACE_MODELS[backbone], sources=("name",))
    resume = translator.copy("resume_net", "model.checkpoint", optional(text))
    _translate_backbone_checkpoint(translator, resume=resume, model=MINDFACE_MODELS[backbone])
    num_classes = translator.get("num_classes", integer)
    if num_classes is not None:
        reason = "visiontune's RetinaFace always has 2 classes (face and background)"
        translator.skip("num_classes", reason if num_classes == 2 else f"{reason}; {num_classes} is not supported")


def _translate_backbone_checkpoint(translator: ConfigTranslator, *, resume: str | None, model: str) -> None:
    """``pretrain`` + ``pretrain_path`` -> ``model.backbone_checkpoint`` (MindFace loads it only without a resume)."""
    pretrain = translator.get("pretrain", boolean)
    path = translator.get("pretrain_path", optional(text))
    if pretrain and path and resume is None:
        translator.put("model.backbone_checkpoint", path, sources=("pretrain", "pretrain_path"))
        if path.lower().endswith(".ckpt") and model == "retinaface_resnet50":
            translator.note(f"pretrain_path: {path} is a MindSpore ImageNet ResNet-50; model.backbone_checkpoint "
                            "reads it as it is (MindCV, model zoo or Mask R-CNN backbone names)")
        elif path.lower().endswith(".ckpt"):
            translator.note(
                f"pretrain_path: {path} is a MindSpore checkpoint of the MobileNet-0.25 backbone; "
                "model.backbone_checkpoint reads MindSpore backbones for ResNet-50 only and PyTorch weights (.pth / "
                ".safetensors) otherwise, so point it at the PyTorch ImageNet backbone (mobilenetV1X0.25_pretrain.tar)"
            )
        return
    if not translator.has("pretrain") and not translator.has("pretrain_path"):
        return
    translator.put("model.backbone_checkpoint", None, sources=("pretrain",) if path else ("pretrain", "pretrain_path"))
    if path:
        reason = ("MindFace loads it only when pretrain is true" if not pretrain
                  else "MindFace does not load it when resume_net is set")
        translator.skip("pretrain_path", reason)


def _translate_data(translator: ConfigTranslator) -> None:
    translator.put("data.format", "retinaface", sources=())
    translator.copy("batch_size", "data.batch_size", integer)
    translator.copy("num_workers", "data.num_workers", integer)
    translator.copy("image_size", "data.image_size", integer)
    training_label = translator.get("training_dataset", text)
    validation_folder = translator.get("val_dataset_folder", text)
    if training_label is None and validation_folder is None:
        return
    for key, value in _dataset_layout(training_label, validation_folder).items():
        sources: tuple[str, ...] = ("val_dataset_folder",) if key.startswith("data.val") else ("training_dataset",)
        if key == "data.root":
            sources = ("training_dataset", "val_dataset_folder")
        translator.put(key, value, sources=sources)
    if validation_folder is not None:
        translator.note(
            "val_dataset_folder: MindFace's train.py never validates; visiontune evaluates data.val_split every "
            "train.eval_every epochs (the WIDER FACE val set at original size takes minutes: raise "
            "train.eval_every, or set data.val_split=null to train without validation)"
        )


def _dataset_layout(training_label: str | None, validation_folder: str | None) -> dict[str, str | None]:
    """``data.*`` keys for MindFace's ``<dir>/label.txt`` + ``<dir>/images/`` layout, relative to a common root.

    A folder outside the root (one path relative, the other absolute) keeps its full path, which visiontune
    accepts in place of a path relative to ``data.root``.
    """
    folders = []
    if training_label is not None:
        folders.append(PurePath(training_label).parent)
    if validation_folder is not None:
        folders.append(PurePath(validation_folder))
    if len(folders) == 2 and folders[0].is_absolute() == folders[1].is_absolute():
        root = PurePath(os.path.commonpath([str(folder) for folder in folders]))
    else:
        root = folders[0].parent
    layout: dict[str, str | None] = {"data.root": str(root)}
    if training_label is not None:
        layout["data.train_split"] = _below(PurePath(training_label), root)
        layout["data.images_dir"] = _below(PurePath(training_label).parent / "images", root)
    if validation_folder is not None:
        layout["data.val_split"] = _below(PurePath(validation_folder) / "label.txt", root)
        layout["data.val_images_dir"] = _below(PurePath(validation_folder) / "images", root)
    else:
        layout["data.val_split"] = None  # no val_dataset_folder: nothing to validate on
    return layout


def _below(path: PurePath, root: PurePath) -> str:
    """``path`` relative to ``root`` when it lies below it, else ``path`` itself (POSIX separators)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _translate_face(translator: ConfigTranslator) -> None:
    translator.copy("variance", "face.variance", list_of(number, length=2))
    translator.copy("clip", "face.clip", boolean)
    translator.copy("loc_weight", "face.loc_weight", number)
    translator.copy("class_weight", "face.class_weight", number)
    translator.copy("landm_weight", "face.landm_weight", number)
    translator.copy("match_thresh", "face.match_thresh", number)
    translator.copy("in_channel", "face.in_channel", integer)
    translator.copy("out_channel", "face.out_channel", integer)
    translator.copy("min_sizes", "face.min_sizes", list_of(list_of(integer)))
    translator.copy("steps", "face.steps", list_of(integer))
    origin_size = translator.copy("val_origin_size", "face.origin_size", boolean)
    if origin_size is False:
        translator.note(
            "val_origin_size: false: MindFace's eval.py then runs several test scales and merges their boxes; "
            "visiontune evaluates one scale (face.target_size=1600, at most face.max_size=2160)"
        )
    translator.copy("val_confidence_threshold", "face.conf_thresh", number)
    translator.copy("val_nms_threshold", "face.nms_thresh", number)
    translator.copy("val_gt_dir", "face.gt_dir", optional(text))
    translator.copy("conf", "face.vis_thresh", number)
    translator.copy("image_path", "source", text)
    translator.copy("val_predict_save_folder", "output", optional(text))
    iou = translator.get("val_iou_threshold", number)
    if iou is not None:
        reason = "the WIDER FACE evaluation uses the official IoU threshold 0.5"
        translator.skip("val_iou_threshold", reason if iou == 0.5 else f"{reason}; {iou} is not used")


def _translate_optimizer(translator: ConfigTranslator) -> None:
    optimizer = translator.get("optim", one_of("sgd", "momentum"))
    momentum = translator.copy("momentum", "optim.momentum", number)
    if optimizer is not None:
        # MindSpore's nn.SGD(momentum=m) and nn.Momentum are both momentum SGD without Nesterov.
        name = "momentum" if momentum is None or momentum > 0 else "sgd"
        translator.put("optim.name", name, sources=("optim",))
        translator.put("optim.nesterov", False, sources=())
    translator.copy("weight_decay", "optim.weight_decay", number)
    translator.copy("initial_lr", "optim.lr", number)
    if translator.has("weight_decay"):
        translator.put("finetune.no_weight_decay_norm_bias", True, sources=("weight_decay",))
        translator.note(
            "weight_decay: MindSpore's optimizers skip weight decay on BatchNorm gamma/beta by default but decay "
            "biases; finetune.no_weight_decay_norm_bias=true skips both (RetinaFace's only biases are in the heads)"
        )


def _translate_schedule(translator: ConfigTranslator) -> None:
    lr_type = translator.get("lr_type", optional(text))
    warmup = translator.get("warmup_epoch", integer)
    warmup_epochs = max(0, warmup) if warmup is not None else 0
    epochs = translator.get("epoch", integer)
    if lr_type == "dynamic_lr":
        translator.put("sched.name", "cosine", sources=("lr_type",))
        translator.put("sched.warmup_epochs", warmup_epochs, sources=("warmup_epoch",))
        translator.put("sched.warmup_factor", 1.0 / 3.0, sources=())
        translator.put("sched.min_lr", 0.0, sources=())
        unused = "used only by MindFace's step schedule (lr_type other than dynamic_lr)"
        for key in ("decay1", "decay2", "gamma"):
            translator.skip(key, unused)
        if epochs:
            # MindFace: lr * (1 + cos(pi * (step - warmup_steps) / total_steps)) / 2, even for a negative warmup.
            raw_warmup = warmup if warmup is not None else 0
            final = (1.0 + math.cos(math.pi * (epochs - raw_warmup) / epochs)) / 2.0
            translator.note(
                f"lr_type: dynamic_lr is a linear warmup from initial_lr/3 then a cosine over all {epochs} epochs "
                f"(MindFace ends at {final:.2g} x initial_lr); visiontune's cosine spans the epochs after warmup and "
                "ends at sched.min_lr=0"
            )
        return
    if translator.has("lr_type") or translator.has("decay1") or translator.has("decay2"):
        _translate_step_schedule(translator, warmup_epochs=warmup_epochs)


def _translate_step_schedule(translator: ConfigTranslator, *, warmup_epochs: int) -> None:
    first = translator.require("decay1", integer)
    second = translator.require("decay2", integer)
    translator.put("sched.name", "multistep", sources=("lr_type",))
    # MindFace counts epochs from 1 and applies gamma for decay1 <= epoch <= decay2, gamma**2 after decay2;
    # visiontune's milestones are 0-based epochs from which the LR is multiplied by gamma.
    translator.put("sched.milestones", [first - 1, second], sources=("decay1", "decay2"))
    translator.copy("gamma", "sched.gamma", number)
    translator.put("sched.warmup_epochs", warmup_epochs, sources=("warmup_epoch",))
    translator.put("sched.warmup_factor", 0.1, sources=())
    translator.note(
        f"decay1/decay2: MindFace multiplies the LR by gamma from its 1-based epoch {first} and again after epoch "
        f"{second}, i.e. from the 0-based epochs {first - 1} and {second} of sched.milestones"
    )
    if warmup_epochs:
        translator.note(
            "warmup_epoch: MindFace's step schedule warms up geometrically per epoch (0.1 x 1.5849^(epoch-1)); "
            "visiontune warms up linearly from sched.warmup_factor=0.1 every step"
        )


def _translate_training(translator: ConfigTranslator) -> None:
    translator.copy("seed", "seed", integer)
    translator.copy("epoch", "train.epochs", integer)
    translator.copy("save_checkpoint_steps", "train.save_every_steps", integer)
    translator.copy("keep_checkpoint_max", "train.keep_last", integer)
    project = translator.copy("ckpt_path", "project", text)
    if project is not None:
        runs = (PurePath(project) / "face_detection" / "<name>").as_posix()
        translator.note(f"ckpt_path: runs are written to {runs}/ (best.pt, last.pt, metrics.csv, ...)")
    grad_clip = translator.get("grad_clip", boolean)
    if grad_clip is False:
        translator.put("train.clip_grad", None, sources=("grad_clip",))
    elif grad_clip:
        translator.skip(
            "grad_clip",
            "MindFace clips each gradient tensor to norm 1.0; train.clip_grad clips the global norm of all gradients "
            "(set it by hand, e.g. train.clip_grad=5.0, if wanted)",
        )
