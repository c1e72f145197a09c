"""RetinaFace face detector (5 landmarks) with MobileNetV1-0.25 and ResNet-50 backbones.

Compatible with the weights of the public reference PyTorch implementation. Typical use::

    model = create_retinaface("mobilenet0.25", checkpoint="mobilenet0.25_Final.pth").eval()
    detections = model(load_retinaface_input("photo.jpg")[None])
"""

from visiontune.models.retinaface.box_coder import BoxCoder
from visiontune.models.retinaface.factory import (
    RETINAFACE_BACKBONES,
    RetinaFaceBackbone,
    create_retinaface,
    list_retinaface_backbones,
)
from visiontune.models.retinaface.loading import (
    convert_reference_state_dict,
    load_backbone_state_dict,
    load_retinaface_state_dict,
    read_state_dict,
    strip_prefixes,
)
from visiontune.models.retinaface.loss import RetinaFaceLoss, validate_target
from visiontune.models.retinaface.matcher import match_priors
from visiontune.models.retinaface.net import RetinaFace
from visiontune.models.retinaface.postprocess import RetinaFacePostprocessConfig, postprocess_detections
from visiontune.models.retinaface.preprocess import (
    RETINAFACE_BGR_MEAN,
    load_retinaface_input,
    normalize_bgr,
    read_image_bgr,
)
from visiontune.models.retinaface.priors import PriorCache, PriorConfig, count_priors, generate_priors

__all__ = [
    "RETINAFACE_BACKBONES",
    "RETINAFACE_BGR_MEAN",
    "BoxCoder",
    "PriorCache",
    "PriorConfig",
    "RetinaFace",
    "RetinaFaceBackbone",
    "RetinaFaceLoss",
    "RetinaFacePostprocessConfig",
    "convert_reference_state_dict",
    "count_priors",
    "create_retinaface",
    "generate_priors",
    "list_retinaface_backbones",
    "load_backbone_state_dict",
    "load_retinaface_input",
    "load_retinaface_state_dict",
    "match_priors",
    "normalize_bgr",
    "postprocess_detections",
    "read_image_bgr",
    "read_state_dict",
    "strip_prefixes",
    "validate_target",
]
