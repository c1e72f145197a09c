"""Image classifiers: any timm model wrapped to follow visiontune's model contract.

Train mode: ``model(images, targets) -> {"loss_cls": Tensor[]}``. Eval mode: ``model(images) ->
list[dict]`` with ``logits: Tensor[C]`` per image.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from torch import nn

from visiontune.models.loading import (
    LoadReport,
    WeightLoadError,
    WeightValuesError,
    check_tensors_fit,
    load_weights_with_report,
    mindspore_source,
    read_weights,
)
from visiontune.registry import suggest
from visiontune.utils import hub

logger = logging.getLogger(__name__)


class ImageClassifier(nn.Module):
    """A timm network plus its training loss.

    Args:
        net: A timm model mapping ``Tensor[B, 3, H, W]`` float32 (normalised) to logits ``Tensor[B, C]``.
        criterion: Loss on ``(logits, targets)``; targets are class indices ``Tensor[B]`` int64 or soft
            labels ``Tensor[B, C]`` (mixup / cutmix).
    """

    def __init__(self, net: nn.Module, criterion: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss()

    @property
    def num_classes(self) -> int:
        return int(self.net.num_classes)  # type: ignore[arg-type]  # timm models store it as an int

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> Any:
        """``images``: ``Tensor[B, 3, H, W]``, or ``Tensor[B, D]`` pooled backbone features (:meth:`pooled_features`,
        cached by a frozen-backbone run): then only the head runs, dropout included."""
        logits = self.head_on_features(images) if images.ndim == 2 else self.net(images)
        if self.training:
            if targets is None:
                raise ValueError("ImageClassifier in train mode needs targets (class indices or soft labels)")
            return {"loss_cls": self.criterion(logits, targets)}
        return [{"logits": row} for row in logits]


    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """The input of the classifier: ``forward_head(forward_features(x), pre_logits=True)`` (timm), ``[B, D]``.

        In eval mode (how features are cached) the dropout before the classifier is the identity, so
        ``head_on_features(pooled_features(x))`` is ``net(x)`` in eval mode and, for a backbone without stochastic
        layers, in train mode too.
        """
        net: Any = self.net  # a timm model (forward_features / forward_head)
        return net.forward_head(net.forward_features(images), pre_logits=True)

    def head_on_features(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from :meth:`pooled_features` output: timm's dropout (``drop_rate``, train mode) and classifier."""
        drop_rate = float(getattr(self.net, "drop_rate", 0.0) or 0.0)
        if drop_rate > 0:
            features = nn.functional.dropout(features, p=drop_rate, training=self.training)
        net: Any = self.net
        return net.get_classifier()(features)


def classifier_head_prefixes(net: nn.Module) -> list[str]:
    """Parameter-name prefixes of a timm model's classifier (from its ``pretrained_cfg``)."""
    classifier = (getattr(net, "pretrained_cfg", {}).get("classifier")
                  or getattr(net, "default_cfg", {}).get("classifier"))
    if classifier is None:
        return []
    names = [classifier] if isinstance(classifier, str) else list(classifier)
    module_names = {name for name, _ in net.named_modules()}
    return [name for name in names if name in module_names]


