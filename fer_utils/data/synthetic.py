"""Procedural synthetic faces: a seeded, offline stand-in for FER2013 for the demo, tests and teaching.

Each class is a set of facial-action settings (mouth curve and opening, brow height and
tilt, eye opening, a nose wrinkle for disgust), loosely following FACS action units.
Every face draws its settings around its class's values with noise, and varies in pose,
scale, skin and background tone, lighting direction, blur and sensor noise, so a model has to
learn the expression, not a template. Classes overlap a little, as real ones do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fer_utils.core.labels import EMOTIONS
from fer_utils.data.faceset import FaceSet, LoadedDataset
from fer_utils.data.images import DEFAULT_FACE_SIZE


@dataclass(frozen=True)
class Expression:
    """Facial-action settings of one class (units are relative to the face size)."""

    mouth_curve: float  # > 0 smile (corners up), < 0 frown
    mouth_open: float  # 0 closed .. 1 wide open
    mouth_width: float  # relative to neutral
    brow_raise: float  # > 0 raised, < 0 lowered
    brow_tilt: float  # > 0 inner ends up (sad, fear), < 0 inner ends down (anger)
    eye_open: float  # relative to neutral
    asymmetry: float = 0.0  # one mouth corner raised (disgust, contempt)
    wrinkle: float = 0.0  # nose wrinkle lines (disgust)


EXPRESSIONS: dict[str, Expression] = {
    "angry": Expression(-0.35, 0.05, 0.85, -0.7, -1.0, 0.75),
    "disgust": Expression(-0.45, 0.2, 0.9, -0.35, -0.4, 0.6, asymmetry=0.8, wrinkle=1.0),
    "fear": Expression(-0.25, 0.5, 1.2, 0.75, 0.85, 1.45),
    "happy": Expression(1.0, 0.3, 1.2, 0.1, 0.0, 0.8),
    "neutral": Expression(0.0, 0.0, 1.0, 0.0, 0.0, 1.0),
    "sad": Expression(-0.9, 0.0, 0.9, 0.1, 0.95, 0.8),
    "surprise": Expression(0.0, 1.0, 0.8, 1.0, 0.15, 1.5),
    "contempt": Expression(0.25, 0.0, 0.95, 0.0, 0.0, 0.9, asymmetry=1.0),
}

_JITTER = Expression(0.3, 0.15, 0.12, 0.3, 0.3, 0.2, asymmetry=0.25, wrinkle=0.3)
"""Standard deviation of each setting around its class value."""


def _jittered(expression: Expression, rng: np.random.Generator) -> Expression:
    fields = Expression.__dataclass_fields__
    return Expression(**{name: getattr(expression, name) + rng.normal(0, getattr(_JITTER, name)) for name in fields})


def draw_face(expression: Expression, rng: np.random.Generator, size: int = DEFAULT_FACE_SIZE) -> np.ndarray:
    """Draw one face with the given expression and random pose/lighting; returns (size, size) uint8.
    The random draws come in a fixed order (head, then pose and lighting), so a seed always gives
    the same faces."""
    s = size * 4  # draw at 4x and downsample for antialiasing
    background = rng.uniform(20, 235)
    skin = float(np.clip(background + rng.choice([-1, 1]) * rng.uniform(40, 110), 60, 225))
    dark = max(0.0, skin - rng.uniform(70, 130))
    canvas = Image.new("F", (s, s), background)
    d = ImageDraw.Draw(canvas)
    scale = rng.uniform(0.85, 1.08)
    cx, cy = s / 2 + rng.normal(0, s * 0.03), s / 2 + rng.normal(0, s * 0.03)
    fw, fh = 0.36 * s * scale * rng.uniform(0.92, 1.08), 0.46 * s * scale
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    if rng.random() < 0.5:  # hair
        d.chord([cx - fw * 1.05, cy - fh * 1.08, cx + fw * 1.05, cy + fh * 0.2], 180, 360, fill=dark * 0.6)
        d.ellipse([cx - fw * 0.95, cy - fh * 0.62, cx + fw * 0.95, cy + fh * 0.9], fill=skin)
    face = _Face(cx, cy, fw, fh, 0.028 * s * scale, skin, dark)  # u: line-width unit, proportional to the face
    _draw_features(d, face, expression)
    return _photographed(canvas, rng, size, background)


@dataclass(frozen=True)
class _Face:
    """Where the face sits on the canvas (centre, half width and height), its line-width unit and tones."""

    cx: float
    cy: float
    fw: float
    fh: float
    u: float
    skin: float
    dark: float


def _draw_features(d: ImageDraw.ImageDraw, face: _Face, e: Expression) -> None:
    """Eyes and brows, nose (and wrinkles), mouth: the parts an expression moves, top to bottom."""
    cx, cy, fw, fh, u, skin, dark = face.cx, face.cy, face.fw, face.fh, face.u, face.skin, face.dark

    eye_y = cy - 0.12 * fh
    eye_dx, eye_w = 0.42 * fw, 0.2 * fw
    eye_h = max(0.8 * u, 0.09 * fh * e.eye_open)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        d.ellipse([ex - eye_w, eye_y - eye_h, ex + eye_w, eye_y + eye_h], fill=min(255, skin + 40))
        pupil = min(eye_h, eye_w * 0.5)
        d.ellipse([ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil], fill=dark * 0.5)
        brow_y = eye_y - 0.17 * fh - e.brow_raise * 0.08 * fh
        inner = (ex - side * eye_w * 0.9, brow_y - e.brow_tilt * 0.07 * fh)
        outer = (ex + side * eye_w * 1.2, brow_y + e.brow_tilt * 0.02 * fh)
        d.line([inner, outer], fill=dark, width=max(2, int(2.2 * u)))

    nose_y = cy + 0.15 * fh
    d.line([(cx, eye_y + 0.05 * fh), (cx - 0.06 * fw, nose_y)], fill=dark * 0.5 + skin * 0.5, width=max(1, int(u)))
    d.line([(cx - 0.1 * fw, nose_y), (cx + 0.1 * fw, nose_y)], fill=dark * 0.5 + skin * 0.5, width=max(1, int(u)))
    if e.wrinkle > 0.3:
        for k in (-1, 1):
            d.line(
                [(cx + k * 0.08 * fw, eye_y + 0.04 * fh), (cx + k * 0.15 * fw, eye_y + 0.14 * fh)],
                fill=dark * 0.6 + skin * 0.4,
                width=max(1, int(u * min(e.wrinkle, 1.5))),
            )

    mouth_y = cy + 0.45 * fh
    half_w = 0.32 * fw * max(0.5, e.mouth_width)
    xs = np.linspace(-1, 1, 25)
    curve = e.mouth_curve * 0.1 * fh
    upper = mouth_y - curve * xs**2 + curve / 2 - e.asymmetry * 0.06 * fh * np.clip(xs, 0, None)
    opening = max(0.0, e.mouth_open) * 0.16 * fh * np.sqrt(np.clip(1 - xs**2, 0, 1))
    lower = upper + opening
    px = cx + xs * half_w
    if e.mouth_open > 0.12:
        d.polygon(list(zip(px, upper, strict=False)) + list(zip(px[::-1], lower[::-1], strict=False)), fill=dark * 0.4)
    else:
        d.line(list(zip(px, upper, strict=False)), fill=dark * 0.7, width=max(2, int(1.8 * u)), joint="curve")


def _photographed(canvas: Image.Image, rng: np.random.Generator, size: int, background: float) -> np.ndarray:
    """The drawing as a camera would give it: tilted, downsampled, sometimes blurred, lit unevenly, noisy."""
    image = canvas.rotate(rng.normal(0, 8), resample=Image.Resampling.BILINEAR, fillcolor=background)
    image = image.resize((size, size), Image.Resampling.BOX).convert("L")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    pixels = np.asarray(image, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * np.linspace(-1, 1, size)[None, :] + np.sin(angle) * np.linspace(-1, 1, size)[:, None]
    pixels = (
        pixels * rng.uniform(0.7, 1.15) + ramp * rng.uniform(0, 40) + rng.normal(0, rng.uniform(2, 10), pixels.shape)
    )
    return np.clip(pixels, 0, 255).astype(np.uint8)


def synthetic_faces(
    n_per_class: int = 100, seed: int = 0, size: int = DEFAULT_FACE_SIZE, classes: tuple[str, ...] = EMOTIONS
) -> FaceSet:
    """Generate ``n_per_class`` faces of every class, shuffled; the same seed gives the same faces."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(classes)), n_per_class))
    images = (
        np.stack([draw_face(_jittered(EXPRESSIONS[classes[k]], rng), rng, size) for k in labels])
        if len(labels)
        else np.zeros((0, size, size), np.uint8)
    )
    sources = np.array([f"synthetic:seed{seed}:{i}" for i in range(len(labels))])
    return FaceSet(images, labels, classes, sources)


SYNTHETIC_SPLIT_SIZES = {"train": 300, "val": 60, "test": 60}
"""Faces per class in each split of the built-in synthetic dataset (2,940 faces in all)."""


def load_synthetic(
    seed: int = 0, size: int = DEFAULT_FACE_SIZE, scale: float = 1.0, classes: tuple[str, ...] = EMOTIONS
) -> LoadedDataset:
    """The built-in synthetic dataset: train/val/test splits drawn with different seeds.

    ``scale`` multiplies every split's size (e.g. 0.2 for a seconds-long smoke run).
    """
    splits = {
        name: synthetic_faces(max(2, round(n * scale)), seed * 1000 + i, size, classes)
        for i, (name, n) in enumerate(SYNTHETIC_SPLIT_SIZES.items())
    }
    return LoadedDataset(
        splits, "synthetic", "synthetic", classes, notes=["procedural synthetic faces (no real data given)"]
    )
