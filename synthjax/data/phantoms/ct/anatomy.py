"""Brain-CT phantom, part 1: one patient's head and bleeds, and an axial slice in HU.

Holds `Head` / `draw_head` (one patient's skull, brain and ventricles), `Bleed` /
`draw_bleeds` (the patient's hemorrhages as 3-D events over a contiguous run of slices),
`slice_labels` (the per-slice multi-hot labels those events imply) and `render_hu` (one axial
slice in Hounsfield units, float32, before any DICOM encoding).

Data flow: this module -> `ct.writer` (scanners, DICOM encodings, the RSNA Intracranial
Hemorrhage layout: `stage_2_train.csv` + one DICOM per slice) -> the CT builder, which reads it
as it reads the real download.

Geometry is in millimetres in the head frame: x towards the patient's left (image right), y
towards the back of the head (image down), origin at the centre of the cranial cavity. Slices
are placed by a normalised height t: 0 at the skull base (orbits, petrous bones), 1 at the
vertex. Every structure is a smooth function of t, so adjacent slices agree. Masks have a soft
edge one pixel wide (partial volume), computed in numpy over the smallest window that holds
the structure.

Bleeds are drawn where and how each type occurs: epidural as a short biconvex lens against the
inner table, subdural as a long thin crescent along it, subarachnoid as blood filling sulci
(convexity) or the basal cisterns and Sylvian fissures (aneurysmal pattern), intraparenchymal
as an irregular blob with a rim of oedema, intraventricular as blood layering in the dependent
(posterior) horns or casting a ventricle. A bleed spans the slices [first, last]; it is drawn
on each of them at least 1.5 pixels thick, so a slice's label means the blood is on it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
AIR_HU = -1000.0

# Blood-free tissue densities (HU) are drawn per patient around these.
_FAT_HU = -90.0
_SOFT_TISSUE_HU = 40.0
_EDEMA_HU = 17.0


def _inside(distance: np.ndarray, inv_px: float) -> np.ndarray:
    """Soft inside-ness: 1 where `distance` (mm, > 0 inside) exceeds half a pixel, 0 below."""
    return np.clip(distance * np.float32(inv_px) + np.float32(0.5), 0.0, 1.0)


def _wrap(angle: np.ndarray | float) -> np.ndarray:
    """Angles to [-pi, pi)."""
    return np.remainder(np.asarray(angle) + np.float32(math.pi), np.float32(2 * math.pi)) - (
        np.float32(math.pi)
    )


def _bell(t: float, start: float, stop: float) -> float:
    """0 outside [start, stop], rising smoothly to 1 in the middle (how big a structure is)."""
    if not start < t < stop:
        return 0.0
    return math.sin(math.pi * (t - start) / (stop - start)) ** 0.5


# ---------------------------------------------------------------------------------------------
# The head


@dataclasses.dataclass(frozen=True)
class Head:
    """One patient's head (mm, radians, HU) and the heights t its slices are cut at."""

    heights: tuple[float, ...]  # t of each slice, skull base (0) to vertex (1), increasing
    center_x: float  # head centre in the scanner field, mm from the image centre
    center_y: float
    yaw: float  # in-plane rotation
    half_width: float  # inner table at the widest level, mm
    half_length: float
    harmonics: tuple[float, float, float, float]  # shape wobble: 2nd, 3rd harmonic amp, phase
    skull_thickness: float
    scalp_thickness: float
    grey_hu: float
    white_hu: float
    csf_hu: float
    bone_hu: float  # outer table; inner table and diploe are fractions of it
    ventricle_size: float  # 1 = a young adult; atrophy widens ventricles and sulci together
    sulcus_count: int
    sulcus_phase: float
    sulcus_drift: float  # sulcal pattern turns per unit height
    sulcus_depth: float
    calcified_choroid: bool
    calcified_pineal: bool
    shape_seed: int  # the fixed wobble of sulci and gyri


def draw_head(
    rng: np.random.Generator, *, num_slices: int, field_of_view: float, variation: float = 1.0
) -> Head:
    """Draws a patient's head for a series of `num_slices` slices, base to vertex.

    `field_of_view` (mm, the image width) bounds the head size so it fits the scanner field.
    """
    v = variation

    def n(sd: float) -> float:
        return float(rng.normal(0.0, sd * v))

    age_atrophy = float(np.clip(rng.gamma(4.0, 0.08), 0.0, 0.9))  # 0 young, ~0.8 very old
    scale = float(np.clip(math.exp(n(0.05)), 0.88, 1.12))
    half_length = 80.0 * scale * (1.0 + n(0.03))
    half_width = half_length * float(np.clip(0.79 + n(0.04), 0.7, 0.9))
    # The scalp at the widest level must stay inside the field, with a margin for the shift.
    limit = 0.47 * field_of_view - 6.0 - 12.0
    fit = min(1.0, limit / (half_length * 1.05 + 12.0))
    half_length, half_width = half_length * fit, half_width * fit
    first = float(rng.uniform(-0.03, 0.03))
    last = float(rng.uniform(0.94, 0.99))
    return Head(
        heights=tuple(np.linspace(first, last, num_slices).tolist()),
        center_x=n(4.0),
        center_y=n(5.0) + 4.0,
        yaw=n(0.06),
        half_width=half_width,
        half_length=half_length,
        harmonics=(n(0.02), n(0.012), float(rng.uniform(0, 2 * math.pi)), n(0.01)),
        skull_thickness=float(np.clip(6.0 + n(0.9), 4.0, 8.5)),
        scalp_thickness=float(np.clip(5.0 + n(1.0), 3.0, 8.0)),
        grey_hu=38.0 + n(1.5),
        white_hu=28.0 + n(1.5),
        csf_hu=float(np.clip(8.0 + n(2.5), 0.0, 15.0)),
        bone_hu=float(np.clip(1400.0 + n(120.0), 1100.0, 1600.0)),
        ventricle_size=float(np.exp(n(0.15))) * (0.8 + 0.9 * age_atrophy),
        sulcus_count=int(rng.integers(22, 31)),
        sulcus_phase=float(rng.uniform(0, 2 * math.pi)),
        sulcus_drift=float(rng.uniform(2.5, 4.5)),
        sulcus_depth=float(np.clip(13.0 + n(2.0), 8.0, 18.0)),
        calcified_choroid=bool(rng.random() < 0.5 + 0.4 * age_atrophy),
        calcified_pineal=bool(rng.random() < 0.4),
        shape_seed=int(rng.integers(0, 2**31)),
    )


