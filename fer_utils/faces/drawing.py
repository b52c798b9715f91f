"""Drawing results onto photos (boxes, labels): Pillow only, so the torch-free prediction path
(``fer predict --annotate``, the app) draws without matplotlib or torch."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from fer_utils.core.atomic import atomic_path

ANNOTATION_MAX_SIDE = 2048
"""Annotated copies are reduced to this side at most: they are for looking at, and a huge photo
must not cost seconds of drawing and encoding."""


def annotate_image(source, result) -> Image.Image:
    """The photo (in colour when it has colour) with a box and label for every face in ``result``,
    reduced to at most ``ANNOTATION_MAX_SIDE`` pixels per side."""
    from PIL import ImageDraw, ImageFont

    from fer_utils.data.images import HIGH_BIT_DEPTH_MODES, open_image, to_grayscale_array

    image = open_image(source)
    if image.mode in HIGH_BIT_DEPTH_MODES:  # scaled, not clipped, and reduced
        image = Image.fromarray(to_grayscale_array(image))
    image = image.convert("RGB")
    factor = -(-max(image.size) // ANNOTATION_MAX_SIDE)
    if factor > 1:
        image = image.reduce(factor)
    scale = image.width / result.width if result.width else 1.0  # boxes are in the analysed image's pixels
    draw = ImageDraw.Draw(image)
    size = max(12, image.width // 40)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    for face in result.faces:
        if face.box:
            x, y, w, h = (round(v * scale) for v in (face.box.x, face.box.y, face.box.w, face.box.h))
        else:
            x, y, w, h = 0, 0, image.width, image.height
        draw.rectangle([x, y, x + w, y + h], outline=(255, 200, 0), width=max(2, image.width // 300))
        text = f"{face.label} {face.score:.0%}"
        top = max(0, y - size - 4)
        draw.rectangle(draw.textbbox((x, top), text, font=font), fill=(255, 200, 0))
        draw.text((x, top), text, fill=(0, 0, 0), font=font)
    return image


def save_pil(image, path: str | os.PathLike) -> Path:
    """Save a PIL image atomically (format from the file name)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    return path
