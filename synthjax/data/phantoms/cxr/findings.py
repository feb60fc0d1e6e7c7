"""Chest radiograph phantom, part 2: where each of the 14 findings goes and how it is drawn.

Holds `FindingLayout` / `draw_layout` (the placement and size of every finding in one image,
drawn whatever the labels), `with_geometric_findings` (findings that reshape normal anatomy:
cardiomegaly, atelectatic volume loss, AP projection) and `FindingPainter`, one renderer per
finding. Each finding has its own visual signature, drawn in numpy from coordinate grids (no
per-pixel Python) so that a label truly changes the image: learnable at 32x32, but not
trivially.

Data flow: `cxr.anatomy` (detector, patient) -> this module -> `cxr.render` (composes
the painted fields with the anatomy into one image) -> `cxr.writer.write_chexpert_phantom` (the
raw phantom folder: CheXpert-v1.0-small CSVs + JPEGs) -> `synthjax.data.chexpert` (the CheXpert
TFDS builder) -> array_record shards.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from synthjax.data.chexpert import CHEXPERT_LABELS
from synthjax.data.phantoms.cxr.anatomy import Anatomy, ramp, rib_phase_at, rib_profile

UNCERTAIN_SEVERITY = 0.6  # an uncertain finding is drawn, fainter
LABEL_INDEX = {name: i for i, name in enumerate(CHEXPERT_LABELS)}


# ---------------------------------------------------------------------------------------------
# Finding layouts


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
# Finding renderers


def with_geometric_findings(anatomy: Anatomy, layout: FindingLayout, s: np.ndarray) -> Anatomy:
    """Findings that change the shape of normal anatomy rather than add something to it."""
    cm, at = s[LABEL_INDEX["Cardiomegaly"]], s[LABEL_INDEX["Atelectasis"]]
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


def _bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier curve through control points, float[n, 2]."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


class FindingPainter:
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
            strength = float(self.s[LABEL_INDEX[name]])
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
                self.opacity[win] += (0.95 * k) * ramp((1.0 - np.sqrt(d2)) / edge)

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
            extent = ramp((0.45 - self.cv.yp[win]) * (1.0 / 0.004))  # minor fissure
            start = np.array([side * 0.1, 0.44])
        else:
            win = self.cv.window(-0.45, 0.45, 0.5, 0.98)
            extent = ramp((self.cv.yp[win] - 0.56) * (1.0 / 0.04))
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
        core = ramp((1.0 - d2) * 1.5) * (0.6 + 0.4 * self.mottle[win])
        self.opacity[win] += k * (0.6 * core + 0.25 * np.exp(-0.5 * d2))

    def atelectasis(self, k: float) -> None:
        """Plate-like basal opacity; the volume loss itself is in `with_geometric_findings`."""
        side, height, tilt = self.layout.atelectasis
        dome_y = self.a.diaphragm_right if side < 0 else self.a.diaphragm_left
        xc, yc = side * 0.21, dome_y - height
        win = self.cv.window(xc - 0.14, xc + 0.14, yc - 0.06, dome_y + 0.05)
        x, y = self.cv.xp[win], self.cv.yp[win]
        plate = ramp(1.0 - np.abs(y - yc - tilt * (x - xc)) * (1.0 / 0.013))
        plate *= ramp((0.1 - np.abs(x - xc)) * 40.0)
        basal = ramp(1.0 - (self.dome[win] - y) * (1.0 / 0.07)) * self._side(win, side)
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
        rim = ramp((inner - 1.0) * 20.0) * on_side
        self.lucency[win] += 0.35 * k * rim
        collapsed = ramp((1.0 - inner) * 3.0) * on_side
        self.opacity[win] += 0.12 * k * collapsed
        self.markings[win] *= 1.0 - np.minimum(rim * (1.5 * k), 1.0)
        line_width = 2.4 * self.cv.px / half_w
        line = ramp(1.0 - np.abs(inner - 1.0) / line_width) * on_side * self.lung[win]
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
            meniscus = level - 0.09 * ramp((ax - 0.12) * 4.0) ** 2
            fluid = ramp((y - meniscus) * (1.0 / 0.025)) * self._side(win, side)
            self.opacity[win] += 0.8 * k * fluid

    def pleural_other(self, k: float) -> None:
        """Pleural thickening along the lateral chest wall, with calcified plaques."""
        side, top, thickness = self.layout.pleural_other
        a = self.a
        win = self.cv.window(-0.47, 0.47, top - 0.03, top + 0.3)
        ax, y = np.abs(self.cv.xp[win]), self.cv.yp[win]
        depth_in_ellipse = 2.0 * thickness / a.lung_half_width
        band = ramp((self.ellipse[win] - 1.0 + depth_in_ellipse) / (0.4 * depth_in_ellipse))
        band *= ramp((ax - a.lung_offset) * 20.0)
        if side != 0:
            band *= self._side(win, side)
        band *= ramp((y - top) * 40.0) * ramp((top + 0.26 - y) * 40.0)
        self.opacity[win] += 0.9 * k * band
        wall_x = a.lung_offset + 0.93 * a.lung_half_width
        for wall_side in (-1.0, 1.0) if side == 0 else (side,):
            for dy in (0.07, 0.18):
                pwin, d2 = self._blob(wall_side * wall_x, top + dy, 0.012, 0.028, reach=1.5)
                self.overlay[pwin] += 0.2 * k * ramp((1.0 - d2) * 3.0)

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
        phase = rib_phase_at(a, ax, yy)
        near = ramp((yy - y + 0.05) * 20.0) * ramp((y_last + 0.05 - yy) * 20.0) * on_side
        step = 0.35 * ramp((ax - x_abs) / (1.5 * px)) * near
        gap = ramp(1.0 - np.abs(ax - x_abs) / (1.5 * px)) * near
        broken = rib_profile(phase + step) * (1.0 - 0.85 * gap)
        blend = min(k, 1.0)
        self.fractured_ribs = (win, (1.0 - blend) * rib_profile(phase) + blend * broken)
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