def head_size(t: float) -> float:
    """How big the cranial cavity is at height t, relative to its widest level (at t = 0.4)."""
    reach = 0.62 if t < 0.4 else 0.64
    return math.sqrt(max(1.0 - ((t - 0.4) / reach) ** 2, 0.0))


def _anterior_cut(t: float) -> float:
    """How much the anterior cranial cavity is cut back at the skull base (the face is there)."""
    return 0.42 * min(max((0.26 - t) / 0.26, 0.0), 1.0)


def _face(t: float) -> float:
    """How far the face juts out in front of the skull at height t (fraction of the radius)."""
    return 0.22 * min(max((0.2 - t) / 0.12, 0.0), 1.0)


# ---------------------------------------------------------------------------------------------
# Bleeds


@dataclasses.dataclass(frozen=True)
class Bleed:
    """One hemorrhage: a 3-D event over slices first..last (inclusive) of its series.

    `angle` is a direction in the head frame (0 = patient left, -pi/2 = front) and `arc` the
    half-angle covered along the inner table (epidural, subdural, convexity subarachnoid);
    `size` is the largest thickness (epidural, subdural), radius (intraparenchymal) or layer
    depth (intraventricular) in mm. `hu` is the clot's density. `variant`:
    subarachnoid "convexity" / "basal"; intraparenchymal "deep" / "lobar" / "cerebellar";
    intraventricular "layering" / "cast"; epidural "fracture" (with a skull fracture) / "".
    """

    subtype: str
    first: int
    last: int
    t_center: float
    t_half: float
    hu: float
    angle: float = 0.0
    arc: float = 0.0  # half arc along the inner table, radians
    size: float = 0.0
    depth: float = 0.0  # lobar bleeds: centre depth below the inner table, mm
    x: float = 0.0  # deep and cerebellar bleeds: fixed centre, mm
    y: float = 0.0
    side: int = 0  # -1 patient right, +1 left, 0 both
    variant: str = ""
    seed: int = 0

    def extent(self, t: float, step: float) -> float:
        """Relative size on the slice at height t, 0 off the event.

        An ellipsoid's profile for clots (a lens, a blob); flatter for blood spread in a layer
        over the brain (subdural, subarachnoid), which stays thick until near its ends.
        """
        u = (t - self.t_center) / (self.t_half + 0.5 * step)
        profile = max(1.0 - u * u, 0.0)
        return profile**0.25 if self.subtype in ("subdural", "subarachnoid") else profile**0.5


# Patients with a bleed: which types together, and how often. Trauma gives subdural with
# subarachnoid (and contusions); hypertensive bleeds rupture into the ventricles; aneurysms
# fill the cisterns and often the ventricles. Weights tuned so per-slice label prevalences
# match the RSNA stage-2 train set (see the `ct.writer` docstring).
_PATTERNS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("subdural",), 0.11),
    (("subdural", "subarachnoid"), 0.09),
    (("subdural", "subarachnoid", "intraparenchymal"), 0.09),
    (("subdural", "intraparenchymal"), 0.02),
    (("subarachnoid",), 0.02),
    (("subarachnoid", "intraventricular"), 0.07),
    (("intraparenchymal",), 0.09),
    (("intraparenchymal", "intraventricular"), 0.23),
    (("intraparenchymal", "intraventricular", "subarachnoid"), 0.11),
    (("intraparenchymal", "subarachnoid"), 0.01),
    (("intraventricular",), 0.12),
    (("epidural",), 0.013),
    (("epidural", "subdural"), 0.025),
    (("epidural", "subarachnoid"), 0.005),
)
BLEED_RATE = 0.47  # fraction of patients with any bleed


def _slice_run(
    heights: np.ndarray, center: float, half: float, allowed: tuple[float, float]
) -> tuple[int, int] | None:
    """Slices within center +- half, among those whose height is in `allowed` (where the
    bleed type can be drawn); at least two adjacent ones when the series has them."""
    ok = np.flatnonzero((heights >= allowed[0]) & (heights <= allowed[1]))
    if len(ok) == 0:
        return None
    run = ok[np.abs(heights[ok] - center) <= half]
    if len(run) >= 2:
        return int(run[0]), int(run[-1])
    nearest = int(np.argmin(np.abs(heights[ok] - center)))
    if len(ok) == 1:
        return int(ok[0]), int(ok[0])
    if nearest == len(ok) - 1 or (
        nearest > 0
        and abs(heights[ok[nearest - 1]] - center) < abs(heights[ok[nearest + 1]] - center)
    ):
        nearest -= 1
    return int(ok[nearest]), int(ok[nearest + 1])


