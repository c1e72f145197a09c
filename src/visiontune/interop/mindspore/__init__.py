"""MindSpore interop: read/write ``.ckpt`` files without MindSpore and map MindCV / MindFace names.

Reading and writing (NumPy arrays, no MindSpore or protobuf needed)::

    tensors = read_mindspore_checkpoint("mobilenet_v2_100.ckpt")       # {name: np.ndarray}
    save_mindspore_checkpoint("out.ckpt", tensors)

Converting to PyTorch names (timm classification models, visiontune RetinaFace)::

    state_dict, report = convert_mindspore_state_dict(tensors, "mobilenet_v2_100")
    model = timm.create_model("mobilenetv2_100", num_classes=1000)
    model.load_state_dict(state_dict, strict=True)

    mindspore_tensors = to_mindspore_state_dict(model.state_dict(), "mobilenet_v2_100")

MindCV's MobileNetV3 pads strided depthwise convolutions differently from timm; call
``match_mindspore_padding(model, arch)`` after loading to reproduce MindSpore's outputs exactly.
"""

from visiontune.interop.mindspore.adapt import match_mindspore_padding
from visiontune.interop.mindspore.checkpoint_format import (
    SUPPORTED_TENSOR_TYPES,
    CheckpointTensorInfo,
    describe_file_format,
)
from visiontune.interop.mindspore.checkpoint_reader import list_mindspore_checkpoint, read_mindspore_checkpoint
from visiontune.interop.mindspore.checkpoint_writer import save_mindspore_checkpoint
from visiontune.interop.mindspore.errors import (
    ArchitectureMismatchError,
    CorruptCheckpointError,
    MindSporeCheckpointError,
    NotAMindSporeCheckpointError,
    UnknownArchitectureError,
    UnsupportedTensorTypeError,
)
from visiontune.interop.mindspore.mapping import (
    RESNET50_ARCHITECTURES,
    ConversionReport,
    MindSporeArchitecture,
    check_state_dict_shapes,
    convert_mindspore_state_dict,
    detect_resnet50_naming,
    get_mindspore_architecture,
    list_mindspore_architectures,
    load_mindspore_state_dict,
    to_mindspore_state_dict,
)

__all__ = [
    "RESNET50_ARCHITECTURES",
    "SUPPORTED_TENSOR_TYPES",
    "ArchitectureMismatchError",
    "CheckpointTensorInfo",
    "ConversionReport",
    "CorruptCheckpointError",
    "MindSporeArchitecture",
    "MindSporeCheckpointError",
    "NotAMindSporeCheckpointError",
    "UnknownArchitectureError",
    "UnsupportedTensorTypeError",
    "check_state_dict_shapes",
    "convert_mindspore_state_dict",
    "describe_file_format",
    "detect_resnet50_naming",
    "get_mindspore_architecture",
    "list_mindspore_architectures",
    "list_mindspore_checkpoint",
    "load_mindspore_state_dict",
    "match_mindspore_padding",
    "read_mindspore_checkpoint",
    "save_mindspore_checkpoint",
    "to_mindspore_state_dict",
]
