"""Chest radiograph phantom: a fake hospital that writes CheXpert-v1.0-small to disk.

Data flow: `write_chexpert_phantom` -> `root/CheXpert-v1.0-small/{train,valid}.csv` + JPEGs,
in CheXpert's own layout and CSV format -> `synthjax.data.chexpert` (the same TFDS builder that
reads the real download) -> array_record shards. The offline default therefore exercises the
real ingestion path, bad rows and all.

Label vectors follow the real joint frequencies of the 14 findings (the packaged table of
CheXpert frontal label combinations); uncertain (-1) findings are drawn with the per-label rate
implied by the table's u_ones / u_zeros marginals. Each finding has its own visual signature,
drawn in numpy from coordinate grids (no per-pixel Python) so that a label truly changes the
image: learnable at 32x32, but not trivially (patients differ in size, pose, exposure and
anatomy; images carry quantum noise and texture).

Geometry is in "width units": x in [-0.5, 0.5] from image left to right, y from 0 at the top
down to height / width (~1.2). Radiographic convention: the patient's right is image left.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import io
import math

import numpy as np
from etils import epath
from PIL import Image, ImageDraw

from synthjax.data.chexpert import CHEXPERT_LABELS
from synthjax.data.image_ops import gaussian_blur
from synthjax.errors import ConfigError

CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
DATASET_FOLDER = "CheXpert-v1.0-small"
HEIGHT_RATIO = 1.2  # CheXpert-small frontal images are ~320 wide and ~390 high.
UNCERTAIN_SEVERITY = 0.6  # an uncertain finding is drawn, fainter
_L = {name: i for i, name in enumerate(CHEXPERT_LABELS)}

# Radiologists write "no pneumothorax" / "no effusion" far more often than "no fracture";
# in the real file those negatives are explicit 0.0, the rest blank. Rough rates.
_EXPLICIT_ZERO_RATE = np.array(
    [0.0, 0.06, 0.08, 0.05, 0.04, 0.12, 0.15, 0.06, 0.05, 0.3, 0.2, 0.03, 0.04, 0.05]
)


def _ramp(t: np.ndarray) -> np.ndarray:
    """clip(t, 0, 1): the cheap soft edge used for every mask."""
    return np.clip(t, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Label statistics


@dataclasses.dataclass(frozen=True)
class LabelTable:
    """Real CheXpert frontal label combinations under the u_ones policy.

    combinations: int8[N, 14] multi-hot vectors; probabilities: float64[N] (sum 1);
    uncertain_rate: float64[14], the chance a positive finding was written as -1.
    """

    combinations: np.ndarray
    probabilities: np.ndarray
    uncertain_rate: np.ndarray


@functools.cache
def load_label_table() -> LabelTable:
    """Reads the packaged `chexpert_frontal_label_combinations.csv`."""
    resource = importlib.resources.files("synthjax.data") / "tables"
    text = (resource / "chexpert_frontal_label_combinations.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    marginals = {}
    for policy in ("u_ones", "u_zeros"):
        sub = [r for r in rows if r["uncertain_policy"] == policy]
        vectors = np.array([[int(r[name]) for name in CHEXPERT_LABELS] for r in sub], np.int8)
        counts = np.array([float(r["count"]) for r in sub])
        marginals[policy] = (vectors, counts, counts @ vectors / counts.sum())
    vectors, counts, p_ones = marginals["u_ones"]
    p_zeros = marginals["u_zeros"][2]
    # -1 counts as positive under u_ones only, so P(-1 | positive) = 1 - P_zeros / P_ones.
    rate = np.clip(1.0 - p_zeros / np.maximum(p_ones, 1e-12), 0.0, 1.0)
    return LabelTable(vectors, counts / counts.sum(), rate)


def draw_label_values(
    rng: np.random.Generator, table: LabelTable, *, uncertain: bool = True
) -> np.ndarray:
    """One image's findings as CSV values: int8[14] of 1 (positive), -1 (uncertain), 0.

    The combination is drawn with its real frequency; with `uncertain`, each positive finding
    becomes -1 with the table's per-label rate, so that -1 -> 0 (u_zeros) reproduces the
    table's u_zeros marginals.
    """
    combo = table.combinations[rng.choice(len(table.probabilities), p=table.probabilities)]
    if not uncertain:
        return combo.copy()
    unsure = (combo == 1) & (rng.random(combo.shape) < table.uncertain_rate)
    return np.where(unsure, -1, combo).astype(np.int8)


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
        ridges = _ramp(1.0 - np.abs(fine) * 1.2) ** 2
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
# Patients and finding layouts


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


@dataclasses.dataclass(frozen=True)
class FindingLayout:
    """Where and how large each finding would be in one image, drawn for all 14 findings.

    Drawing every field whatever the labels makes "the same image with and without finding k"
    a matter of changing one severity. Sides are -1 (patient right, image left) or +1.
    """

    opacity_patches: np.ndarray  # float32[3, 5]: x, y, rx, ry, on/off
    nodules: np.ndarray  # float32[2, 4]: x, y, radius, on/off
    consolidation: tuple[float, bool]  # side, upper lobe?
    pneumonia: tuple[float, float, float]  # x, y, radius
    atelectasis: tuple[float, float, float]  # side, plate height above the dome, tilt
    pneumothorax: tuple[float, float]  # side, depth of the air rim
    effusion: tuple[float, float]  # depth of fluid on the right, on the left (0 = dry side)
    pleural_other: tuple[float, float, float]  # side (0 = both), top y, thickness
    fracture: tuple[float, float, float, int]  # side, |x|, y of the first rib, ribs broken
    devices: tuple[bool, bool, bool, bool, bool]  # ETT, central line, NG tube, pacemaker, ECG
    device_side: float
    extent: np.ndarray  # float32[14]: how pronounced each finding is, multiplies severity
    seed: int  # detail (air bronchograms, ECG lead positions)


def draw_layout(rng: np.random.Generator) -> FindingLayout:
    """Draws the placement of every finding for one image."""

    def side() -> float:
        return -1.0 if rng.random() < 0.5 else 1.0

    patches = np.stack(
        [
            rng.choice([-1.0, 1.0], 3) * rng.uniform(0.1, 0.3, 3),
            rng.uniform(0.4, 0.8, 3),
            rng.uniform(0.045, 0.09, 3),
            rng.uniform(0.05, 0.1, 3),
            np.array([1.0, *(rng.random(2) < 0.6)], dtype=np.float64),
        ],
        axis=1,
    ).astype(np.float32)
    effusion_side = rng.choice(3, p=[0.35, 0.25, 0.4])  # right, left, both
    depths = rng.uniform(0.03, 0.18, 2)
    effusion = (
        float(depths[0]) if effusion_side != 1 else 0.0,
        float(depths[1]) if effusion_side != 0 else 0.0,
    )
    devices = rng.random(5) < np.array([0.45, 0.55, 0.35, 0.15, 0.35])
    if not devices.any():
        devices[1] = True
    return FindingLayout(
        opacity_patches=patches,
        # Upper-zone predominance, as for primary lung cancer; sometimes a second nodule.
        nodules=np.stack(
            [
                rng.choice([-1.0, 1.0], 2) * rng.uniform(0.12, 0.3, 2),
                rng.uniform(0.25, 0.5, 2),
                rng.uniform(0.04, 0.08, 2),
                np.array([1.0, rng.random() < 0.35]),
            ],
            axis=1,
        ).astype(np.float32),
        consolidation=(side(), bool(rng.random() < 0.4)),
        pneumonia=(
            side() * rng.uniform(0.12, 0.28),
            rng.uniform(0.45, 0.72),
            rng.uniform(0.05, 0.08),
        ),
        atelectasis=(side(), rng.uniform(0.04, 0.1), rng.normal(0.0, 0.15)),
        pneumothorax=(side(), rng.uniform(0.04, 0.1)),
        effusion=effusion,
        pleural_other=(
            rng.choice([-1.0, 1.0, 0.0]),
            rng.uniform(0.22, 0.45),
            rng.uniform(0.02, 0.035),
        ),
        fracture=(
            side(),
            rng.uniform(0.22, 0.34),
            rng.uniform(0.3, 0.55),
            int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25])),
        ),
        devices=tuple(bool(d) for d in devices),
        device_side=side(),
        extent=rng.uniform(0.6, 1.4, len(CHEXPERT_LABELS)).astype(np.float32),
        seed=int(rng.integers(0, 2**31)),
    )


# ---------------------------------------------------------------------------------------------
# Rendering


class _Canvas:
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


def _bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier curve through control points, float[n, 2]."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _rib_profile(phase: np.ndarray) -> np.ndarray:
    """Rib bands (1 on bone) from a rib phase field; about 45% of each period is rib."""
    return _ramp((np.cos(2.0 * np.pi * phase) - 0.15) * 2.5)


def _rib_phase(anatomy: Anatomy, ax: np.ndarray, yp: np.ndarray) -> np.ndarray:
    """Posterior ribs rise from the spine, then curve down towards the lateral chest wall."""
    return (yp + 0.5 * ax - 1.6 * ax * ax) / anatomy.rib_spacing + anatomy.rib_phase


def _with_geometric_findings(anatomy: Anatomy, layout: FindingLayout, s: np.ndarray) -> Anatomy:
    """Findings that change the shape of normal anatomy rather than add something to it."""
    cm, at = s[_L["Cardiomegaly"]], s[_L["Atelectasis"]]
    side = layout.atelectasis[0]
    # An AP film magnifies the heart (it is far from the detector) and projects the clavicles
    # higher: a real confounder of cardiomegaly.
    ap_gain = 1.06 if anatomy.ap else 1.0
    raise_dome = 0.045 * at  # volume loss pulls the hemidiaphragm up...
    return dataclasses.replace(
        anatomy,
        heart_half_width=anatomy.heart_half_width * ap_gain * (1.0 + 0.25 * cm),
        heart_half_height=anatomy.heart_half_height * (1.0 + 0.12 * cm),
        heart_x=anatomy.heart_x + 0.02 * cm + 0.012 * at * side,  # ...and the heart across
        heart_y=anatomy.heart_y + 0.01 * cm,
        clavicle_y=anatomy.clavicle_y - (0.025 if anatomy.ap else 0.0),
        diaphragm_right=anatomy.diaphragm_right - (raise_dome if side < 0 else 0.0),
        diaphragm_left=anatomy.diaphragm_left - (raise_dome if side > 0 else 0.0),
    )


def render_frontal(
    detector: Detector,
    anatomy: Anatomy,
    layout: FindingLayout,
    severity: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: float = 1.0,
    subtlety: float = 1.0,
) -> np.ndarray:
    """Renders one frontal (PA/AP) chest radiograph.

    Args:
      detector: pixel grid and noise textures (fixes the image size).
      anatomy: the patient in this study (`draw_anatomy`, `study_anatomy`).
      layout: where each finding would be (`draw_layout`).
      severity: float[14] in CHEXPERT_LABELS order; 0 = absent, 1 = definite,
        `UNCERTAIN_SEVERITY` for an uncertain finding. "No Finding" is ignored (it is the
        absence of the others).
      rng: used only for noise-texture offsets, so two renders with generators in the same
        state differ only by what the severities change.
      noise: scales quantum noise and texture mottle.
      subtlety: divides every finding's strength (> 1 = fainter findings).

    Returns:
      uint8[H, W] with H = round(1.2 W).
    """
    s = np.asarray(severity, dtype=np.float32) * layout.extent / np.float32(subtlety)
    a = _with_geometric_findings(anatomy, layout, s)
    cv = _Canvas(detector, a)
    xp, yp = cv.xp, cv.yp
    ax = np.abs(xp)
    mottle = detector.crop(detector.mottle, rng)
    noise_mottle = detector.crop(detector.mottle, rng)

    # Normal anatomy. Lungs: one mirrored ellipse per side, cut by the domes and mediastinum.
    lung_half_height = a.lung_center_y - a.lung_top
    ellipse = ((ax - a.lung_offset) / a.lung_half_width) ** 2 + (
        (yp - a.lung_center_y) / lung_half_height
    ) ** 2
    dome = (a.diaphragm_left - a.diaphragm_right) * (xp > 0) + 2.0 * (ax - 0.17) ** 2
    dome += a.diaphragm_right
    above_dome = _ramp((dome - yp) * (1.0 / 0.008))
    upper = _ramp(1.0 - ((yp - 0.34) * (1.0 / 0.2)) ** 2)
    knob = _ramp(1.0 - ((yp - 0.3) * (1.0 / 0.05)) ** 2) * (xp > 0)
    ecm = s[_L["Enlarged Cardiomediastinum"]]
    mediastinum = a.mediastinum_half_width * (1.0 + 0.45 * ecm * upper) + 0.02 * knob
    lung = _ramp((1.0 - ellipse) * 9.0) * above_dome * _ramp((ax - mediastinum) * (1.0 / 0.012))
    shoulder = _ramp(yp * (1.0 / 0.16))
    body_half_width = 0.13 + (a.body_half_width - 0.13) * shoulder * (2.0 - shoulder)
    central = _ramp((mediastinum - ax) * (1.0 / 0.012)) * _ramp((yp - 0.08) * 20.0)
    central *= _ramp((a.heart_y - yp) * 10.0)
    body = _ramp((body_half_width - ax) * (1.0 / 0.03))

    heart = np.zeros_like(xp)
    reach = 1.3 * max(a.heart_half_width, a.heart_half_height)
    win = cv.window(a.heart_x - reach, a.heart_x + reach, a.heart_y - reach, a.heart_y + reach)
    hx, hy = xp[win] - a.heart_x, yp[win] - a.heart_y
    ct, st = math.cos(a.heart_tilt), math.sin(a.heart_tilt)
    heart_ellipse = ((hx * ct + hy * st) / a.heart_half_width) ** 2 + (
        (hy * ct - hx * st) / a.heart_half_height
    ) ** 2
    heart[win] = _ramp((1.0 - heart_ellipse) * 8.0)
    lung *= 1.0 - heart
    rib_visibility = 0.3 + 0.7 * lung

    paint = _FindingPainter(cv, a, layout, s, ellipse, dome, lung, mottle)
    paint.all()

    thorax = _ramp((0.42 - ax) * 50.0) * _ramp((yp - 0.1) * 30.0) * _ramp((1.02 - yp) * 20.0)
    thorax *= rib_visibility
    ribs = _rib_profile(_rib_phase(a, ax, yp))
    if paint.fractured_ribs is not None:
        fwin, fribs = paint.fractured_ribs
        ribs[fwin] = fribs
    ribs *= thorax
    bone = _spine_and_clavicles(cv, a)

    aeration = lung * (1.0 - np.minimum(paint.opacity, 1.0)) * (1.0 + paint.lucency)
    image = 0.04 + body * (a.soft_tissue - 0.04)
    image += 0.06 * np.maximum(heart, central) + 0.05 * (1.0 - above_dome) * body
    image -= a.lung_contrast * aeration
    image += a.bone_density * (0.075 * ribs + bone)
    image += _soft_tissue_extras(cv, a)
    image += paint.overlay
    image += (0.02 * noise) * noise_mottle
    # Vessels: visible in aerated lung only, thinning out from the hila to the periphery.
    vessel_weight = (0.03 * a.texture * paint.marking_gain) * aeration * paint.markings
    vessel_weight *= _ramp(1.2 - ax * (1.0 / 0.45))

    image = detector.upsample(image)
    image += detector.upsample(vessel_weight) * detector.crop(detector.vessels, rng)
    if paint.devices is not None:
        image += paint.devices
    # Exposure: window/level and a film-like tone curve, then quantum noise on the detector.
    image = (image - 0.4) * a.gain + (0.4 + a.offset)
    image += a.tone * image * (1.0 - image)
    image += (0.03 * noise) * detector.crop(detector.quantum, rng)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _spine_and_clavicles(cv: _Canvas, a: Anatomy) -> np.ndarray:
    """Bone other than ribs (brightness to add), float32[H, W]."""
    bone = np.zeros_like(cv.xp)
    win = cv.window(-0.08, 0.08, 0.0, 1.3)
    x, y = cv.xp[win], cv.yp[win]
    vertebrae = 0.75 + 0.25 * np.cos(y * (2.0 * np.pi / 0.05))
    bone[win] += 0.05 * _ramp((0.045 - np.abs(x)) * 80.0) * vertebrae
    win = cv.window(-0.45, 0.45, a.clavicle_y - 0.12, a.clavicle_y + 0.06)
    x, y = np.abs(cv.xp[win]), cv.yp[win]
    centre = a.clavicle_y - 0.15 * x + 0.35 * (x - 0.18) ** 2
    clavicle = _ramp(1.0 - np.abs(y - centre) * (1.0 / 0.017))
    bone[win] += 0.16 * clavicle * _ramp((x - 0.03) * 50.0) * _ramp((0.4 - x) * 30.0)
    return bone


def _soft_tissue_extras(cv: _Canvas, a: Anatomy) -> np.ndarray:
    """Trachea and gastric air (darker), breasts (brighter), float32[H, W]."""
    extra = np.zeros_like(cv.xp)
    win = cv.window(-0.05, 0.05, 0.0, 0.32)
    x, y = cv.xp[win], cv.yp[win]
    extra[win] -= 0.1 * _ramp((0.018 - np.abs(x)) * 150.0) * _ramp((0.3 - y) * 40.0)
    gx, gy = 0.15, a.diaphragm_left + 0.07
    win = cv.window(gx - 0.07, gx + 0.07, gy - 0.05, gy + 0.05)
    d2 = ((cv.xp[win] - gx) / 0.055) ** 2 + ((cv.yp[win] - gy) / 0.032) ** 2
    extra[win] -= 0.1 * _ramp((1.0 - d2) * 4.0)
    if a.breast > 0:
        win = cv.window(-0.46, 0.46, 0.72, 1.2)
        x, y = np.abs(cv.xp[win]), cv.yp[win]
        d2 = ((x - 0.27) / 0.15) ** 2 + ((y - 0.9) / (0.16 * a.breast + 0.02)) ** 2
        extra[win] += 0.07 * a.breast * _ramp((1.0 - d2) * 2.0) * _ramp((y - 0.78) * 20.0)
    return extra


class _FindingPainter:
    """Draws the findings of one image into four fields the composer combines.

    opacity: fraction of lung air replaced by fluid or tissue (bright where lung was dark);
    lucency: extra air (pneumothorax); markings: 0 where lung markings vanish; overlay:
    brightness added on top (devices, pleural line, calcification, fracture callus).
    """

    def __init__(self, cv, anatomy, layout, s, ellipse, dome, lung, mottle):
        self.cv, self.a, self.layout, self.s = cv, anatomy, layout, s
        self.ellipse, self.dome, self.lung, self.mottle = ellipse, dome, lung, mottle
        self.opacity = np.zeros_like(cv.xp)
        self.overlay = np.zeros_like(cv.xp)
        self.lucency = np.zeros_like(cv.xp)
        self.markings = np.ones_like(cv.xp)
        self.marking_gain = 1.0
        self.fractured_ribs = None
        self.devices = None
        self.detail = np.random.default_rng(layout.seed)

    def all(self) -> None:
        self.hila()
        for name, draw in (
            ("Lung Opacity", self.lung_opacity),
            ("Lung Lesion", self.lung_lesion),
            ("Edema", self.edema),
            ("Consolidation", self.consolidation),
            ("Pneumonia", self.pneumonia),
            ("Atelectasis", self.atelectasis),
            ("Pneumothorax", self.pneumothorax),
            ("Pleural Effusion", self.pleural_effusion),
            ("Pleural Other", self.pleural_other),
            ("Fracture", self.fracture),
            ("Support Devices", self.support_devices),
        ):
            strength = float(self.s[_L[name]])
            if strength > 0:
                draw(strength)

    def _blob(self, x, y, rx, ry, reach=2.2):
        """Window and squared normalised distance to (x, y) for an elliptic blob."""
        win = self.cv.window(x - reach * rx, x + reach * rx, y - reach * ry, y + reach * ry)
        d2 = ((self.cv.xp[win] - x) / rx) ** 2 + ((self.cv.yp[win] - y) / ry) ** 2
        return win, d2

    def _side(self, win, side):
        """1 on the given side of the midline (-1 = image left), float32 window."""
        return (self.cv.xp[win] * side > 0).astype(np.float32)

    def hila(self) -> None:
        for side in (-1.0, 1.0):
            win, d2 = self._blob(side * 0.1, 0.49, 0.045, 0.06)
            self.opacity[win] += 0.35 * np.exp(-d2)

    def lung_opacity(self, k: float) -> None:
        """Patchy, ill-defined hazy opacities."""
        for x, y, rx, ry, on in self.layout.opacity_patches:
            if on:
                win, d2 = self._blob(x, y, rx, ry)
                patchy = 0.55 + 0.45 * self.mottle[win]
                self.opacity[win] += (0.55 * k) * np.exp(-d2) * patchy

    def lung_lesion(self, k: float) -> None:
        """Round, well-defined nodules or masses."""
        for x, y, r, on in self.layout.nodules:
            if on:
                win, d2 = self._blob(x, y, r, r, reach=1.5)
                edge = max(1.5 * self.cv.px, 0.15 * r) / r
                self.opacity[win] += (0.95 * k) * _ramp((1.0 - np.sqrt(d2)) / edge)

    def edema(self, k: float) -> None:
        """Bilateral perihilar (butterfly) haze, Kerley B lines, prominent vessels."""
        win = self.cv.window(-0.45, 0.45, 0.15, 0.95)
        ax, y = np.abs(self.cv.xp[win]), self.cv.yp[win]
        haze = np.exp(-(((ax - 0.09) / 0.15) ** 2 + ((y - 0.53) / 0.2) ** 2))
        self.opacity[win] += 0.28 * k * haze
        rng, lines = self.detail, []
        for side in (-1.0, 1.0):
            for y0 in rng.uniform(0.6, 0.8, 5):
                outer = self.a.lung_offset + self.a.lung_half_width * 0.95
                lines.append(
                    (np.array([[side * outer, y0], [side * (outer - 0.04), y0]]), 0.004, 1.0)
                )
        self.opacity += (0.5 * k) * self.cv.draw(lines)
        self.marking_gain = 1.0 + 0.6 * k

    def consolidation(self, k: float) -> None:
        """Dense lobar opacity, sharp at the fissure, with air bronchograms."""
        side, upper_lobe = self.layout.consolidation
        a = self.a
        if upper_lobe:
            win = self.cv.window(-0.45, 0.45, a.lung_top - 0.02, 0.5)
            extent = _ramp((0.45 - self.cv.yp[win]) * (1.0 / 0.004))  # minor fissure
            start = np.array([side * 0.1, 0.44])
        else:
            win = self.cv.window(-0.45, 0.45, 0.5, 0.98)
            extent = _ramp((self.cv.yp[win] - 0.56) * (1.0 / 0.04))
            start = np.array([side * 0.1, 0.56])
        region = extent * self._side(win, side)
        rng, tubes = self.detail, []
        for angle in rng.uniform(-0.9, 0.9, 5):
            direction = np.array(
                [side * math.cos(angle), math.sin(angle) * 0.6 + (-0.3 if upper_lobe else 0.3)]
            )
            length = rng.uniform(0.08, 0.2)
            tubes.append((np.stack([start, start + length * direction]), 0.007, 1.0))
        air = 1.0 - 0.55 * self.cv.draw(tubes)[win]
        self.opacity[win] += (0.85 * k) * region * (0.85 + 0.15 * self.mottle[win]) * air

    def pneumonia(self, k: float) -> None:
        """A focal, ill-defined consolidation-like patch with a hazy halo."""
        x, y, r = self.layout.pneumonia
        win, d2 = self._blob(x, y, r, r * 1.1, reach=2.5)
        core = _ramp((1.0 - d2) * 1.5) * (0.6 + 0.4 * self.mottle[win])
        self.opacity[win] += k * (0.6 * core + 0.25 * np.exp(-0.5 * d2))

    def atelectasis(self, k: float) -> None:
        """Plate-like basal opacity; the volume loss itself is in `_with_geometric_findings`."""
        side, height, tilt = self.layout.atelectasis
        dome_y = self.a.diaphragm_right if side < 0 else self.a.diaphragm_left
        xc, yc = side * 0.21, dome_y - height
        win = self.cv.window(xc - 0.14, xc + 0.14, yc - 0.06, dome_y + 0.05)
        x, y = self.cv.xp[win], self.cv.yp[win]
        plate = _ramp(1.0 - np.abs(y - yc - tilt * (x - xc)) * (1.0 / 0.013))
        plate *= _ramp((0.1 - np.abs(x - xc)) * 40.0)
        basal = _ramp(1.0 - (self.dome[win] - y) * (1.0 / 0.07)) * self._side(win, side)
        self.opacity[win] += k * (0.8 * plate + 0.3 * basal)

    def pneumothorax(self, k: float) -> None:
        """Apical/lateral rim of air without lung markings, bounded by a thin pleural line."""
        side, depth = self.layout.pneumothorax
        a = self.a
        win = self.cv.window(-0.47, 0.47, a.lung_top - 0.03, a.lung_center_y + 0.2)
        ax, y = np.abs(self.cv.xp[win]), self.cv.yp[win]
        half_w, half_h = a.lung_half_width - depth, (a.lung_center_y - a.lung_top) - depth
        inner = ((ax - a.lung_offset + 0.5 * depth) / half_w) ** 2 + (
            (y - a.lung_center_y - 0.8 * depth) / half_h
        ) ** 2
        on_side = self._side(win, side)
        rim = _ramp((inner - 1.0) * 20.0) * on_side
        self.lucency[win] += 0.35 * k * rim
        collapsed = _ramp((1.0 - inner) * 3.0) * on_side
        self.opacity[win] += 0.12 * k * collapsed
        self.markings[win] *= 1.0 - np.minimum(rim * (1.5 * k), 1.0)
        line_width = 2.4 * self.cv.px / half_w
        line = _ramp(1.0 - np.abs(inner - 1.0) / line_width) * on_side * self.lung[win]
        self.overlay[win] += 0.12 * k * line

    def pleural_effusion(self, k: float) -> None:
        """Dependent fluid with a meniscus climbing the lateral wall, blunting the angle."""
        for side, depth in zip((-1.0, 1.0), self.layout.effusion, strict=True):
            if depth <= 0:
                continue
            dome_y = self.a.diaphragm_right if side < 0 else self.a.diaphragm_left
            level = dome_y - depth
            win = self.cv.window(-0.47, 0.47, level - 0.12, dome_y + 0.2)
            ax, y = np.abs(self.cv.xp[win]), self.cv.yp[win]
            meniscus = level - 0.09 * _ramp((ax - 0.12) * 4.0) ** 2
            fluid = _ramp((y - meniscus) * (1.0 / 0.025)) * self._side(win, side)
            self.opacity[win] += 0.8 * k * fluid

    def pleural_other(self, k: float) -> None:
        """Pleural thickening along the lateral chest wall, with calcified plaques."""
        side, top, thickness = self.layout.pleural_other
        a = self.a
        win = self.cv.window(-0.47, 0.47, top - 0.03, top + 0.3)
        ax, y = np.abs(self.cv.xp[win]), self.cv.yp[win]
        depth_in_ellipse = 2.0 * thickness / a.lung_half_width
        band = _ramp((self.ellipse[win] - 1.0 + depth_in_ellipse) / (0.4 * depth_in_ellipse))
        band *= _ramp((ax - a.lung_offset) * 20.0)
        if side != 0:
            band *= self._side(win, side)
        band *= _ramp((y - top) * 40.0) * _ramp((top + 0.26 - y) * 40.0)
        self.opacity[win] += 0.9 * k * band
        wall_x = a.lung_offset + 0.93 * a.lung_half_width
        for wall_side in (-1.0, 1.0) if side == 0 else (side,):
            for dy in (0.07, 0.18):
                pwin, d2 = self._blob(wall_side * wall_x, top + dy, 0.012, 0.028, reach=1.5)
                self.overlay[pwin] += 0.2 * k * _ramp((1.0 - d2) * 3.0)

    def fracture(self, k: float) -> None:
        """Displaced fractures (step and gap) of 1-3 adjacent ribs, with healing callus."""
        side, x_abs, y_guess, count = self.layout.fracture
        a, px = self.a, self.cv.px
        centre_phase = round((y_guess + 0.5 * x_abs - 1.6 * x_abs**2) / a.rib_spacing + a.rib_phase)
        y = (centre_phase - a.rib_phase) * a.rib_spacing - 0.5 * x_abs + 1.6 * x_abs**2
        y_last = y + (count - 1) * a.rib_spacing
        win = self.cv.window(side * x_abs - 0.07, side * x_abs + 0.07, y - 0.06, y_last + 0.06)
        ax, yy = np.abs(self.cv.xp[win]), self.cv.yp[win]
        on_side = self._side(win, side)
        phase = _rib_phase(a, ax, yy)
        near = _ramp((yy - y + 0.05) * 20.0) * _ramp((y_last + 0.05 - yy) * 20.0) * on_side
        step = 0.35 * _ramp((ax - x_abs) / (1.5 * px)) * near
        gap = _ramp(1.0 - np.abs(ax - x_abs) / (1.5 * px)) * near
        broken = _rib_profile(phase + step) * (1.0 - 0.85 * gap)
        blend = min(k, 1.0)
        self.fractured_ribs = (win, (1.0 - blend) * _rib_profile(phase) + blend * broken)
        for rib in range(count):
            y_rib = y + rib * a.rib_spacing
            callus = np.exp(-(((ax - x_abs) / 0.035) ** 2 + ((yy - y_rib) / 0.025) ** 2))
            self.overlay[win] += (0.35 * k) * callus * on_side

    def support_devices(self, k: float) -> None:
        """Endotracheal tube, central line, NG tube, pacemaker, ECG leads."""
        ett, central, ng, pacer, ecg = self.layout.devices
        side, rng, paths = self.layout.device_side, self.detail, []
        if ett:
            tube = np.array([[0.0, -0.05], [0.002, 0.27]])
            paths += [(tube, 0.014, 0.45), (tube, 0.004, 1.0)]
        if central:
            paths.append(
                (_bezier([side * 0.3, 0.13], [side * 0.12, 0.15], [-0.025, 0.41]), 0.006, 0.9)
            )
        if ng:
            paths.append(
                (
                    np.concatenate(
                        [
                            _bezier([0.0, -0.05], [0.02, 0.5], [0.05, 0.85]),
                            _bezier([0.05, 0.85], [0.08, 0.95], [0.15, 0.93]),
                        ]
                    ),
                    0.008,
                    0.8,
                )
            )
        if pacer:
            box = np.array([side * 0.27, 0.2])
            for dy in np.linspace(-0.03, 0.03, 7):
                bar = np.array([[-0.05, dy], [0.05, dy]]) + box
                paths.append((bar, 0.012, 1.0))
            paths.append(
                (
                    np.concatenate(
                        [
                            _bezier(box, [0.0, 0.3], [0.0, 0.5]),
                            _bezier([0.0, 0.5], [0.0, 0.62], [0.07, 0.7]),
                        ]
                    ),
                    0.005,
                    1.0,
                )
            )
        if ecg:
            for _ in range(int(rng.integers(3, 6))):
                x, y = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.42), rng.uniform(0.2, 0.9)
                ring = _bezier([x - 0.016, y], [x, y - 0.03], [x + 0.016, y], 8)
                paths += [
                    (np.concatenate([ring, ring[::-1] * [1, -1] + [0, 2 * y]]), 0.005, 0.85),
                    (
                        _bezier(
                            [x, y],
                            [x + np.sign(x) * 0.1, y + 0.05],
                            [np.sign(x) * 0.55, y + rng.uniform(-0.15, 0.15)],
                        ),
                        0.003,
                        0.6,
                    ),
                ]
        self.devices = (0.45 * k) * self.cv.draw(paths, full=True)


def render_lateral(
    detector: Detector, anatomy: Anatomy, rng: np.random.Generator, *, noise: float = 1.0
) -> np.ndarray:
    """Renders a lateral view (anterior to the image left), uint8[H, W].

    Lateral rows are filtered out by the builder (frontal views only), so this only has to
    look like a lateral chest film: no finding is drawn on it.
    """
    cv = _Canvas(detector, anatomy)
    x, y = cv.xp, cv.yp
    body = _ramp((0.42 - np.abs(x + 0.02)) * 30.0) * _ramp((y - 0.05) * 10.0)
    lung = _ramp((1.0 - ((x + 0.02) / 0.31) ** 2 - ((y - 0.55) / 0.4) ** 2) * 6.0)
    lung *= _ramp((anatomy.diaphragm_right + 0.05 - y + 0.3 * x) * 60.0)
    heart = _ramp((1.0 - ((x + 0.14) / 0.15) ** 2 - ((y - 0.72) / 0.14) ** 2) * 6.0)
    spine = _ramp((0.05 - np.abs(x - 0.3)) * 60.0) * (0.75 + 0.25 * np.cos(y * 2 * np.pi / 0.05))
    image = 0.04 + body * (anatomy.soft_tissue + 0.05 - 0.04)
    image -= anatomy.lung_contrast * 0.8 * lung * (1.0 - heart)
    image += 0.1 * spine * anatomy.bone_density
    image += (0.02 * noise) * detector.crop(detector.mottle, rng)
    image = detector.upsample(image)
    image += detector.upsample((0.03 * anatomy.texture) * lung * (1.0 - heart)) * detector.crop(
        detector.vessels, rng
    )
    image = (image - 0.4) * anatomy.gain + (0.4 + anatomy.offset)
    image += (0.03 * noise) * detector.crop(detector.quantum, rng)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# The hospital: patients, studies, CSV rows, JPEG files


def _check(field: str, ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(field, problem, fix)


def _label_cells(values: np.ndarray, rng: np.random.Generator, explicit_zeros: bool) -> list:
    """CSV cells for one label vector of 1 / -1 / 0 (int8[14]): '1.0', '-1.0', '0.0' or ''."""
    cells = []
    for value, zero_rate in zip(values, _EXPLICIT_ZERO_RATE, strict=True):
        if value != 0:
            cells.append(f"{float(value):.1f}")
        elif explicit_zeros or rng.random() < zero_rate:
            cells.append("0.0")
        else:
            cells.append("")
    return cells


def _save_jpeg(path: epath.Path, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())


def write_chexpert_phantom(
    root: str | epath.PathLike,
    *,
    num_patients: int,
    seed: int = 0,
    image_size: int = 256,
    noise: float = 1.0,
    subtlety: float = 1.0,
    anatomy_variation: float = 1.0,
    lateral_fraction: float = 0.15,
    max_studies_per_patient: int = 3,
    uncertain: bool = True,
    valid_patients: int | None = None,
) -> dict:
    """Writes a phantom CheXpert-v1.0-small under `root` and returns its statistics.

    Layout, as in the real download: `root/CheXpert-v1.0-small/{train,valid}.csv` and
    `root/CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg`,
    with CSV paths relative to `root`. valid.csv holds `valid_patients` further patients
    (default: 2% of `num_patients`, at least 1, at most 200) whose labels are certain 1.0 / 0.0,
    like the real expert-labelled validation set.

    Args:
      root: the folder to write into (what `--config.dataset.manual_dir` then points at).
      num_patients: patients in train.csv.
      seed: everything written is a pure function of the arguments.
      image_size: image width in pixels; height is 1.2x.
      noise: quantum noise and texture mottle (0 = none).
      subtlety: > 1 makes every finding fainter, < 1 more obvious.
      anatomy_variation: between-patient variation of size, pose, anatomy and exposure.
      lateral_fraction: fraction of all images that are lateral views (0 to 0.5).
      max_studies_per_patient: follow-up studies per patient, 1 to this many.
      uncertain: write some positive findings as -1 (uncertain), at the real per-label rates.
      valid_patients: patients in valid.csv (None = default above).

    Returns:
      JSON-able dict: `images`, `frontal`, `lateral`, `patients`, `train_patients`,
      `valid_patients`, `studies`, and per-label `label_prevalence` (1 or -1) and
      `uncertain_fraction` (-1) over frontal images.
    """
    _check("num_patients", num_patients >= 1, f"got {num_patients}", "use at least 1")
    _check("image_size", image_size >= 32, f"got {image_size}", "use at least 32")
    _check("noise", noise >= 0, f"got {noise}", "use a value >= 0")
    _check("subtlety", subtlety > 0, f"got {subtlety}", "use a value > 0")
    _check(
        "anatomy_variation", anatomy_variation >= 0, f"got {anatomy_variation}", "use a value >= 0"
    )
    _check(
        "lateral_fraction",
        0 <= lateral_fraction <= 0.5,
        f"got {lateral_fraction}",
        "use a fraction in [0, 0.5]",
    )
    _check(
        "max_studies_per_patient",
        max_studies_per_patient >= 1,
        f"got {max_studies_per_patient}",
        "use at least 1",
    )
    if valid_patients is None:
        valid_patients = min(200, max(1, round(0.02 * num_patients)))
    _check("valid_patients", valid_patients >= 0, f"got {valid_patients}", "use >= 0")

    table = load_label_table()
    detector = Detector(image_size, seed=seed)
    dataset_dir = epath.Path(root) / DATASET_FOLDER
    settings = dict(
        noise=noise,
        subtlety=subtlety,
        variation=anatomy_variation,
        uncertain=uncertain,
        max_studies=max_studies_per_patient,
        # P(second frontal) = 0.04; pick P(lateral) so laterals are the fraction asked.
        lateral_rate=lateral_fraction * 1.04 / (1.0 - lateral_fraction),
    )
    counts = {"images": 0, "frontal": 0, "lateral": 0, "studies": 0}
    frontal_labels = []
    for split, first, count in (
        ("train", 1, num_patients),
        ("valid", num_patients + 1, valid_patients),
    ):
        rows = []
        for number in range(first, first + count):
            patient_rows = _write_patient(
                dataset_dir, split, number, seed, table, detector, settings, counts, frontal_labels
            )
            rows.extend(patient_rows)
        (dataset_dir / split).mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
        (dataset_dir / f"{split}.csv").write_text(text.getvalue())

    labels = np.array(frontal_labels, dtype=np.int8).reshape(-1, len(CHEXPERT_LABELS))
    return {
        "root": str(dataset_dir),
        **counts,
        "patients": num_patients + valid_patients,
        "train_patients": num_patients,
        "valid_patients": valid_patients,
        "label_prevalence": dict(
            zip(CHEXPERT_LABELS, (labels != 0).mean(0).round(4).tolist(), strict=True)
        ),
        "uncertain_fraction": dict(
            zip(CHEXPERT_LABELS, (labels == -1).mean(0).round(4).tolist(), strict=True)
        ),
    }


def _write_patient(
    dataset_dir, split, number, seed, table, detector, settings, counts, frontal_labels
) -> list[list[str]]:
    """Draws one patient's studies, writes their JPEGs, returns their CSV rows."""
    rng = np.random.default_rng([seed, 1 if split == "train" else 2, number])
    female = bool(rng.random() < 0.41)
    age = int(np.clip(round(rng.normal(61.0, 17.0)), 18, 90))
    anatomy = draw_anatomy(rng, variation=settings["variation"], female=female, age=age)
    n_studies = 1
    while n_studies < settings["max_studies"] and rng.random() < 0.45:
        n_studies += 1
    certain_only = split == "valid" or not settings["uncertain"]
    rows, previous = [], None
    for study in range(1, n_studies + 1):
        # Follow-up studies often repeat the last findings. Reusing an earlier draw keeps each
        # study's marginal distribution equal to the table's.
        if previous is not None and rng.random() < 0.5:
            values = previous
        else:
            values = draw_label_values(rng, table, uncertain=not certain_only)
        previous = values
        has_devices = values[_L["Support Devices"]] != 0
        ap = bool(rng.random() < (0.93 if has_devices else 0.62))
        this_study = study_anatomy(anatomy, rng, variation=settings["variation"], ap=ap)
        views = ["frontal"] + (["frontal"] if rng.random() < 0.04 else [])
        if rng.random() < settings["lateral_rate"]:
            views.append("lateral")
        cells = _label_cells(values, rng, explicit_zeros=split == "valid")
        study_age = age + (study - 1) // 2
        folder = dataset_dir / split / f"patient{number:05d}" / f"study{study}"
        folder.mkdir(parents=True, exist_ok=True)
        counts["studies"] += 1
        for view_index, view in enumerate(views, start=1):
            if view == "frontal":
                severity = np.where(values == -1, UNCERTAIN_SEVERITY, values.astype(np.float32))
                image = render_frontal(
                    detector,
                    this_study,
                    draw_layout(rng),
                    severity,
                    rng,
                    noise=settings["noise"],
                    subtlety=settings["subtlety"],
                )
                frontal_labels.extend(values.tolist())
            else:
                image = render_lateral(detector, this_study, rng, noise=settings["noise"])
            name = f"view{view_index}_{view}.jpg"
            _save_jpeg(folder / name, image)
            counts["images"] += 1
            counts[view] += 1
            rows.append(
                [
                    f"{DATASET_FOLDER}/{split}/patient{number:05d}/study{study}/{name}",
                    "Female" if female else "Male",
                    str(study_age),
                    view.capitalize(),
                    ("AP" if ap else "PA") if view == "frontal" else "",
                    *cells,
                ]
            )
    return rows