def draw_bleeds(rng: np.random.Generator, head: Head, *, subtlety: float) -> tuple[Bleed, ...]:
    """Draws the patient's bleeds (none for most patients), each over a run of slices.

    `subtlety` > 1 makes lesions smaller and fainter (nearer brain density), < 1 larger and
    denser; it never changes which slices are labelled.
    """
    if rng.random() >= BLEED_RATE:
        return ()
    weights = np.array([w for _, w in _PATTERNS])
    types = _PATTERNS[rng.choice(len(_PATTERNS), p=weights / weights.sum())][0]
    heights = np.asarray(head.heights)
    grow = subtlety**-0.5
    bleeds = []

    def add(subtype, centers, half, allowed, **fields) -> Bleed | None:
        """A bleed centred at a height in `centers` over +- `half` (heights t)."""
        dense = float(rng.uniform(62.0, 85.0))
        hu = 48.0 + (dense - 48.0) / subtlety
        run = _slice_run(heights, float(rng.uniform(*centers)), half, allowed)
        seed = int(rng.integers(2**31))
        if run is not None:  # None only for series too short to reach where it goes
            first, last = run
            # Centre the profile on the labelled run: it is > 0 on every labelled slice.
            center = 0.5 * (heights[first] + heights[last])
            half = 0.5 * (heights[last] - heights[first])
            bleeds.append(Bleed(subtype, first, last, center, half, hu, seed=seed, **fields))
            return bleeds[-1]
        return None

    def near(bleed: Bleed | None, centers: tuple[float, float]) -> tuple[float, float]:
        """Heights to centre a bleed on: around `bleed` (same cause, same place) if any."""
        if bleed is None:
            return centers
        return (bleed.t_center - 0.04, bleed.t_center + 0.04)

    side = -1 if rng.random() < 0.5 else 1
    lateral = (0.0 if side > 0 else math.pi) + float(rng.normal(0.0, 0.45)) * side
    # Trauma first: the extra-axial bleeds fix where the blow was (side and height).
    blow = None
    if "subdural" in types:
        arc, thick = float(rng.uniform(0.9, 1.5)), float(rng.uniform(4.0, 11.0))
        angle = lateral + float(rng.normal(0.0, 0.3))
        blow = add(
            "subdural",
            (0.45, 0.72),
            float(rng.uniform(0.1, 0.3)),
            (0.2, 0.97),
            angle=angle,
            arc=arc,
            size=thick * grow,
        )
    if "epidural" in types:
        arc, thick = float(rng.uniform(0.3, 0.5)), float(rng.uniform(10.0, 22.0))
        fracture = "fracture" if rng.random() < 0.6 else ""
        blow = add(
            "epidural",
            near(blow, (0.35, 0.75)),
            float(rng.uniform(0.06, 0.15)),
            (0.25, 0.9),
            angle=lateral,
            arc=arc,
            size=thick * grow,
            variant=fracture,
        )
    deep = None
    if "intraparenchymal" in types:
        # z extent from the radius before `grow`, so subtlety never changes the labels.
        radius = float(rng.uniform(8.0, 22.0))
        size = dict(size=radius * grow, side=side)
        if "intraventricular" in types or (blow is None and rng.random() < 0.5):
            # Putamen or thalamus, beside the ventricle it may rupture into.
            x, y = side * float(rng.uniform(14.0, 24.0)), float(rng.uniform(-6.0, 14.0))
            deep = add(
                "intraparenchymal",
                (0.38, 0.5),
                radius / 140.0,
                (0.32, 0.55),
                x=x,
                y=y,
                variant="deep",
                **size,
            )
        elif blow is None and rng.random() < 0.15:
            x, y = side * float(rng.uniform(15.0, 25.0)), float(rng.uniform(30.0, 40.0))
            size["size"] = min(radius, 14.0) * grow
            add(
                "intraparenchymal",
                (0.1, 0.16),
                min(radius / 140.0, 0.1),
                (0.04, 0.22),
                x=x,
                y=y,
                variant="cerebellar",
                **size,
            )
        else:  # lobar: a contusion under the blow in trauma, anywhere otherwise
            angle = lateral + float(rng.normal(0.0, 0.6))
            add(
                "intraparenchymal",
                near(blow, (0.38, 0.78)),
                radius / 140.0,
                (0.3, 0.9),
                angle=angle,
                depth=radius * grow + 8.0,
                variant="lobar",
                **size,
            )
    if "intraventricular" in types:
        both, cast = rng.random(2) < (0.45, 0.25)
        depth = float(rng.uniform(4.0, 10.0))
        add(
            "intraventricular",
            near(deep, (0.47, 0.58)),
            float(rng.uniform(0.05, 0.12)),
            (0.41, 0.68),
            size=depth * grow,
            side=0 if both else side,
            variant="cast" if cast else "layering",
        )
    if "subarachnoid" in types:
        if blow is None and rng.random() < 0.55:  # aneurysmal: cisterns and fissures
            add(
                "subarachnoid",
                (0.27, 0.33),
                float(rng.uniform(0.08, 0.16)),
                (0.06, 0.5),
                variant="basal",
            )
        else:  # over the convexity, under the blow in trauma
            angle = lateral + float(rng.normal(0.0, 0.4))
            arc = float(rng.uniform(0.5, 1.1))
            add(
                "subarachnoid",
                near(blow, (0.45, 0.85)),
                float(rng.uniform(0.08, 0.2)),
                (0.3, 0.97),
                angle=angle,
                arc=arc,
                variant="convexity",
            )
    return tuple(bleeds)


def slice_labels(bleeds: tuple[Bleed, ...], num_slices: int) -> np.ndarray:
    """uint8[num_slices, 6]: one column per SUBTYPES entry, then `any` (their OR)."""
    labels = np.zeros((num_slices, len(SUBTYPES) + 1), np.uint8)
    for bleed in bleeds:
        labels[bleed.first : bleed.last + 1, SUBTYPES.index(bleed.subtype)] = 1
    labels[:, -1] = labels[:, :-1].max(axis=1)
    return labels


# ---------------------------------------------------------------------------------------------
# Rendering


