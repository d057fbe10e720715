"""SemiDAViL model package: pure nn.Modules, configs, class sets, checkpoints and the captioner.

Importing the package sets offline/no-telemetry defaults (see `model._env`) and the torchvision
shim before open_clip or transformers are imported.
"""

from model._env import apply_env_defaults, install_torchvision_shim

apply_env_defaults()
install_torchvision_shim()
