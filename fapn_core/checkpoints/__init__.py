"""Checkpoints: the native format (safetensors + JSON model card) and import of official checkpoints.

Official FaPN-full / detectron2 checkpoints come as ``.pth`` (a dict with ``"model"``; read with
``torch.load(weights_only=True)``) or detectron2 ``.pkl`` (a pickled dict of numpy arrays; read with a
restricted unpickler that admits numpy arrays and plain containers only). Keys are mapped onto the native
modules (:func:`detectron2_to_native`); missing, unexpected and mis-shaped keys are reported and a partial load
is refused unless ``allow_partial=True``. Nothing is ever downloaded.

``errors`` (CheckpointError, size limit) · ``keys`` (official ↔ native names) · ``reading`` (safe file reading) ·
``configs`` (config from keys or a detectron2 dump) · ``loading`` (state-dict matching, official import) ·
``cards`` (model cards, class names of releases) · ``native`` (safetensors format, load/convert) · ``bundled``.
"""

from .bundled import assets_dir, bundled_models, resolve_model
from .cards import FORMAT_VERSION, make_card, official_class_fields, semantic_classes
from .configs import config_from_detectron2, infer_config
from .errors import DEFAULT_MAX_BYTES, CheckpointError
from .keys import detectron2_to_native, export_detectron2_state_dict, native_to_detectron2
from .loading import LoadReport, import_official, load_state_dict
from .native import CARD_KEY, convert, detector_from_panoptic, load_checkpoint, load_native, read_card, save_native
from .reading import read_official_state_dict

__all__ = [
    "CARD_KEY", "DEFAULT_MAX_BYTES", "FORMAT_VERSION", "CheckpointError", "LoadReport", "assets_dir", "bundled_models",
    "config_from_detectron2", "convert", "detector_from_panoptic", "detectron2_to_native",
    "export_detectron2_state_dict", "import_official", "infer_config", "load_checkpoint", "load_native",
    "load_state_dict", "make_card", "native_to_detectron2", "official_class_fields", "read_card",
    "read_official_state_dict", "resolve_model", "save_native", "semantic_classes",
]
