"""Datasets (Cityscapes, GTA5, SYNTHIA) returning raw uint8 images and train-id labels, and splits."""

from training.data.base import Example, SampleFiles, SegmentationDataset
from training.data.cityscapes import CityscapesDataset, cityscapes_from_pairs
from training.data.errors import DatasetError
from training.data.gta5 import GTA5Dataset
from training.data.splits import make_split, read_split, write_split
from training.data.synthia import SynthiaDataset

__all__ = [
    "CityscapesDataset",
    "DatasetError",
    "Example",
    "GTA5Dataset",
    "SampleFiles",
    "SegmentationDataset",
    "SynthiaDataset",
    "cityscapes_from_pairs",
    "make_split",
    "read_split",
    "write_split",
]
