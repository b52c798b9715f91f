"""Exact duplicate faces between splits: FER2013's test folders repeat about 8 % of training images."""

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
