"""Reading any image file (size, mode, format) into the 48x48-style grayscale faces we train on."""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_utils.core.errors import FERDataError


@dataclass
class Skipped:
    """A file or row that was not loaded, and why."""

    source: str
    reason: str


NOT_REACHED = "not analysed: the run was stopped before it"
"""The reason given for the inputs a stopped run did not reach (rerun them)."""


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
"""File endings treated as images when scanning folders (case-insensitive)."""

DEFAULT_FACE_SIZE = 48
"""FER2013's face size; the stored size of every dataset unless asked otherwise."""

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray
"""What inference accepts as an image: a path, encoded bytes, a PIL image or a numpy array."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True for names with an image extension that are not hidden files (``.DS_Store``, ``._x.jpg``)."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
"""Pillow modes with more than 8 bits per pixel: scaled by their range, never clipped, to 8 bits."""

MAX_WORKING_SIDE = 8192
"""Larger images are reduced (by an integer box filter) before any float conversion, so a tiny
file that decodes to a huge picture costs bounded memory and time. Face detection works at
1024 px anyway."""


def _reduce_factor(size: tuple[int, int], max_side: int | None) -> int:
    return 1 if max_side is None else -(-max(size) // max_side)


def files_under(folder: Path) -> tuple[list[Path], list[Skipped]]:
    """Every regular file under ``folder`` (recursively, sorted), plus its broken symbolic links
    (missing target or a loop) reported as skipped rather than silently dropped."""
    files: list[Path] = []
    broken: list[Skipped] = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            files.append(p)
        elif p.is_symlink() and not p.exists():
            broken.append(Skipped(str(p), "broken symbolic link (its target is missing or a loop)"))
    return files, broken


def to_grayscale_array(image: Image.Image, max_side: int | None = MAX_WORKING_SIDE) -> np.ndarray:
    """Convert any PIL mode to a uint8 grayscale array, scaling 16-bit and float images properly.

    ``Image.convert("L")`` clips 16-bit values instead of scaling them (a 16-bit PNG comes out
    white), so high-bit-depth modes are rescaled by their range here. Images with a side above
    ``max_side`` are reduced first (see ``MAX_WORKING_SIDE``); work stays in uint8/float32.
    """
    factor = _reduce_factor(image.size, max_side)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image)
        if factor > 1:  # area average without a full-size float copy; Pillow's reduce() rejects 16-bit modes
            import cv2

            if values.dtype not in (np.uint16, np.float32):  # "I" (int32): OpenCV does not resize it
                values = values.astype(np.float32)
            size = (values.shape[1] // factor, values.shape[0] // factor)
            values = cv2.resize(values, size, interpolation=cv2.INTER_AREA)
        values = values.astype(np.float32, copy=False)
        peak = float(values.max()) if values.size else 0.0
        top = 65535.0 if image.mode.startswith("I;16") or peak > 255 else 255.0
        if image.mode == "F" and peak <= 1.0:
            top = 1.0
        values *= 255.0 / top
        values += 0.5
        np.clip(values, 0, 255, out=values)
        return values.astype(np.uint8)
    if factor > 1:
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "L").reduce(factor)
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


def _exif_upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the pixels as stored (they are fine)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - Pillow raises struct.error, TypeError, ... on mistyped tags
        return image


MAX_PIXELS = Image.MAX_IMAGE_PIXELS
"""The one limit on a decoded picture's pixel count, for photos (Pillow's decompression-bomb
guard, which this is) and every video frame: past it a single picture takes gigabytes."""


def check_pixels(width: int, height: int, source: str) -> None:
    """FERDataError naming ``source`` when a ``width`` x ``height`` picture is over ``MAX_PIXELS``,
    said before it is decoded wherever the size is known first (a video's header)."""
    if MAX_PIXELS is not None and width * height > MAX_PIXELS:
        raise FERDataError(
            source=source,
            reason=f"{width}x{height} pixels is over the limit of {MAX_PIXELS / 1e6:.0f} megapixels per picture; "
            "downscale it first",
        )


def open_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """Open a path, bytes or PIL image, fully decoded and EXIF-rotated.

    Raises FERDataError naming the file for missing, unreadable, non-image, corrupt, truncated or
    decompression-bomb inputs (Pillow's size guard stays on). A broken EXIF block is ignored.
    """
    if isinstance(source, Image.Image):
        return _exif_upright(source)
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if (
        not isinstance(source, bytes)
        and os.path.exists(source)
        and not os.path.isdir(source)
        and not stat.S_ISREG(os.stat(source).st_mode)  # a FIFO or device would block or never end
    ):
        raise FERDataError(source=name, reason="not a regular file (a pipe, socket or device); give an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
            with fp:
                image = Image.open(fp)  # reads the header only
                check_pixels(*image.size, name)  # the one limit, before any pixel is decoded
                image.load()
    except FERDataError:
        raise
    except FileNotFoundError:
        raise FERDataError(source=name, reason="file not found (or a broken symbolic link)") from None
    except IsADirectoryError:
        raise FERDataError(source=name, reason="is a folder, not an image") from None
    except PermissionError:
        raise FERDataError(
            source=name, reason="cannot read (permission denied); check the file's permissions"
        ) from None
    except UnidentifiedImageError:
        raise FERDataError(
            source=name, reason=f"not an image file Pillow can read (is it really {Path(name).suffix or 'an image'}?)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FERDataError(source=name, reason=f"image too large to open safely ({err}); downscale it first") from None
    except MemoryError:
        raise FERDataError(
            source=name, reason="image too large to decode in the memory available; downscale it first"
        ) from None
    except Exception as err:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, ... on bad bytes
        raise FERDataError(source=name, reason=f"corrupt or truncated image ({type(err).__name__}: {err})") from None
    return _exif_upright(image)


def to_gray(source: ImageSource) -> np.ndarray:
    """Any input as a uint8 grayscale array: files and bytes are decoded with EXIF rotation;
    numpy arrays may be gray (H, W), RGB or RGBA (H, W, 3|4), uint8 or float in 0..1."""
    return load_gray(source)[0]


def load_gray(source: ImageSource) -> tuple[np.ndarray, tuple[int, int]]:
    """``to_gray(source)`` and the source's own (width, height): the two differ for photos above
    ``MAX_WORKING_SIDE``, which are analysed reduced and reported in their own pixels."""
    if not isinstance(source, np.ndarray):
        image = open_image(source)
        return to_grayscale_array(image), image.size
    gray = _array_to_gray(source)
    return gray, (gray.shape[1], gray.shape[0])


def _array_to_gray(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        array = np.clip(array * (255 if array.max() <= 1 else 1), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return to_grayscale_array(Image.fromarray(array))
    raise FERDataError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")


def read_face(source: str | os.PathLike | bytes | Image.Image, size: int = DEFAULT_FACE_SIZE) -> np.ndarray:
    """Read an image that already shows one face and return it as a ``size`` x ``size`` uint8 array."""
    return square_resize(to_grayscale_array(open_image(source)), size)
