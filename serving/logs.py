"""Quiet logs for the command-line entry points: ours at INFO, libraries' only from WARNING.

The ONNX exporter's passes (onnx_ir, onnxscript) log every rewrite at INFO: ~270 lines at the
start of `make demo` with a root logger at INFO. `configure_logging` keeps the root at WARNING
and raises only this project's loggers to INFO; `quiet_libraries` just silences those passes (for
the BentoML service, whose logging BentoML configures).
"""

from __future__ import annotations

import logging
import warnings

OUR_LOGGERS = ("semidavil", "serving", "ui", "model", "training")
CHATTY_LIBRARIES = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")
FORMAT = "%(levelname)s %(name)s: %(message)s"


def quiet_libraries() -> None:
    """Libraries' INFO logs off, and the one deprecation warning torch's export prints each time."""
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    # torch.export's pytree pickling, inside torch itself: nothing a user can act on
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def configure_logging(level: int = logging.INFO) -> None:
    """Root handler at WARNING with one format; this project's loggers at `level`."""
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    quiet_libraries()