class HeadGrid:
    """Head-frame coordinates of the pixels around one patient's head, for one image size.

    Built once per series: the polar coordinates, the angular shape of skull and scalp, the
    sulcal pattern and a bank of correlated noise do not change from slice to slice; each
    slice takes windows of them.
    """

    def __init__(self, head: Head, *, image_size: int, pixel_spacing: float):
        self.head, self.size, self.px = head, image_size, pixel_spacing
        self.inv_px = 1.0 / pixel_spacing
        self.cos_yaw, self.sin_yaw = math.cos(head.yaw), math.sin(head.yaw)
        self.col0 = head.center_x * self.inv_px + image_size / 2 - 0.5  # head centre, pixels
        self.row0 = head.center_y * self.inv_px + image_size / 2 - 0.5
        # The largest radius anything is drawn at (the face juts out at the base).
        self.reach = (
            head.half_length * 1.3 + head.skull_thickness + head.scalp_thickness + 6.0
        ) * self.inv_px
        self.rows, self.cols = self.window_around(self.col0, self.row0, self.reach)
        ys = (np.arange(self.rows.start, self.rows.stop, dtype=np.float32) - self.row0) * self.px
        xs = (np.arange(self.cols.start, self.cols.stop, dtype=np.float32) - self.col0) * self.px
        dx, dy = xs[None, :], ys[:, None]
        c, s = np.float32(self.cos_yaw), np.float32(self.sin_yaw)
        self.x = dx * c + dy * s
        self.y = dy * c - dx * s
        self.r = np.hypot(self.x, self.y)
        self.theta = np.arctan2(self.y, self.x)
        th, h = self.theta, head
        ca, sa = self.x / np.maximum(self.r, 1e-3), self.y / np.maximum(self.r, 1e-3)
        self.front = np.maximum(-sa, 0.0) ** 2  # 1 straight ahead, 0 behind the ear line
        a2, a3, phase, egg = h.harmonics
        wobble = 1.0 + a2 * np.cos(2 * th + phase) + a3 * np.cos(3 * th - phase) + egg * sa
        ellipse = h.half_width * h.half_length / np.hypot(h.half_length * ca, h.half_width * sa)
        self.inner = (ellipse * wobble).astype(np.float32)  # inner table at the widest level
        self.inner_max = float(self.inner.max())
        # Skull: thicker at the front and back, thinnest over the temporal squama.
        self.skull = (h.skull_thickness * (0.8 + 0.4 * sa**2)).astype(np.float32)
        # Scalp: the temporalis muscles thicken it at the sides.
        self.scalp = (h.scalp_thickness + 5.0 * ca**4).astype(np.float32)
        detail = np.random.default_rng([h.shape_seed, 1])
        p1, p2, p3 = detail.uniform(0, 2 * math.pi, 3)
        sulcal = h.sulcus_count * th + 1.6 * np.sin(2 * th + p1) + 1.2 * np.sin(5 * th + p2)
        self.sulcus_cos = np.cos(sulcal).astype(np.float32)
        self.sulcus_sin = np.sin(sulcal).astype(np.float32)
        self.sulcus_depth = (h.sulcus_depth * (0.65 + 0.35 * np.cos(7 * th + p3))).astype(
            np.float32
        )
        self.sulcus_spacing = np.maximum(self.r, 1.0) * np.float32(1.0 / h.sulcus_count)
        self._noise_bank = None

    def window_around(self, col: float, row: float, radius_px: float) -> tuple[slice, slice]:
        """Image slices covering a disc (pixel centre and radius), clipped to the image."""
        r0 = min(max(math.floor(row - radius_px), 0), self.size)
        r1 = min(max(math.ceil(row + radius_px) + 1, 0), self.size)
        c0 = min(max(math.floor(col - radius_px), 0), self.size)
        c1 = min(max(math.ceil(col + radius_px) + 1, 0), self.size)
        return slice(r0, r1), slice(c0, c1)

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Head-frame point (mm) -> (col, row) on the image."""
        col = self.col0 + (x * self.cos_yaw - y * self.sin_yaw) * self.inv_px
        row = self.row0 + (x * self.sin_yaw + y * self.cos_yaw) * self.inv_px
        return col, row

    def noise(self, rng: np.random.Generator) -> np.ndarray:
        """Unit-variance noise correlated over ~2 pixels, float32[size, size] (a view).

        Drawing fresh gaussian noise per slice costs more than drawing the slice, so a bank
        twice the image size is drawn once per series and each slice takes a random crop.
        """
        if self._noise_bank is None:
            bank_rng = np.random.default_rng([self.head.shape_seed, 2])
            side = 2 * self.size + 1
            white = bank_rng.standard_normal((side, side), dtype=np.float32)
            self._noise_bank = 0.5 * (
                white[1:, 1:] + white[:-1, 1:] + white[1:, :-1] + white[:-1, :-1]
            )
        oy, ox = (int(v) for v in rng.integers(0, self.size + 1, 2))
        view = self._noise_bank[oy : oy + self.size, ox : ox + self.size]
        flip_y, flip_x, swap = rng.random(3) < 0.5
        view = view[:: -1 if flip_y else 1, :: -1 if flip_x else 1]
        return view.T if swap else view


class _View:
    """The grid's arrays over one window at one height, and an HU layer to paint into.

    Two views make a slice: the wall (air, scalp, skull, face) over the whole head, and the
    cranial contents (brain, CSF, blood) over the cavity only; `render_hu` blends the second
    into the first across the inner table.
    """

    def __init__(self, grid: HeadGrid, t: float, reach_px: float, fill: float):
        self.grid, self.t, self.inv_px = grid, t, grid.inv_px
        self.size_t = head_size(t)
        rows, cols = grid.window_around(grid.col0, grid.row0, reach_px)
        rows = slice(max(rows.start, grid.rows.start), min(rows.stop, grid.rows.stop))
        cols = slice(max(cols.start, grid.cols.start), min(cols.stop, grid.cols.stop))
        self.rows, self.cols = rows, cols
        self.local = (
            slice(rows.start - grid.rows.start, rows.stop - grid.rows.start),
            slice(cols.start - grid.cols.start, cols.stop - grid.cols.start),
        )
        self.x, self.y = grid.x[self.local], grid.y[self.local]
        self.r, self.theta = grid.r[self.local], grid.theta[self.local]
        cut = np.float32(_anterior_cut(t))
        self.inner = grid.inner[self.local] * np.float32(self.size_t)
        if cut > 0:
            self.inner *= 1.0 - cut * grid.front[self.local]
        self.depth = self.inner - self.r  # mm below the inner table, > 0 inside the cavity
        self.layer = np.full(self.r.shape, fill, np.float32)
        self.outer = None  # outer table radius (mm), set when the wall is painted

    def window(self, x: float, y: float, radius: float) -> tuple[slice, slice]:
        """Slices into this view's arrays covering a head-frame disc (mm)."""
        col, row = self.grid.to_pixel(x, y)
        rows, cols = self.grid.window_around(col, row, radius * self.inv_px + 1)
        r0, c0 = self.rows.start, self.cols.start
        height, width = self.r.shape
        return (
            slice(min(max(rows.start - r0, 0), height), min(max(rows.stop - r0, 0), height)),
            slice(min(max(cols.start - c0, 0), width), min(max(cols.stop - c0, 0), width)),
        )

    def ellipse(self, cx, cy, a, b, angle=0.0):
        """Window and soft mask of an ellipse (centre, semi-axes along x and y, rotation)."""
        win = self.window(cx, cy, max(a, b))
        ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        dx, dy = self.x[win] - np.float32(cx), self.y[win] - np.float32(cy)
        u = (dx * ca + dy * sa) * np.float32(1.0 / a)
        v = (dy * ca - dx * sa) * np.float32(1.0 / b)
        q = np.sqrt(u * u + v * v)
        return win, _inside((1.0 - q) * np.float32(min(a, b)), self.inv_px)

    def paint(self, win, mask: np.ndarray, hu: float) -> None:
        """Blends `hu` into the layer window with weights `mask`."""
        target = self.layer[win]
        target += mask * (np.float32(hu) - target)


