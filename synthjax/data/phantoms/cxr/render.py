"""Chest radiograph phantom, part 3: composing one frontal or lateral radiograph.

Holds `render_frontal` (normal anatomy from `cxr.anatomy`, findings painted by
`cxr.findings`, then vessels, devices, exposure and quantum noise) and `render_lateral`
(anatomy only; the builder keeps frontal views). Both return the uint8 image that is saved as
one JPEG.

Data flow: `cxr.anatomy` + `cxr.findings` -> this module ->
`cxr.writer.write_chexpert_phantom` (the raw phantom folder: CheXpert-v1.0-small CSVs + JPEGs)
-> `synthjax.data.chexpert` (the CheXpert TFDS builder) -> array_record shards.
"""

from __future__ import annotations

import math

import numpy as np

from synthjax.data.phantoms.cxr.anatomy import (
    Anatomy,
    Canvas,
    Detector,
    ramp,
    rib_phase_at,
    rib_profile,
    soft_tissue_extras,
    spine_and_clavicles,
)
from synthjax.data.phantoms.cxr.findings import (
    LABEL_INDEX,
    FindingLayout,
    FindingPainter,
    with_geometric_findings,
)


def render_frontal(
    detector: Detector,
    anatomy: Anatomy,
    layout: FindingLayout,
    severity: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: float,
    subtlety: float,
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
    a = with_geometric_findings(anatomy, layout, s)
    cv = Canvas(detector, a)
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
    above_dome = ramp((dome - yp) * (1.0 / 0.008))
    upper = ramp(1.0 - ((yp - 0.34) * (1.0 / 0.2)) ** 2)
    knob = ramp(1.0 - ((yp - 0.3) * (1.0 / 0.05)) ** 2) * (xp > 0)
    ecm = s[LABEL_INDEX["Enlarged Cardiomediastinum"]]
    mediastinum = a.mediastinum_half_width * (1.0 + 0.45 * ecm * upper) + 0.02 * knob
    lung = ramp((1.0 - ellipse) * 9.0) * above_dome * ramp((ax - mediastinum) * (1.0 / 0.012))
    shoulder = ramp(yp * (1.0 / 0.16))
    body_half_width = 0.13 + (a.body_half_width - 0.13) * shoulder * (2.0 - shoulder)
    central = ramp((mediastinum - ax) * (1.0 / 0.012)) * ramp((yp - 0.08) * 20.0)
    central *= ramp((a.heart_y - yp) * 10.0)
    body = ramp((body_half_width - ax) * (1.0 / 0.03))

    heart = np.zeros_like(xp)
    reach = 1.3 * max(a.heart_half_width, a.heart_half_height)
    win = cv.window(a.heart_x - reach, a.heart_x + reach, a.heart_y - reach, a.heart_y + reach)
    hx, hy = xp[win] - a.heart_x, yp[win] - a.heart_y
    ct, st = math.cos(a.heart_tilt), math.sin(a.heart_tilt)
    heart_ellipse = ((hx * ct + hy * st) / a.heart_half_width) ** 2 + (
        (hy * ct - hx * st) / a.heart_half_height
    ) ** 2
    heart[win] = ramp((1.0 - heart_ellipse) * 8.0)
    lung *= 1.0 - heart
    rib_visibility = 0.3 + 0.7 * lung

    paint = FindingPainter(cv, a, layout, s, ellipse, dome, lung, mottle)
    paint.all()

    thorax = ramp((0.42 - ax) * 50.0) * ramp((yp - 0.1) * 30.0) * ramp((1.02 - yp) * 20.0)
    thorax *= rib_visibility
    ribs = rib_profile(rib_phase_at(a, ax, yp))
    if paint.fractured_ribs is not None:
        fwin, fribs = paint.fractured_ribs
        ribs[fwin] = fribs
    ribs *= thorax
    bone = spine_and_clavicles(cv, a)

    aeration = lung * (1.0 - np.minimum(paint.opacity, 1.0)) * (1.0 + paint.lucency)
    image = 0.04 + body * (a.soft_tissue - 0.04)
    image += 0.06 * np.maximum(heart, central) + 0.05 * (1.0 - above_dome) * body
    image -= a.lung_contrast * aeration
    image += a.bone_density * (0.075 * ribs + bone)
    image += soft_tissue_extras(cv, a)
    image += paint.overlay
    image += (0.02 * noise) * noise_mottle
    # Vessels: visible in aerated lung only, thinning out from the hila to the periphery.
    vessel_weight = (0.03 * a.texture * paint.marking_gain) * aeration * paint.markings
    vessel_weight *= ramp(1.2 - ax * (1.0 / 0.45))

    image = detector.upsample(image)
    image += detector.upsample(vessel_weight) * detector.crop(detector.vessels, rng)
    if paint.devices is not None:
        image += paint.devices
    # Exposure: window/level and a film-like tone curve, then quantum noise on the detector.
    image = (image - 0.4) * a.gain + (0.4 + a.offset)
    image += a.tone * image * (1.0 - image)
    image += (0.03 * noise) * detector.crop(detector.quantum, rng)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_lateral(
    detector: Detector, anatomy: Anatomy, rng: np.random.Generator, *, noise: float
) -> np.ndarray:
    """Renders a lateral view (anterior to the image left), uint8[H, W].

    Lateral rows are filtered out by the builder (frontal views only), so this only has to
    look like a lateral chest film: no finding is drawn on it.
    """
    cv = Canvas(detector, anatomy)
    x, y = cv.xp, cv.yp
    body = ramp((0.42 - np.abs(x + 0.02)) * 30.0) * ramp((y - 0.05) * 10.0)
    lung = ramp((1.0 - ((x + 0.02) / 0.31) ** 2 - ((y - 0.55) / 0.4) ** 2) * 6.0)
    lung *= ramp((anatomy.diaphragm_right + 0.05 - y + 0.3 * x) * 60.0)
    heart = ramp((1.0 - ((x + 0.14) / 0.15) ** 2 - ((y - 0.72) / 0.14) ** 2) * 6.0)
    spine = ramp((0.05 - np.abs(x - 0.3)) * 60.0) * (0.75 + 0.25 * np.cos(y * 2 * np.pi / 0.05))
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
