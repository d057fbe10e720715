"""Evaluation: whole-set confusion matrix, per-class IoU and mIoU."""

from training.evaluation.metrics import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