_ALL = np.s_[:, :]


def _paint_wall(view: _View, head: Head) -> None:
    """Scalp, skull (outer table, diploe, inner table) and, at the base, the face."""
    grid, inv_px, t, local = view.grid, view.inv_px, view.t, view.local
    face = _face(t)
    outer = grid.inner[local] * np.float32(max(view.size_t, 0.2))
    if face > 0:  # at the base the face juts out in front of the cranial cavity
        outer *= 1.0 + np.float32(face) * np.sqrt(grid.front[local])
    outer += grid.skull[local]
    view.outer = outer
    skin = outer + grid.scalp[local] * np.float32(0.6 + 0.4 * view.size_t)
    view.layer += _inside(skin - view.r, inv_px) * np.float32(_SOFT_TISSUE_HU - AIR_HU)
    # Subcutaneous fat: a thin dark band in the scalp.
    fat = np.abs(view.r - (outer + 0.35 * (skin - outer))) - 0.6
    view.paint(_ALL, _inside(-fat, inv_px) * np.float32(0.7), _FAT_HU)
    # Bone across its thickness: dense outer table, marrow-filled diploe, inner table.
    u = (view.r - view.inner) / np.maximum(outer - view.inner, 1.0)
    bone = np.float32(0.45 * head.bone_hu) + np.float32(0.55 * head.bone_hu) * np.clip(
        (u - 0.68) * 6.0, 0.0, 1.0
    )
    bone += np.float32(0.35 * head.bone_hu) * np.clip((0.3 - u) * 6.0, 0.0, 1.0)
    view.paint(_ALL, _inside(outer - view.r, inv_px), bone)
    if t < 0.26:  # the face: soft tissue behind a shell of bone, where the wall is thick
        thick = head.skull_thickness
        soft = _inside(view.r - view.inner - thick, inv_px)
        soft *= _inside(outer - view.r - 0.6 * thick, inv_px)
        view.paint(_ALL, soft, _SOFT_TISSUE_HU - 10.0)
    if t < 0.2:  # globes in orbital fat, ethmoid and sphenoid air
        front = -(head.half_length * view.size_t * (1.0 + face) + head.skull_thickness)
        k = _bell(t, -0.1, 0.2)
        for side in (-1, 1):
            view.paint(*view.ellipse(side * 29.0, front + 24.0, 12 * k + 1, 16 * k + 1), _FAT_HU)
            view.paint(*view.ellipse(side * 30.0, front + 14.0, 11 * k + 1, 11 * k + 1), 12.0)
        view.paint(*view.ellipse(0.0, front + 24.0, 7.0 * k + 1, 14.0 * k + 1), -850.0)
        k = _bell(t, 0.02, 0.2)
        if k > 0:
            view.paint(*view.ellipse(0.0, front + 48.0, 11.0 * k, 8.0 * k), -900.0)


def _segment(view: _View, x0, y0, x1, y1):
    """Window, distance (mm) to the segment (x0, y0)-(x1, y1), and position along it (0..1)."""
    win = view.window(0.5 * (x0 + x1), 0.5 * (y0 + y1), 0.5 * math.hypot(x1 - x0, y1 - y0) + 6)
    px, py = view.x[win] - np.float32(x0), view.y[win] - np.float32(y0)
    lx, ly = np.float32(x1 - x0), np.float32(y1 - y0)
    along = np.clip((px * lx + py * ly) * (1.0 / (lx * lx + ly * ly)), 0.0, 1.0)
    return win, np.hypot(px - along * lx, py - along * ly), along


