"""Reading any image file (size, mode, format) into the 48x48-style grayscale faces we train on."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_utils.errors import FERDataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
"""File endings treated as images when scanning folders (case-insensitive)."""

DEFAULT_FACE_SIZE = 48
"""FER2013's face size; the stored size of every dataset unless asked otherwise."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True for names with an image extension that are not hidden files (``.DS_Store``, ``._x.jpg``)."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def to_grayscale_array(image: Image.Image) -> np.ndarray:
    """Convert any PIL mode to a uint8 grayscale array, scaling 16-bit and float images properly.

    ``Image.convert("L")`` clips 16-bit values instead of scaling them (a 16-bit PNG comes out
    white), so high-bit-depth modes are rescaled by their range here.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F" and values.max() <= 1.0:
            top = 1.0
        return np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def square_resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Center-crop a grayscale array to a square and resize it to ``size`` x ``size`` (antialiased)."""
    image = Image.fromarray(gray)
    if image.size != (size, size):
        image = ImageOps.fit(
            image,
            (size, size),
            method=Image.Resampling.BILINEAR if min(image.size) <= size else Image.Resampling.LANCZOS,
        )
    return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one


def open_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """Open a path, bytes or PIL image, fully decoded and EXIF-rotated.

    Raises FERDataError naming the file for missing, non-image, corrupt, truncated or
    decompression-bomb inputs (Pillow's size guard stays on).
    """
    if isinstance(source, Image.Image):
        return ImageOps.exif_transpose(source)
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
            with fp:
                image = Image.open(fp)
                image.load()
                return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise FERDataError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise FERDataError(f"{name}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise FERDataError(
            f"{name}: not an image file Pillow can read (is it really {Path(name).suffix or 'an image'}?)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FERDataError(f"{name}: image too large to open safely ({err}); downscale it first") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise FERDataError(f"{name}: corrupt or truncated image ({err})") from None


def read_face(source: str | os.PathLike | bytes | Image.Image, size: int = DEFAULT_FACE_SIZE) -> np.ndarray:
    """Read an image that already shows one face and return it as a ``size`` x ``size`` uint8 array."""
    return square_resize(to_grayscale_array(open_image(source)), size)
