"""Datasets: readers for FER-2013, FER+, RAF-DB, AffectNet and image folders behind one interface."""

from .base import DataError, Dataset, Split, combine_datasets, concat_splits, stratified_indices
from .images import read_image, to_model_input
from .labels import EMOTIONS, canonical, match_classes
from .prepare import Prepared, Preprocessing, prepare_split
from .registry import data_root, detect_kind, load_dataset

__all__ = [
    "EMOTIONS",
    "DataError",
    "Dataset",
    "Prepared",
    "Preprocessing",
    "Split",
    "canonical",
    "combine_datasets",
    "concat_splits",
    "data_root",
    "detect_kind",
    "load_dataset",
    "match_classes",
    "prepare_split",
    "read_image",
    "stratified_indices",
    "to_model_input",
]