class _Brain(_View):
    """The cranial contents of one slice, with the CSF spaces bleeds fill kept apart."""

    def __init__(self, grid: HeadGrid, t: float, shift: float):
        head = grid.head
        reach = grid.inner_max * head_size(t) * grid.inv_px + 2
        super().__init__(grid, t, reach, head.white_hu)
        self.head, self.shift = head, shift
        self.cisterns = np.zeros(self.r.shape, np.float32)
        self.sylvian = np.zeros(self.r.shape, np.float32)
        self.fissure = None  # (window, mask) of the interhemispheric fissure
        self.ventricles: list[tuple[tuple[slice, slice], np.ndarray, int, float]] = []

    def paint_normal(self) -> None:
        """Grey and white matter, sulci, fissures, cisterns, deep nuclei, ventricles."""
        self._cortex()
        self._fissures()
        if self.t < 0.24:
            self._posterior_fossa()
        self._cisterns()
        self._deep_grey_and_ventricles()

    def _cortex(self) -> None:
        # Sulci: radial clefts of CSF from the surface, lined by cortex; the pattern turns
        # slowly with height so neighbouring slices look alike.
        grid, head, local, inv_px = self.grid, self.head, self.local, self.inv_px
        phase = head.sulcus_phase + 2 * math.pi * head.sulcus_drift * self.t
        pattern = grid.sulcus_cos[local] * np.float32(-2.0 * math.cos(phase))
        pattern += grid.sulcus_sin[local] * np.float32(2.0 * math.sin(phase))
        pattern += np.float32(2.0)
        # ~ distance (mm) to the nearest sulcus centre line
        self.apart = np.sqrt(np.maximum(pattern, 0.0, out=pattern), out=pattern)
        self.apart *= grid.sulcus_spacing[local]
        sulcus_depth = grid.sulcus_depth[local] * np.float32(max(self.size_t, 0.5))
        atrophy = head.ventricle_size
        self.half_width = np.float32(0.45 + 0.5 * atrophy) - np.float32(
            0.6 * (0.45 + 0.5 * atrophy)
        ) * (self.depth / sulcus_depth)
        cortex = 2.8
        grey = _inside(self.half_width + cortex - self.apart, inv_px)
        grey *= _inside(sulcus_depth + cortex - self.depth, inv_px)
        np.maximum(grey, _inside(cortex - self.depth, inv_px), out=grey)
        self.layer += grey * np.float32(head.grey_hu - head.white_hu)
        self.in_sulci = _inside(sulcus_depth - self.depth, inv_px)
        self.surface = _inside(np.float32(0.4 + 0.8 * atrophy) - self.depth, inv_px)
        sulci = _inside(self.half_width - self.apart, inv_px)
        sulci *= self.in_sulci
        np.maximum(sulci, self.surface, out=sulci)
        self.paint(_ALL, sulci, head.csf_hu)

    def sulci_for_blood(self) -> np.ndarray:
        """Where subarachnoid blood goes over the convexity: the sulci, a little distended."""
        sulci = _inside(self.half_width + 0.7 - self.apart, self.inv_px) * self.in_sulci
        return np.maximum(sulci, self.surface)

    def _fissures(self) -> None:
        head, t, inv_px = self.head, self.t, self.inv_px
        atrophy = head.ventricle_size
        if t > 0.3:
            # Interhemispheric fissure; the corpus callosum interrupts it in the middle.
            deep = 18.0 + 60.0 * min(max((t - 0.62) / 0.12, 0.0), 1.0)
            reach = head.half_length * self.size_t
            win, off, _ = _segment(self, self.shift, -reach, self.shift, reach)
            fissure = _inside(np.float32(0.6 + 0.6 * atrophy) - off, inv_px)
            fissure *= np.maximum(
                _inside(deep - self.depth[win], inv_px),
                _inside(np.abs(self.y[win]) - 32.0, inv_px),
            )
            self.paint(win, fissure, head.csf_hu)
            self.fissure = (win, fissure)
        syl = _bell(t, 0.24, 0.5)
        if syl > 0:
            # Sylvian fissures: deep clefts from the side, just in front of the ear line.
            for side in (-1, 1):
                direction = -math.pi / 2 + side * 1.2
                outer = _inner_radius(self, direction)
                cx, cy = math.cos(direction), math.sin(direction)
                win, off, _ = _segment(
                    self, cx * (outer - 30 * syl), cy * (outer - 30 * syl), cx * outer, cy * outer
                )
                cleft = _inside(np.float32(1.0 + 1.2 * atrophy) - off, inv_px)
                cleft *= _inside(28.0 * syl - self.depth[win], inv_px)
                self.paint(win, cleft, head.csf_hu)
                target = self.sylvian[win]
                np.maximum(target, cleft, out=target)

    def _posterior_fossa(self) -> None:
        """Pons, fourth ventricle, petrous ridges and clivus inside the cavity."""
        head, t, shift = self.head, self.t, self.shift
        k = _bell(t, 0.0, 0.26)
        self.paint(*self.ellipse(shift, 10.0, 13.0, 11.0), 0.5 * (head.grey_hu + head.white_hu))
        self.paint(*self.ellipse(shift, 25.0, 5.5 * k + 0.5, 3.5 * k + 0.5), head.csf_hu)
        for side in (-1, 1):
            # Dense bone from the side of the skull forwards to the apex by the clivus.
            win, off, along = _segment(self, side * 13.0, -6.0, side * 44.0, 16.0)
            ridge = _inside(np.float32(4.5 * k) * (0.5 + 0.5 * along) - off, self.inv_px)
            self.paint(win, ridge, 0.85 * head.bone_hu)
        self.paint(*self.ellipse(0.0, -14.0, 6.0 * k + 0.5, 8.0 * k + 0.5), 0.6 * head.bone_hu)

    def _cisterns(self) -> None:
        """The basal cisterns, where aneurysmal blood collects.

        At the skull base the prepontine cistern (in front of the pons) and the cisterna magna
        (behind the cerebellum); above, the suprasellar cistern in front of the midbrain, the
        ambient cistern around it and the quadrigeminal cistern behind.
        """
        t, shift = self.t, self.shift
        low, cis = _bell(t, 0.03, 0.22), _bell(t, 0.17, 0.34)
        shapes = []
        if low > 0:
            back = 0.85 * _inner_radius(self, math.pi / 2) - 4.0
            shapes += [(shift, -3.0, 9.0 * low + 0.5, 3.0), (shift, back, 10.0 * low, 6.0 * low)]
        if cis > 0:
            shapes += [
                (shift, -12.0, 12.0 * cis + 0.5, 8.0 * cis + 0.5),
                (shift, 9.0, 15.5, 15.0),
                (shift, 26.0, 8.0 * cis + 0.5, 5.0 * cis + 0.5),
            ]
        if not shapes:
            return
        for cx, cy, a, b in shapes:
            if min(a, b) > 0.3:
                win, m = self.ellipse(cx, cy, a, b)
                target = self.cisterns[win]
                np.maximum(target, m, out=target)
        if cis > 0:
            win, midbrain = self.ellipse(shift, 9.0, 12.5, 12.0)
            self.cisterns[win] *= 1.0 - midbrain
        self.paint(_ALL, self.cisterns, self.head.csf_hu)

    def _deep_grey_and_ventricles(self) -> None:
        head, t, shift = self.head, self.t, self.shift
        for side in (-1, 1):
            for (x0, y0, a, b, tilt), (t0, t1) in _DEEP_GREY:
                k = _bell(t, t0, t1)
                if k > 0:
                    mask = self.ellipse(
                        side * x0 + shift, y0, a * k + 0.5, b * k + 0.5, side * tilt
                    )
                    self.paint(*mask, head.grey_hu - 3.0)
        for win, mask, side, back in _ventricles(self):
            self.paint(win, mask, head.csf_hu)
            self.ventricles.append((win, mask, side, back))
        k = _bell(t, 0.42, 0.52)
        if head.calcified_choroid and k > 0:
            for side in (-1, 1):
                self.paint(
                    *self.ellipse(side * 21.0 + shift, 32.0, 2.5 * k + 0.6, 2.5 * k + 0.6), 260.0
                )
        k = _bell(t, 0.38, 0.45)
        if head.calcified_pineal and k > 0:
            self.paint(*self.ellipse(shift, 20.0, 2.2 * k + 0.5, 2.2 * k + 0.5), 180.0)


