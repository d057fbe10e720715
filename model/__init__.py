"""SemiDAViL model package: pure nn.Modules, configs, class sets, checkpoints and the captioner.

Importing the package sets offline/no-telemetry defaults (see `model._env`) and the torchvision
shim before open_clip or transformers are imported.
"""

from model._env import apply_env_defaults, cache_dir, install_torchvision_shim

apply_env_defaults()
install_torchvision_shim()

from model.checkpoint import CheckpointError, load_model, save_checkpoint  # noqa: E402
from model.config import ModelConfig, get_model_config, list_models  # noqa: E402
from model.factory import PretrainedWeightsUnavailable, create_model  # noqa: E402
from model.segmentor import SegmentationGraph, SemiDAViL  # noqa: E402
from model.text import TextEmbedder  # noqa: E402

__all__ = [
    "CheckpointError",
    "ModelConfig",
    "PretrainedWeightsUnavailable",
    "SegmentationGraph",
    "SemiDAViL",
    "TextEmbedder",
    "cache_dir",
    "create_model",
    "get_model_config",
    "list_models",
    "load_model",
    "save_checkpoint",
]
