"""Chest radiograph phantom, part 1: the detector, its noise, and the patient's normal anatomy.

Holds `Detector` (pixel grids and precomputed noise textures for one image size), `Anatomy`
with `draw_anatomy` / `study_anatomy` (one patient's body, pose and exposure, and its small
changes between studies), `Canvas` (patient coordinates of every pixel, windows into them,
polyline rasterising) and the normal-anatomy fields every image starts from: ribs, spine,
clavicles, trachea, gastric air, breasts.

Data flow: this module -> `cxr.findings` (what each finding adds or changes) ->
`cxr.render` (composes one frontal or lateral image) -> `cxr.writer.write_chexpert_phantom`
(the raw phantom folder: CheXpert-v1.0-small CSVs + JPEGs) -> `synthjax.data.chexpert` (the
CheXpert TFDS builder) -> array_record shards.

Geometry is in "width units": x in [-0.5, 0.5] from image left to right, y from 0 at the top
down to height / width (~1.2). Radiographic convention: the patient's right is image left.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from synthjax.data.image_ops import gaussian_blur

HEIGHT_RATIO = 1.2  # CheXpert-small frontal images are ~320 wide and ~390 high.


def ramp(t: np.ndarray) -> np.ndarray:
    """clip(t, 0, 1): the cheap soft edge used for every mask."""
    return np.clip(t, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Detector: pixel grid and noise textures for one image size


class Detector:
    """The pixel grids and precomputed noise textures for images `width` wide.

    Smooth anatomy and findings are computed on a working grid `factor` times coarser (2 from
    192 px up) and upsampled once; lung texture, devices and noise are added at full
    resolution. Drawing fresh gaussian noise per image costs more than the whole rendering, so
    textures are drawn once into banks twice the image size and each image takes a random,
    randomly flipped crop.
    """

    def __init__(self, width: int, *, seed: int = 0):
        self.width = width
        self.height = round(width * HEIGHT_RATIO)
        self.factor = 2 if width >= 192 and width % 2 == 0 else 1
        self.work_width = width // self.factor
        self.work_height = -(-self.height // self.factor)
        self.height_units = self.height / width
        # Working pixel centres, placed where Pillow's resize puts them on the full grid.
        x = (np.arange(self.work_width) + 0.5) / self.work_width - 0.5
        y = (np.arange(self.work_height) + 0.5) / self.work_height * self.height_units
        self.x, self.y = x.astype(np.float32), y.astype(np.float32)
        rng = np.random.default_rng([seed, 7001])
        full = (2 * self.height, 2 * width)
        self.quantum = rng.standard_normal(full, dtype=np.float32)
        self.mottle = _smooth_noise(
            rng, (2 * self.work_height, 2 * self.work_width), scale=0.03 * self.work_width
        )
        # Vessel-like texture: the zero crossings of smooth noise form a branching network of
        # thin lines; stretched vertically because lung vessels run mostly cranio-caudally.
        fine = _smooth_noise(rng, full, scale=0.006 * width, scale_y=0.03 * width)
        ridges = ramp(1.0 - np.abs(fine) * 1.2) ** 2
        self.vessels = ((ridges - ridges.mean()) / (ridges.std() + 1e-6)).astype(np.float32)

    def crop(self, bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random, randomly flipped view of a texture bank, half the bank's size."""
        height, width = bank.shape[0] // 2, bank.shape[1] // 2
        oy = int(rng.integers(0, bank.shape[0] - height + 1))
        ox = int(rng.integers(0, bank.shape[1] - width + 1))
        view = bank[oy : oy + height, ox : ox + width]
        flip_y, flip_x = rng.random(2) < 0.5
        return view[:: -1 if flip_y else 1, :: -1 if flip_x else 1]

    def upsample(self, field: np.ndarray) -> np.ndarray:
        """Working grid float32[h, w] -> full grid float32[H, W] (bilinear)."""
        if field.shape == (self.height, self.width):
            return field
        image = Image.fromarray(np.ascontiguousarray(field, dtype=np.float32))
        resized = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.array(resized, dtype=np.float32)  # writable copy


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    scale: float,
    scale_y: float | None = None,
) -> np.ndarray:
    """Unit-variance gaussian noise, float32[shape].

    Its correlation length is ~`scale` px across and ~`scale_y` (default `scale`) px down: the
    noise is blurred (sigma 4 px) on a grid shrunk by scale / 4 per axis, then enlarged.
    """
    scale_y = scale if scale_y is None else scale_y
    fx, fy = max(1.0, scale / 4.0), max(1.0, scale_y / 4.0)
    small = (max(8, int(shape[0] / fy)), max(8, int(shape[1] / fx)))
    sigma = min(scale / fx, scale_y / fy)
    field = gaussian_blur(rng.standard_normal(small, dtype=np.float32), sigma)
    if small != shape:
        img = Image.fromarray(field).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
        field = np.asarray(img, dtype=np.float32)
    return ((field - field.mean()) / (field.std() + 1e-6)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Patients


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """One patient's body, pose and exposure in one study (width units, radians)."""

    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0
    rotation: float = 0.0
    body_half_width: float = 0.46
    lung_offset: float = 0.19  # lung ellipse centre distance from the midline
    lung_half_width: float = 0.175
    lung_top: float = 0.16
    lung_center_y: float = 0.62
    diaphragm_right: float = 0.78  # dome top, image left
    diaphragm_left: float = 0.805
    heart_x: float = 0.035
    heart_y: float = 0.70
    heart_half_width: float = 0.145
    heart_half_height: float = 0.115
    heart_tilt: float = 0.35
    mediastinum_half_width: float = 0.06
    rib_spacing: float = 0.072
    rib_phase: float = 0.0
    bone_density: float = 1.0
    clavicle_y: float = 0.155
    soft_tissue: float = 0.5
    lung_contrast: float = 0.33
    texture: float = 1.0
    breast: float = 0.0
    gain: float = 1.0
    offset: float = 0.0
    tone: float = 0.0
    ap: bool = True


def draw_anatomy(
    rng: np.random.Generator, *, variation: float = 1.0, female: bool = False, age: int = 60
) -> Anatomy:
    """Draws a patient; `variation` scales every between-patient standard deviation."""
    v = variation

    def n(sd: float) -> float:
        return float(rng.normal(0.0, sd * v))

    lung_top = 0.16 + n(0.015)
    return Anatomy(
        shift_x=n(0.025),
        shift_y=n(0.03),
        scale=float(np.exp(n(0.06))) * (0.96 if female else 1.0),
        rotation=n(0.04),
        body_half_width=0.46 + n(0.02),
        lung_offset=0.19 + n(0.008),
        lung_half_width=0.175 + n(0.01),
        lung_top=lung_top,
        lung_center_y=0.62 + n(0.01),
        diaphragm_right=0.78 + n(0.025),
        diaphragm_left=0.805 + n(0.025) * 0.5,
        heart_x=0.035 + n(0.01),
        heart_y=0.70 + n(0.015),
        heart_half_width=0.145 + 0.0003 * (age - 60) + n(0.012),
        heart_half_height=0.115 + n(0.008),
        heart_tilt=0.35 + n(0.08),
        mediastinum_half_width=0.06 + n(0.007),
        rib_spacing=0.072 + n(0.004),
        rib_phase=float(rng.random()),
        bone_density=max(0.3, 1.0 - 0.004 * (age - 60) + n(0.15)),
        clavicle_y=0.155 + n(0.015),
        soft_tissue=0.5 + n(0.03),
        lung_contrast=0.33 + n(0.03),
        texture=max(0.3, 1.0 + n(0.15)),
        breast=float(rng.uniform(0.5, 1.0)) if female else 0.0,
        gain=float(np.exp(n(0.1))),
        offset=n(0.03),
        tone=n(0.15),
    )


def study_anatomy(
    anatomy: Anatomy, rng: np.random.Generator, *, variation: float, ap: bool
) -> Anatomy:
    """The same patient on another day: small changes of pose, inspiration and exposure."""
    v = variation

    def n(sd: float) -> float:
        return float(rng.normal(0.0, sd * v))

    inspiration = n(0.012)
    return dataclasses.replace(
        anatomy,
        shift_x=anatomy.shift_x + n(0.01),
        shift_y=anatomy.shift_y + n(0.01),
        rotation=anatomy.rotation + n(0.015),
        diaphragm_right=anatomy.diaphragm_right + inspiration,
        diaphragm_left=anatomy.diaphragm_left + inspiration,
        gain=anatomy.gain * float(np.exp(n(0.04))),
        offset=anatomy.offset + n(0.015),
        ap=ap,
    )


# ---------------------------------------------------------------------------------------------
# Patient coordinates and normal anatomy


class Canvas:
    """Patient coordinates of every working-grid pixel for one image, and windows into them."""

    pivot_y = 0.55  # patients rotate and scale about the middle of the chest

    def __init__(self, detector: Detector, anatomy: Anatomy):
        self.detector = detector
        self.width, self.height = detector.work_width, detector.work_height
        self.px = detector.factor / detector.width  # one working pixel in width units
        self.cos, self.sin = math.cos(anatomy.rotation), math.sin(anatomy.rotation)
        self.scale = anatomy.scale
        self.cx, self.cy = anatomy.shift_x, self.pivot_y + anatomy.shift_y
        dx = (detector.x - self.cx)[None, :]
        dy = (detector.y - self.cy)[:, None]
        k = 1.0 / anatomy.scale
        self.xp = (dx * (self.cos * k) + dy * (self.sin * k)).astype(np.float32)
        self.yp = (dy * (self.cos * k) - dx * (self.sin * k) + self.pivot_y).astype(np.float32)

    def to_pixels(self, points: np.ndarray, *, full: bool = False) -> np.ndarray:
        """Patient points float[N, 2] (x, y) -> pixel positions float[N, 2] (col, row).

        On the working grid, or on the full-resolution grid with `full`.
        """
        x, y = points[:, 0], points[:, 1] - self.pivot_y
        ix = self.cx + self.scale * (self.cos * x - self.sin * y)
        iy = self.cy + self.scale * (self.sin * x + self.cos * y)
        d = self.detector
        width, height = (d.width, d.height) if full else (self.width, self.height)
        return np.stack([(ix + 0.5) * width - 0.5, iy / d.height_units * height - 0.5], axis=1)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Working-grid slices covering the patient-space box [x0, x1] x [y0, y1]."""
        corners = self.to_pixels(np.array([[x0, y0], [x0, y1], [x1, y0], [x1, y1]]))
        c0, r0 = (math.floor(v) - 1 for v in corners.min(axis=0).tolist())
        c1, r1 = (math.ceil(v) + 2 for v in corners.max(axis=0).tolist())
        return (
            slice(min(max(r0, 0), self.height), min(max(r1, 0), self.height)),
            slice(min(max(c0, 0), self.width), min(max(c1, 0), self.width)),
        )

    def draw(self, paths: list[tuple[np.ndarray, float, float]], *, full: bool = False):
        """Rasterises polylines (points float[N, 2] in patient space, width, value in [0, 1]).

        Returns float32[h, w] (working grid; full grid with `full`) holding the last value
        drawn at each pixel. Pillow rasterises lines in C, far faster than distance fields.
        """
        d = self.detector
        width, height = (d.width, d.height) if full else (self.width, self.height)
        layer = Image.new("L", (width, height), 0)
        pen = ImageDraw.Draw(layer)
        for points, line_width, value in paths:
            pixels = [tuple(p) for p in self.to_pixels(points, full=full).tolist()]
            pen.line(pixels, fill=round(255 * value), width=max(1, round(line_width * width)))
        return np.asarray(layer, dtype=np.float32) * (1.0 / 255.0)


def rib_profile(phase: np.ndarray) -> np.ndarray:
    """Rib bands (1 on bone) from a rib phase field; about 45% of each period is rib."""
    return ramp((np.cos(2.0 * np.pi * phase) - 0.15) * 2.5)


def rib_phase_at(anatomy: Anatomy, ax: np.ndarray, yp: np.ndarray) -> np.ndarray:
    """Posterior ribs rise from the spine, then curve down towards the lateral chest wall."""
    return (yp + 0.5 * ax - 1.6 * ax * ax) / anatomy.rib_spacing + anatomy.rib_phase


def spine_and_clavicles(cv: Canvas, a: Anatomy) -> np.ndarray:
    """Bone other than ribs (brightness to add), float32[H, W]."""
    bone = np.zeros_like(cv.xp)
    win = cv.window(-0.08, 0.08, 0.0, 1.3)
    x, y = cv.xp[win], cv.yp[win]
    vertebrae = 0.75 + 0.25 * np.cos(y * (2.0 * np.pi / 0.05))
    bone[win] += 0.05 * ramp((0.045 - np.abs(x)) * 80.0) * vertebrae
    win = cv.window(-0.45, 0.45, a.clavicle_y - 0.12, a.clavicle_y + 0.06)
    x, y = np.abs(cv.xp[win]), cv.yp[win]
    centre = a.clavicle_y - 0.15 * x + 0.35 * (x - 0.18) ** 2
    clavicle = ramp(1.0 - np.abs(y - centre) * (1.0 / 0.017))
    bone[win] += 0.16 * clavicle * ramp((x - 0.03) * 50.0) * ramp((0.4 - x) * 30.0)
    return bone


def soft_tissue_extras(cv: Canvas, a: Anatomy) -> np.ndarray:
    """Trachea and gastric air (darker), breasts (brighter), float32[H, W]."""
    extra = np.zeros_like(cv.xp)
    win = cv.window(-0.05, 0.05, 0.0, 0.32)
    x, y = cv.xp[win], cv.yp[win]
    extra[win] -= 0.1 * ramp((0.018 - np.abs(x)) * 150.0) * ramp((0.3 - y) * 40.0)
    gx, gy = 0.15, a.diaphragm_left + 0.07
    win = cv.window(gx - 0.07, gx + 0.07, gy - 0.05, gy + 0.05)
    d2 = ((cv.xp[win] - gx) / 0.055) ** 2 + ((cv.yp[win] - gy) / 0.032) ** 2
    extra[win] -= 0.1 * ramp((1.0 - d2) * 4.0)
    if a.breast > 0:
        win = cv.window(-0.46, 0.46, 0.72, 1.2)
        x, y = np.abs(cv.xp[win]), cv.yp[win]
        d2 = ((x - 0.27) / 0.15) ** 2 + ((y - 0.9) / (0.16 * a.breast + 0.02)) ** 2
        extra[win] += 0.07 * a.breast * ramp((1.0 - d2) * 2.0) * ramp((y - 0.78) * 20.0)
    return extra
