"""The same faces in two places: exact duplicates between splits (FER2013's test folders repeat
some training images; notebook 01 counts them), and the same face stored twice with different
compression (the Kaggle JPEGs and FER+'s lossless PNGs of one FER2013 image)."""

from __future__ import annotations

import hashlib

import numpy as np

from fer_utils.data.faceset import FaceSet


def image_hashes(faces: FaceSet) -> np.ndarray:
    """A content hash per face (pixel-identical faces share a hash)."""
    return np.array([hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest() for image in faces.images])


def duplicates_of(faces: FaceSet, reference: FaceSet) -> np.ndarray:
    """Boolean mask over ``faces``: True where the same pixels occur anywhere in ``reference``."""
    if faces.image_size != reference.image_size:
        return np.zeros(len(faces), dtype=bool)
    return np.isin(image_hashes(faces), image_hashes(reference))


MATCH_MAX_DIFFERENCE = 4.0
"""Mean absolute pixel difference (grey levels) below which two faces count as the same image:
above what JPEG re-encoding changes, far below the distance to any other face (the measured
differences: docs/pipeline.md)."""


def match_faces(faces: FaceSet, reference: FaceSet, max_difference: float = MATCH_MAX_DIFFERENCE) -> np.ndarray:
    """For each face, the index of the same image in ``reference`` (-1 where there is none),
    allowing for lossy re-encoding: candidates are the nearest neighbours of 16x16 thumbnails
    (scikit-learn), confirmed by the full images' mean absolute difference."""
    from PIL import Image
    from sklearn.neighbors import NearestNeighbors

    if not len(faces) or not len(reference):
        return np.full(len(faces), -1)

    def thumbnails(images: np.ndarray) -> np.ndarray:
        small = [np.asarray(Image.fromarray(im).resize((16, 16), Image.Resampling.BOX)) for im in images]
        return np.stack(small).reshape(len(images), -1).astype(np.float32)

    index = NearestNeighbors(n_neighbors=1).fit(thumbnails(reference.images))
    nearest = index.kneighbors(thumbnails(faces.images), return_distance=False)[:, 0]
    if faces.image_size != reference.image_size:
        return np.full(len(faces), -1)
    difference = np.abs(faces.images.astype(np.int16) - reference.images[nearest].astype(np.int16)).mean(axis=(1, 2))
    return np.where(difference < max_difference, nearest, -1)
