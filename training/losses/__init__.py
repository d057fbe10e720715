"""Training losses."""

from training.losses.dyce import DyCELoss, dyce_loss

__all__ = ["DyCELoss", "dyce_loss"]
