"""Datasets: formats (FER2013 CSV, Kaggle folders, class folders, FER+), synthetic faces, caching, splits."""

from fer_utils.data.faceset import (
    FaceSet,
    LoadedDataset,
    Skipped,
    TorchFaceDataset,
    class_weights,
    stratified_sample,
    stratified_split,
    weighted_sampler,
)
from fer_utils.data.fer2013_csv import load_fer2013_csv, write_fer2013_csv
from fer_utils.data.ferplus import load_ferplus
from fer_utils.data.folders import load_image_folders
from fer_utils.data.images import open_image, read_face, to_gray, to_grayscale_array
from fer_utils.data.loading import default_data_path, load_dataset, training_splits
from fer_utils.data.synthetic import load_synthetic, synthetic_faces

__all__ = [
    "FaceSet",
    "LoadedDataset",
    "Skipped",
    "TorchFaceDataset",
    "class_weights",
    "default_data_path",
    "load_dataset",
    "load_fer2013_csv",
    "load_ferplus",
    "load_image_folders",
    "load_synthetic",
    "open_image",
    "read_face",
    "stratified_sample",
    "stratified_split",
    "synthetic_faces",
    "to_gray",
    "to_grayscale_array",
    "training_splits",
    "weighted_sampler",
    "write_fer2013_csv",
]