def create_timm_model(name: str, *, num_classes: int, pretrained: bool = False, drop_rate: float = 0.0,
                      drop_path_rate: float | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with readable errors (unknown name, pretrained download failure).

    With ``pretrained``, weights already in the Hugging Face or torch.hub cache are loaded from there; otherwise
    :func:`cached_pretrained_file` checks in seconds that the hub can be reached before timm downloads.

    Raises:
        ValueError: unknown model name (with the closest timm names).
        WeightLoadError: pretrained weights could not be fetched (the message says how to use a local file).
    """
    if not timm.is_model(name):
        candidates = timm.list_models(f"*{name.split('.')[0][:4]}*") or timm.list_models()
        raise ValueError(f"model.name: unknown timm model {name!r}{suggest(name, candidates)}")
    options: dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate, **kwargs}
    if drop_path_rate is not None:
        options["drop_path_rate"] = drop_path_rate
    if not pretrained:
        return timm.create_model(name, pretrained=False, **options)
    cached = cached_pretrained_file(name)
    if cached is not None:  # load the cached download directly: no hub request, no retries without network
        options["pretrained_cfg_overlay"] = {"file": str(cached)}
    try:
        return timm.create_model(name, pretrained=True, **options)
    except Exception as error:  # noqa: BLE001 - hub/network errors come in many types
        raise WeightLoadError(
            f"could not fetch pretrained weights for {name!r} ({type(error).__name__}: {str(error)[:200]}). "
            "Without network access, download the weights elsewhere and pass the file instead: "
            "model.pretrained=false model.checkpoint=/path/to/weights.pth (or .safetensors / MindSpore .ckpt)"
        ) from None


def cached_pretrained_file(name: str) -> Path | None:
    """The cached download of timm's pretrained weights for ``name``, or None when timm must download them.

    Looks in the Hugging Face hub cache (the model's ``hf_hub_id``) and the torch.hub cache (its ``url``). When
    the weights are in neither, the hub host is probed once (:func:`~visiontune.utils.hub.hub_reachable`, a few
    seconds at most) instead of letting the download retry for a minute without network.

    Raises:
        WeightLoadError: not cached, and ``HF_HUB_OFFLINE`` is set or the hub host cannot be reached; one line
            naming the model, the cache folder and the fixes (``model.checkpoint=<file>`` or
            ``model.pretrained=false``).
    """
    config = timm.models.get_pretrained_cfg(name)
    if config is None or config.file or not (config.hf_hub_id or config.url):
        return None  # a local file, or no pretrained weights: timm says so itself
    cache = hub.hf_hub_cache_dir()
    if config.hf_hub_id:
        repo_id, _, revision = config.hf_hub_id.partition("@")
        for filename in ([config.hf_hub_filename] if config.hf_hub_filename else
                         ["model.safetensors", "pytorch_model.bin"]):
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
    url = config.url if isinstance(config.url, str) else (config.url or [""])[0]  # a URL or a list of mirrors
    if url:
        found_file = hub.torch_hub_cached_file(url)
        if found_file is not None:
            return found_file
    host = "huggingface.co" if config.hf_hub_id else hub.url_host(url)
    if hub.hf_hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not hub.hub_reachable(host):
        reason = f"{host} cannot be reached"
    else:
        return None
    where = f"{config.hf_hub_id} in {cache}" if config.hf_hub_id else f"{url} in {hub.torch_hub_dir()}"
    raise WeightLoadError(
        f"model.pretrained: {reason} and the pretrained weights of {name!r} are not cached ({where}): pass a local "
        "weight file with model.checkpoint=<file> (.pth, .safetensors or MindSpore .ckpt), or start from random "
        "weights with model.pretrained=false")


def load_classifier_weights(model: ImageClassifier, path: str, *, key: str | None = None,
                            min_loaded_fraction: float = 0.9, arch: str | None = None,
                            backbone: str | None = None, mindspore_padding: bool = True) -> LoadReport:
    """Load a local weight file into ``model.net``; a head of another class count is re-initialised.

    Accepts plain timm/torchvision state dicts and visiontune checkpoints (``net.`` prefixed names). A head-only
    checkpoint (``train.save_head_only``'s ``best_head.pt``) loads on top of the backbone weights of ``backbone``,
    else of the backbone source recorded in it (see :func:`load_head_checkpoint`).

    MindCV weights (a MindSpore ``.ckpt``, or a ``.safetensors`` that ``visiontune convert`` wrote from one) of an
    architecture that pads its strided depthwise convolutions MindSpore's way (MobileNetV3) give ``model.net``
    that padding too, unless ``mindspore_padding`` is false (:func:`apply_mindspore_padding`); the report's
    ``mindspore_padding`` then names the architecture.
    """
    state_dict = read_weights(path, key=key, arch=arch)
    if state_dict and all(name.startswith("net.") for name in state_dict):
        state_dict = {name[len("net."):]: tensor for name, tensor in state_dict.items()}
    heads = classifier_head_prefixes(model.net)

    def is_head(name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in heads)

    if state_dict and all(is_head(name) for name in state_dict):
        return load_head_checkpoint(model, path, state_dict, backbone=backbone,
                                    min_loaded_fraction=min_loaded_fraction, arch=arch,
                                    mindspore_padding=mindspore_padding)

    try:
        report = load_weights_with_report(model.net, state_dict, source=str(path), is_head=is_head,
                                          min_loaded_fraction=min_loaded_fraction)
    except WeightValuesError:
        raise
    except WeightLoadError as error:
        raise WeightLoadError(f"model.checkpoint does not fit model {model.net.__class__.__name__}: {error}") from None
    source_arch = mindspore_source(path, arch)
    if source_arch is not None:
        if mindspore_padding:
            if apply_mindspore_padding(model, source_arch):
                report.mindspore_padding = source_arch
        elif get_mindspore_architecture(source_arch).depthwise_same_padding:
            logger.warning("model.mindspore_padding=false: %s keeps timm's symmetric padding, so its outputs differ "
                           "from MindSpore's for the weights of %s", model.net.__class__.__name__, path)
    return report


def apply_mindspore_padding(model: ImageClassifier, arch: str) -> list[str]:
    """Give ``model.net`` the padding of the MindSpore architecture ``arch`` (in place; see
    :func:`visiontune.interop.mindspore.match_mindspore_padding`): the names of the replaced convolutions, empty
    when ``arch`` pads like timm. State-dict names and weights are unchanged."""
    from visiontune.interop.mindspore import match_mindspore_padding

    if not get_mindspore_architecture(arch).depthwise_same_padding:
        return []
    return match_mindspore_padding(model.net, arch)


def get_mindspore_architecture(arch: str) -> Any:
    from visiontune.interop.mindspore import get_mindspore_architecture as lookup

    return lookup(arch)


def classes_in_weights(path: str, name: str, *, key: str | None = None, arch: str | None = None) -> int | None:
    """The class count of the classifier that the weights file ``path`` holds for the timm model ``name`` (the rows
    of its classifier weight), or ``None`` when the file has no such tensor (e.g. a backbone-only file)."""
    config = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    classifier = getattr(config, "classifier", None) if config is not None else None
    if classifier is None and timm.is_model(name):
        classifier = classifier_head_prefixes(create_timm_model(name, num_classes=1)) or None
    if classifier is None:
        return None
    prefixes = [classifier] if isinstance(classifier, str) else list(classifier)
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # the conversion report is logged when the weights load
    try:
        state_dict = read_weights(path, key=key, arch=arch)
    finally:
        logging.disable(previous)
    if state_dict and all(entry.startswith("net.") for entry in state_dict):
        state_dict = {entry[len("net."):]: tensor for entry, tensor in state_dict.items()}
    for prefix in prefixes:
        weight = state_dict.get(f"{prefix}.weight")
        if weight is not None and weight.ndim >= 1:
            return int(weight.shape[0])
    return None


def transfer_pretrained(model: ImageClassifier, name: str, *, min_loaded_fraction: float = 0.9) -> LoadReport:
    """Load timm's pretrained weights for ``name`` into ``model.net`` with a load report (head re-initialised
    when the class count differs)."""
    source_net = create_timm_model(name, num_classes=getattr(timm.models.get_pretrained_cfg(name), "num_classes", 1000)
                                   or 1000, pretrained=True)
    heads = classifier_head_prefixes(model.net)
    return load_weights_with_report(
        model.net,
        source_net.state_dict(),
        source=f"timm pretrained {name}",
        is_head=lambda n: any(n == p or n.startswith(p + ".") for p in heads),
        min_loaded_fraction=min_loaded_fraction,
    )


def backbone_sha256(model: ImageClassifier) -> str:
    """A digest of every tensor of ``model`` outside the classifier (the frozen backbone of a linear probe)."""
    heads = [f"net.{prefix}" for prefix in classifier_head_prefixes(model.net)]
    return tensors_sha256({name: tensor for name, tensor in model.state_dict().items()
                           if not any(name == prefix or name.startswith(prefix + ".") for prefix in heads)})


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of named tensors (names, dtypes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def load_head_checkpoint(model: ImageClassifier, path: str | Path, head: dict[str, torch.Tensor], *,
                         backbone: str | None = None, min_loaded_fraction: float = 0.9,
                         arch: str | None = None, mindspore_padding: bool = True) -> LoadReport:
    """Backbone weights, then the classifier tensors ``head`` of the head-only checkpoint ``path``.

    The backbone comes from ``backbone`` (``model.backbone_checkpoint``), else from the source the training run
    recorded in the file (its ``model.checkpoint``, or timm's pretrained weights). A backbone whose digest differs
    from the recorded one is loaded with a warning: the head was trained on other features.

    Raises:
        WeightLoadError: no backbone source, or head tensors that do not fit the model.
    """
    raw: dict[str, Any] = {}
    if Path(path).suffix.lower() in (".pt", ".pth"):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        raw = loaded if isinstance(loaded, dict) else {}
    source = raw.get("backbone_source") or {}
    backbone = backbone or source.get("checkpoint")
    if backbone:
        report = load_classifier_weights(model, backbone, min_loaded_fraction=min_loaded_fraction, arch=arch,
                                         mindspore_padding=mindspore_padding)
    elif source.get("pretrained"):
        report = transfer_pretrained(model, source["pretrained"], min_loaded_fraction=min_loaded_fraction)
    else:
        raise WeightLoadError(f"{path} holds the head only ({', '.join(sorted(head))}): give the backbone weights "
                              "with model.backbone_checkpoint=path/to/backbone.pth")
    own = model.net.state_dict()
    wrong = [f"{name} {list(tensor.shape)} (model {list(own[name].shape) if name in own else 'none'})"
             for name, tensor in head.items() if name not in own or own[name].shape != tensor.shape]
    if wrong:
        raise WeightLoadError(f"head-only checkpoint {path} does not fit model {model.net.__class__.__name__}: "
                              + ", ".join(wrong))
    report.converted.extend(check_tensors_fit(head, own, source=str(path)))
    model.net.load_state_dict(head, strict=False)
    recorded = raw.get("backbone_sha256")
    if recorded and recorded != backbone_sha256(model):
        logger.warning("the backbone weights differ from those the head of %s was trained on (digest %s...): its "
                       "predictions will differ from the training run's", path, recorded[:12])
    report.source = f"{report.source} + head {path}"
    report.loaded.extend(sorted(head))
    logger.info("loaded the head of %s (%d tensors) on the backbone of %s", path, len(head),
                backbone or f"timm pretrained {source.get('pretrained')}")
    return report