# Deep grey matter (x, y, half width, half length, tilt) and the heights it spans: caudate
# heads, lentiform nuclei, thalami.
_DEEP_GREY = (
    ((14.0, -16.0, 5.5, 8.0, 0.0), (0.38, 0.6)),
    ((25.0, -2.0, 6.0, 15.0, 0.22), (0.32, 0.52)),
    ((10.0, 10.0, 8.5, 11.0, 0.0), (0.32, 0.49)),
)
# Lateral ventricle pieces, likewise: frontal horn, body, atrium and occipital horn.
_VENTRICLE_PIECES = (
    ((9.0, -20.0, 5.0, 11.0, 0.35), (0.40, 0.60)),
    ((10.5, 4.0, 4.5, 22.0, -0.1), (0.47, 0.7)),
    ((20.0, 30.0, 6.5, 13.0, 0.45), (0.38, 0.57)),
)


def _ventricles(brain: _Brain):
    """(window, mask, side, y of the back end) of each ventricle piece on this slice.

    Side 0 is the third ventricle, a midline slit.
    """
    size, t, shift = brain.head.ventricle_size, brain.t, brain.shift
    pieces = []
    for side in (-1, 1):
        for (x0, y0, a, b, tilt), (t0, t1) in _VENTRICLE_PIECES:
            k = _bell(t, t0, t1)
            if k <= 0:
                continue
            a_, b_ = a * size * k + 0.4, b * math.sqrt(size) * (0.5 + 0.5 * k)
            angle = side * tilt
            win, m = brain.ellipse(side * x0 * (0.8 + 0.2 * size) + shift, y0, a_, b_, angle)
            back = y0 + math.hypot(a_ * math.sin(angle), b_ * math.cos(angle))
            pieces.append((win, m, side, back))
    k = _bell(t, 0.3, 0.46)
    if k > 0:
        win, m = brain.ellipse(shift, 2.0, 1.2 * size + 0.3, 12.0 * k + 0.5)
        pieces.append((win, m, 0, 2.0 + 12.0 * k + 0.5))
    return pieces


def _inner_radius(view: _View, direction: float) -> float:
    """Inner-table radius (mm) at this view's height in a head-frame direction."""
    h = view.grid.head
    ca, sa = math.cos(direction), math.sin(direction)
    a2, a3, phase, egg = h.harmonics
    wobble = 1.0 + a2 * math.cos(2 * direction + phase) + a3 * math.cos(3 * direction - phase)
    wobble += egg * sa
    radius = h.half_width * h.half_length / math.hypot(h.half_length * ca, h.half_width * sa)
    return radius * wobble * view.size_t * (1.0 - _anterior_cut(view.t) * max(-sa, 0.0) ** 2)


def _midline_shift(bleeds: tuple[Bleed, ...], heights, index: int) -> float:
    """Mass effect on this slice: mm the midline moves towards the patient's left."""
    step = heights[1] - heights[0] if len(heights) > 1 else 1.0
    shift = 0.0
    for bleed in bleeds:
        if not bleed.first <= index <= bleed.last:
            continue
        extent = bleed.extent(heights[index], step)
        if bleed.subtype in ("subdural", "epidural"):
            shift -= math.copysign(0.35 * bleed.size * extent, math.cos(bleed.angle))
        elif bleed.subtype == "intraparenchymal":
            shift -= bleed.side * 0.35 * bleed.size * extent
    return float(np.clip(shift, -10.0, 10.0))


