"""CLI of the mini-VLP: `python -m training.pretrain --help`."""

from __future__ import annotations

import sys

from training.pretrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