def _paint_bleed(brain: _Brain, wall: _View, bleed: Bleed, extent: float) -> None:
    """Draws one bleed on this slice at relative size `extent` (> 0)."""
    inv_px, px = brain.inv_px, brain.grid.px
    floor = 1.5 * px  # every labelled slice shows the blood, at least 1.5 pixels across
    if bleed.subtype in ("epidural", "subdural"):
        off = _wrap(brain.theta - np.float32(bleed.angle))
        arc = bleed.arc * (0.55 + 0.45 * extent)
        u = np.clip(off * np.float32(1.0 / arc), -1.0, 1.0)
        if bleed.subtype == "epidural":
            # Biconvex: thickest in the middle, rounding off fast; dura stops it at sutures.
            profile = np.sqrt(1.0 - u * u)
        else:
            # Crescent: about even thickness along a long arc, tapering at the ends.
            profile = (1.0 - u * u) ** 0.35
        thick = np.float32(max(bleed.size * extent, floor)) * profile
        brain.paint(_ALL, _inside(thick - brain.depth, inv_px) * (np.abs(u) < 1.0), bleed.hu)
        if bleed.variant == "fracture":  # a lucent line through the bone over the clot
            off = _wrap(wall.theta - np.float32(bleed.angle))
            crack = _inside(np.float32(0.5 * px) - np.abs(off * wall.r), inv_px)
            crack *= _inside(-wall.depth, inv_px) * _inside(wall.outer - wall.r, inv_px)
            wall.paint(_ALL, crack, 60.0)
    elif bleed.subtype == "subarachnoid":
        if bleed.variant == "basal":
            # Aneurysmal: basal cisterns, Sylvian fissures and the sulci beside them, the front
            # of the interhemispheric fissure.
            side = np.abs(np.abs(_wrap(brain.theta + np.float32(np.pi / 2))) - 1.2) < 0.5
            where = np.maximum(brain.cisterns, brain.sylvian)
            np.maximum(where, brain.sulci_for_blood() * side, out=where)
            if brain.fissure is not None:
                win, fissure = brain.fissure
                target = where[win]
                np.maximum(target, fissure * _inside(-brain.y[win], inv_px), out=target)
        else:
            off = np.abs(_wrap(brain.theta - np.float32(bleed.angle)))
            where = brain.sulci_for_blood() * _inside(
                (np.float32(bleed.arc) - off) * brain.r, inv_px
            )
        brain.paint(_ALL, where, bleed.hu)
    elif bleed.subtype == "intraparenchymal":
        if bleed.variant == "lobar":  # the centre keeps its depth below the inner table
            reach = max(_inner_radius(brain, bleed.angle) - bleed.depth, 0.0)
            cx, cy = reach * math.cos(bleed.angle), reach * math.sin(bleed.angle)
        else:
            cx, cy = bleed.x + brain.shift, bleed.y
        radius = max(bleed.size * extent, floor)
        win = brain.window(cx, cy, radius * 1.4 + 4.0)
        dx, dy = brain.x[win] - np.float32(cx), brain.y[win] - np.float32(cy)
        dist = np.hypot(dx, dy)
        c, s = dx / np.maximum(dist, 1e-3), dy / np.maximum(dist, 1e-3)
        # Irregular outline: low harmonics of the direction from the centre.
        a, b = np.random.default_rng(bleed.seed).uniform(0, 2 * math.pi, 2)
        lumpy = 1.0 + 0.15 * (math.cos(a) * (4 * c**3 - 3 * c) + math.sin(a) * s)
        lumpy += 0.1 * math.cos(b) * (c * c - s * s)
        outline = np.float32(radius) * lumpy
        in_brain = _inside(brain.depth[win] - 2.0, inv_px)
        rim = np.float32(2.0 + 3.0 * extent)  # oedema around the clot
        brain.paint(win, _inside(outline + rim - dist, inv_px) * 0.8 * in_brain, _EDEMA_HU)
        brain.paint(win, _inside(outline - dist, inv_px) * in_brain, bleed.hu)
    elif bleed.subtype == "intraventricular":
        # Bilateral bleeds fill the third ventricle too.
        pieces = [p for p in brain.ventricles if bleed.side in (0, p[2])]
        if not pieces:
            return
        level = max(p[3] for p in pieces) - max(bleed.size * extent, 2 * floor)
        for win, mask, _, _ in pieces:
            if bleed.variant == "cast":
                fill = mask
            else:  # the patient lies supine: blood settles at the back, with a flat level
                fill = mask * _inside(brain.y[win] - np.float32(level), inv_px)
            brain.paint(win, fill, bleed.hu - 4.0)


def render_hu(
    grid: HeadGrid,
    index: int,
    bleeds: tuple[Bleed, ...] = (),
    *,
    noise: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Slice `index` of the series in Hounsfield units: float32[size, size].

    Args:
      grid: the patient's head on the scanner's pixel grid (`HeadGrid`).
      index: slice number, 0 at the skull base.
      bleeds: the patient's bleeds (`draw_bleeds`); those spanning this slice are drawn.
      noise: quantum noise, ~4 HU standard deviation at 1 (0 = none).
      rng: picks this slice's crop of the noise bank (needed when noise > 0).
    """
    heights = grid.head.heights
    t = heights[index]
    step = heights[1] - heights[0] if len(heights) > 1 else 1.0
    wall = _View(grid, t, grid.reach * max(head_size(t), 0.3) + 2, AIR_HU)
    _paint_wall(wall, grid.head)
    brain = _Brain(grid, t, _midline_shift(bleeds, heights, index))
    brain.paint_normal()
    for bleed in bleeds:
        if bleed.first <= index <= bleed.last:
            _paint_bleed(brain, wall, bleed, max(bleed.extent(t, step), 0.35))
    # The cavity's window lies inside the wall's: blend the contents in across the inner table.
    inner = (
        slice(brain.rows.start - wall.rows.start, brain.rows.stop - wall.rows.start),
        slice(brain.cols.start - wall.cols.start, brain.cols.stop - wall.cols.start),
    )
    wall.paint(inner, _inside(brain.depth, grid.inv_px), brain.layer)
    hu = np.full((grid.size, grid.size), AIR_HU, np.float32)
    hu[wall.rows, wall.cols] = wall.layer
    if noise > 0:
        hu += grid.noise(rng) * np.float32(4.0 * noise)
    return hu
