"""Procedural phantoms that stand in for the real images.

Three families, each drawn from a seeded :class:`numpy.random.Generator`:

- :func:`chest_radiograph` - a frontal chest radiograph: torso, lung fields,
  ribs, clavicles, spine and heart, with optional findings (focal lobar
  consolidation, diffuse interstitial pattern, peripheral ground glass) whose
  bounding boxes are returned as labels.
- :func:`brain_mri` - an axial contrast-enhanced T1 slice with a tumour at a
  class-typical site (meningioma: extra-axial at the convexity; glioma:
  intra-axial, ring-enhancing with oedema; pituitary: midline at the sella), its
  mask and its border polygon.
- :func:`fundus` - a colour fundus photograph with vessels, optic disc and
  macula, and lesions that depend on the RFMiD labels drawn.

The *difficulty* knob (0..1) sets how hard the class signal is to learn:
lesion contrast scales with ``1 - 0.8 * difficulty`` and the anatomical
variability and noise grow with it.  At 0 the findings are obvious; at 1 they
are faint and buried in patient-to-patient variation.  The default config uses
0.5, which a small CNN learns well above chance but not perfectly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

CHEST_FINDINGS = ("none", "lobar", "interstitial", "peripheral", "abnormal")
BRAIN_CLASSES = ("meningioma", "glioma", "pituitary")


def _contrast(difficulty: float) -> float:
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be within [0, 1], got {difficulty}")
    return 1.0 - 0.8 * difficulty


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy / max(h - 1, 1), xx / max(w - 1, 1)


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    s = n.std()
    return n / s if s > 0 else n


# --------------------------------------------------------------------------- chest
@dataclass
class ChestImage:
    image: np.ndarray  # uint8 (H, W)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # x, y, w, h
    lung_mask: np.ndarray | None = None  # bool (H, W)


def chest_radiograph(
    rng: np.random.Generator,
    height: int,
    width: int,
    finding: str = "none",
    difficulty: float = 0.5,
    n_opacities: int | None = None,
) -> ChestImage:
    """Draw one frontal chest radiograph of ``height`` x ``width`` pixels.

    ``finding`` is one of :data:`CHEST_FINDINGS`.  ``lobar`` draws
    ``n_opacities`` (1-4, random if None) focal consolidations and returns one
    box per consolidation (x, y, w, h in pixels, RSNA convention).
    ``interstitial`` (viral) and ``peripheral`` (COVID-19) draw diffuse patterns
    without boxes; ``abnormal`` draws cardiomegaly and a line/tube, no opacity.
    """
    if finding not in CHEST_FINDINGS:
        raise ValueError(f"finding must be one of {CHEST_FINDINGS}, got {finding!r}")
    c = _contrast(difficulty)
    var = 0.03 + 0.05 * difficulty
    yy, xx = _grid(height, width)
    j = lambda s=1.0: rng.normal(0, var * s)  # noqa: E731 - tiny jitter helper

    img = np.full((height, width), 0.04, np.float32)
    torso = _ellipse(yy, xx, 0.58 + j(), 0.5 + j(0.3), 0.55 + j(), 0.47 + j())
    img += 0.42 * (torso < 1)

    heart_scale = 1.35 if finding == "abnormal" else 1.0
    lungs = np.zeros_like(img, dtype=bool)
    for side, cx in ((-1, 0.31), (1, 0.69)):
        e = _ellipse(yy, xx, 0.47 + j(), cx + j(0.5), 0.3 + j(), 0.14 + j(0.5))
        lung = e < 1
        lung &= yy > 0.14 + 0.04 * np.abs(xx - cx) * 4  # apices
        lungs |= lung
    heart = _ellipse(yy, xx, 0.63 + j(), 0.55 + j(0.5), 0.14 * heart_scale, 0.14 * heart_scale) < 1
    img -= 0.28 * lungs
    img += 0.22 * heart * (0.7 + 0.3 * lungs)

    # ribs: curved periodic bands across the thorax
    curv = 0.9 + j(3)
    phase = (yy + curv * (xx - 0.5) ** 2) / (0.075 + j(0.2))
    ribs = np.clip(np.sin(2 * np.pi * phase), 0.55, 1.0) - 0.55
    img += 0.35 * ribs * (torso < 0.85) * (yy > 0.12) * (yy < 0.85)
    # clavicles and spine
    for s in (-1, 1):
        clav = np.abs((yy - 0.14) - 0.18 * s * (xx - 0.5)) < 0.018
        img += 0.25 * clav * (np.abs(xx - 0.5) > 0.05) * (np.abs(xx - 0.5) < 0.32)
    img += 0.22 * (np.abs(xx - 0.5 - j(0.2)) < 0.035) * (torso < 1)

    boxes: list[tuple[float, float, float, float]] = []
    lung_ys, lung_xs = np.nonzero(lungs)
    if finding == "lobar" and lung_ys.size:
        k = n_opacities if n_opacities is not None else int(rng.choice([1, 2, 2, 3], p=[0.44, 0.5, 0.04, 0.02]))
        sides = rng.permutation([0, 1]).tolist() * 2
        for i in range(k):
            side_mask = (lung_xs < width / 2) if sides[i] == 0 else (lung_xs >= width / 2)
            idx = np.flatnonzero(side_mask) if side_mask.any() else np.arange(lung_ys.size)
            p = idx[rng.integers(idx.size)]
            cy, cx = lung_ys[p] / height, lung_xs[p] / width
            ry, rx = rng.uniform(0.09, 0.2), rng.uniform(0.06, 0.12)
            blob = np.exp(-0.5 * _ellipse(yy, xx, cy, cx, ry, rx) * 2.5)
            blob *= 0.75 + 0.25 * _smooth_noise(rng, blob.shape, max(height, width) / 120)
            img += c * 0.5 * blob * (0.6 + 0.4 * lungs)
            ys, xs = np.nonzero(blob > 0.35)
            if ys.size:
                x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                boxes.append((float(x0), float(y0), float(x1 - x0), float(y1 - y0)))
    elif finding == "interstitial":
        tex = _smooth_noise(rng, img.shape, max(height, width) / 250)
        hilar = np.exp(-0.5 * (((xx - 0.5) / 0.22) ** 2 + ((yy - 0.48) / 0.25) ** 2))
        img += c * lungs * (0.14 * np.abs(tex) + 0.15 * hilar)
    elif finding == "peripheral":
        for cx in (0.2, 0.8):
            blob = np.exp(-0.5 * _ellipse(yy, xx, 0.6 + j(), cx + j(0.5), 0.16, 0.07) * 2)
            img += c * 0.2 * blob * lungs
        img += c * 0.05 * np.abs(_smooth_noise(rng, img.shape, max(height, width) / 150)) * lungs
    elif finding == "abnormal":
        tube = np.abs(xx - 0.46 - 0.1 * (yy - 0.1)) < 0.004
        img += 0.5 * tube * (yy < 0.55)

    img += var * _smooth_noise(rng, img.shape, max(height, width) / 60)
    img = ndimage.gaussian_filter(img, max(height, width) / 700)
    img += rng.normal(0, 0.012 + 0.02 * difficulty, img.shape).astype(np.float32)
    gamma = np.exp(rng.normal(0, 0.08 + 0.1 * difficulty))
    img = np.clip(img, 0, 1) ** gamma
    gain = rng.uniform(0.85, 1.05)
    out = np.clip(img * gain * 255 + 0.5, 0, 255).astype(np.uint8)
    return ChestImage(out, boxes, lungs)


# --------------------------------------------------------------------------- brain
@dataclass
class BrainSlice:
    image: np.ndarray  # int16 (H, W)
    mask: np.ndarray  # uint8 (H, W), 0/1
    border: np.ndarray  # float (M, 2) of (x, y) pixel coordinates along the tumour outline


def _star_shape(rng, n_harmonics=3, irregularity=0.15):
    amps = rng.uniform(0, irregularity, n_harmonics) / np.arange(1, n_harmonics + 1)
    phases = rng.uniform(0, 2 * np.pi, n_harmonics)
    return lambda theta: 1 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(zip(amps, phases)))


def brain_mri(rng: np.random.Generator, size: int, tumour: str, difficulty: float = 0.5,
              patient_rng: np.random.Generator | None = None) -> BrainSlice:
    """Draw one axial T1 post-contrast slice of ``size`` x ``size`` with a tumour.

    ``tumour`` is one of :data:`BRAIN_CLASSES`; the site, shape and enhancement
    pattern depend on it (see the module docstring).  ``patient_rng``, a generator seeded by
    patient and drawn afresh for each of its slices, makes the slices of one patient share what
    neighbouring slices of one scan share: the head's outline, the cortex, the tumour's site and
    shape (its cross-section varies, 75-100 %) and the scanner's intensity scale; without it every
    slice is a new patient.
    """
    if tumour not in BRAIN_CLASSES:
        raise ValueError(f"tumour must be one of {BRAIN_CLASSES}, got {tumour!r}")
    a = patient_rng if patient_rng is not None else rng  # what the patient's slices share
    c = _contrast(difficulty)
    var = 0.02 + 0.05 * difficulty
    yy, xx = _grid(size, size)
    cy, cx = 0.5 + a.normal(0, var), 0.5 + a.normal(0, var)
    ry, rx = 0.43 + a.normal(0, var), 0.36 + a.normal(0, var)
    head = _ellipse(yy, xx, cy, cx, ry, rx)
    img = np.zeros((size, size), np.float32)
    img += 0.75 * (head < 1) * (head > 0.86)  # scalp fat
    brain = head < 0.78
    gyri = _smooth_noise(a, img.shape, size / 90)
    img += brain * (0.42 + 0.05 * gyri)
    for s in (-1, 1):  # lateral ventricles
        v = _ellipse(yy, xx, cy - 0.02, cx + s * 0.045, 0.11, 0.03) < 1
        img -= 0.3 * v
    img -= 0.15 * (np.abs(xx - cx) < 0.004) * brain  # falx

    rshape = _star_shape(a, irregularity=0.1 if tumour != "glioma" else 0.3)
    if tumour == "meningioma":
        ang = a.uniform(0, 2 * np.pi)
        r = a.uniform(0.035, 0.09)
        ty = cy + (ry * 0.74 - r) * np.sin(ang)
        tx = cx + (rx * 0.74 - r) * np.cos(ang)
    elif tumour == "glioma":
        r = a.uniform(0.05, 0.11)
        ang = a.uniform(0, 2 * np.pi)
        d = a.uniform(0.1, 0.22)
        ty, tx = cy + d * np.sin(ang), cx + d * np.cos(ang) * 0.9
    else:
        r = a.uniform(0.02, 0.045)
        ty, tx = cy + ry * a.uniform(0.2, 0.35), cx + a.normal(0, 0.01)
    if patient_rng is not None:
        r *= rng.uniform(0.75, 1.0)  # this slice's cross-section of the patient's tumour
    ty += rng.normal(0, 0.08 * difficulty)
    tx += rng.normal(0, 0.08 * difficulty)

    theta = np.arctan2(yy - ty, xx - tx)
    rad = np.hypot(yy - ty, xx - tx) / (r * rshape(theta))
    mask = (rad < 1) & (head < 0.95)
    if tumour == "glioma":
        oedema = (rad < 1.8) & brain & ~mask
        img -= c * 0.12 * oedema
        ring = np.clip(1 - np.abs(rad - 0.8) / 0.25, 0, 1)
        img += c * (0.45 * ring - 0.2 * (rad < 0.55)) * mask
    elif tumour == "meningioma":
        img += c * 0.45 * mask
    else:
        img += c * 0.4 * mask
    img = ndimage.gaussian_filter(img, size / 400)
    img += rng.normal(0, 0.015 + 0.03 * difficulty, img.shape).astype(np.float32)
    img = np.abs(img)  # magnitude images are non-negative (Rician-like floor)
    out = np.clip(img * a.uniform(700, 1100), 0, 32767).astype(np.int16)

    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    rr = r * rshape(t)
    border = np.stack([(tx + rr * np.cos(t)) * (size - 1), (ty + rr * np.sin(t)) * (size - 1)], axis=1)
    if not mask.any():  # never return an empty mask: put one pixel at the centre
        mask[int(np.clip(ty * (size - 1), 0, size - 1)), int(np.clip(tx * (size - 1), 0, size - 1))] = True
    return BrainSlice(out, mask.astype(np.uint8), border)


# --------------------------------------------------------------------------- fundus
RFMID_LESION_LABELS = ("DR", "ARMD", "MH", "DN", "MYA", "BRVO", "TSLN", "ODC", "ODE", "LS", "CRVO")


def _draw_curve(canvas, pts, weight=1.0):
    h, w = canvas.shape
    ys = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    xs = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    np.maximum.at(canvas, (ys, xs), weight)


def fundus(rng: np.random.Generator, height: int, width: int, labels=(), difficulty: float = 0.5) -> np.ndarray:
    """Draw one colour fundus photograph (uint8 RGB) showing ``labels``.

    Labels with a dedicated appearance: DR (microaneurysms, blot haemorrhages,
    hard exudates), ARMD and DN (drusen), MH (media haze: global blur and veil),
    MYA and TSLN (tessellated choroid, peripapillary atrophy), ODC (enlarged
    cup), ODE (swollen, blurred disc), BRVO/CRVO (flame haemorrhages along the
    veins), LS (laser scars).  Any other label draws a few nonspecific spots.
    """
    c = _contrast(difficulty)
    labels = set(labels)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = float(height)
    cy, cx = height / 2 + rng.normal(0, 0.01) * scale, width / 2 + rng.normal(0, 0.01) * scale
    rad = np.hypot(yy - cy, xx - cx) / (0.47 * scale)
    fov = rad < 1
    eye = rng.choice([-1, 1])  # which side the disc sits on
    dy, dx = cy + rng.normal(0, 0.02) * scale, cx + eye * 0.2 * scale
    my, mx = cy + rng.normal(0, 0.01) * scale, cx - eye * 0.12 * scale
    disc_r = 0.075 * scale * rng.uniform(0.9, 1.1)

    base = np.array([0.78, 0.33, 0.12]) * rng.uniform(0.85, 1.1, 3)
    vign = np.clip(1 - 0.45 * rad**2, 0, 1)
    tex = _smooth_noise(rng, (height, width), scale / 80)
    rgb = base[None, None, :] * (vign * (1 + 0.04 * tex))[..., None]
    mac = np.exp(-0.5 * (np.hypot(yy - my, xx - mx) / (0.06 * scale)) ** 2)
    rgb *= (1 - 0.35 * mac)[..., None]

    if labels & {"MYA", "TSLN"}:
        stripes = np.abs(_smooth_noise(rng, (height, width), scale / 150))
        rgb *= (1 - c * 0.25 * (stripes > 1.0))[..., None]
    # vessels: arcades leaving the disc, drawn as points along curves, then blurred
    vessels = np.zeros((height, width), np.float32)
    for k in range(10):
        ang0 = rng.uniform(0, 2 * np.pi) if k >= 4 else (np.pi / 2 * (1 if k % 2 else -1) + (0 if k < 2 else 0.5))
        t = np.linspace(0, 1, int(scale))
        bend = rng.normal(0, 1.2)
        ang = ang0 + bend * t
        if k < 4:  # temporal arcades curve towards the macula
            ang = ang0 * (1 - 0.6 * t) + (np.pi if eye > 0 else 0.0) * 0.6 * t
        step = (0.55 if k < 4 else 0.3) * scale / t.size
        pts = np.stack([dx + np.cumsum(np.cos(ang) * step), dy + np.cumsum(np.sin(ang) * step)], axis=1)
        _draw_curve(vessels, pts, 1.0 if k < 4 else 0.7)
    vessels = ndimage.gaussian_filter(vessels, scale / 350)
    vessels = np.clip(vessels / (vessels.max() + 1e-6) * 2.2, 0, 1)
    rgb *= (1 - vessels[..., None] * np.array([0.35, 0.65, 0.6]))

    dr = np.hypot(yy - dy, xx - dx) / disc_r
    disc = np.exp(-0.5 * dr**4)
    cup_ratio = 0.35 + (0.4 * c if "ODC" in labels else 0.0)
    cup = np.exp(-0.5 * (dr / cup_ratio) ** 4)
    if "ODE" in labels:
        disc = ndimage.gaussian_filter(disc, disc_r * 0.35 * c + 1)
    rgb = rgb * (1 - disc[..., None]) + disc[..., None] * np.array([0.98, 0.78, 0.5])
    rgb = rgb * (1 - 0.6 * cup[..., None]) + 0.6 * cup[..., None] * np.array([1.0, 0.95, 0.8])
    if "MYA" in labels:
        crescent = (dr > 1) & (dr < 1.6) & ((xx - dx) * eye < 0)
        rgb[crescent] = rgb[crescent] * (1 - 0.5 * c) + 0.5 * c * np.array([0.95, 0.8, 0.6])

    def spots(n, radius, color, near=None, spread=0.25):
        layer = np.zeros((height, width), np.float32)
        for _ in range(n):
            if near is None:
                a, rr = rng.uniform(0, 2 * np.pi), 0.42 * scale * np.sqrt(rng.uniform())
                py, px = cy + rr * np.sin(a), cx + rr * np.cos(a)
            else:
                py, px = near[0] + rng.normal(0, spread * scale), near[1] + rng.normal(0, spread * scale)
            rad_ = radius * scale * rng.uniform(0.6, 1.4)
            y0, y1 = int(max(py - 3 * rad_, 0)), int(min(py + 3 * rad_ + 1, height))
            x0, x1 = int(max(px - 3 * rad_, 0)), int(min(px + 3 * rad_ + 1, width))
            if y0 >= y1 or x0 >= x1:
                continue
            d = np.hypot(yy[y0:y1, x0:x1] - py, xx[y0:y1, x0:x1] - px) / rad_
            layer[y0:y1, x0:x1] = np.maximum(layer[y0:y1, x0:x1], np.exp(-0.5 * d**2))
        a = c * layer[..., None]
        return rgb * (1 - a) + a * np.array(color)

    if "DR" in labels:
        rgb = spots(rng.integers(8, 20), 0.006, [0.45, 0.05, 0.03], near=(my, mx), spread=0.18)
        rgb = spots(rng.integers(3, 8), 0.015, [0.5, 0.08, 0.05])
        rgb = spots(rng.integers(5, 15), 0.006, [0.95, 0.9, 0.35], near=(my, mx), spread=0.1)
    if labels & {"ARMD", "DN"}:
        rgb = spots(rng.integers(10, 25), 0.008, [0.92, 0.82, 0.4], near=(my, mx), spread=0.06)
    if labels & {"BRVO", "CRVO"}:
        near = (dy, dx) if "CRVO" in labels else (dy - 0.15 * scale, dx - eye * 0.15 * scale)
        rgb = spots(rng.integers(12, 30), 0.012, [0.55, 0.06, 0.04], near=near, spread=0.12)
    if "LS" in labels:
        rgb = spots(rng.integers(15, 40), 0.01, [0.85, 0.8, 0.6])
    other = labels - set(RFMID_LESION_LABELS) - {"Disease_Risk"}
    if other:
        rgb = spots(rng.integers(2, 6) * len(other), 0.012, [0.9, 0.6, 0.3])
    if "MH" in labels:
        rgb = ndimage.gaussian_filter(rgb, (scale / 120 * c + 0.5, scale / 120 * c + 0.5, 0))
        rgb = rgb * (1 - 0.35 * c) + 0.35 * c * np.array([0.6, 0.45, 0.35])

    rgb += rng.normal(0, 0.01 + 0.015 * difficulty, rgb.shape)
    rgb *= fov[..., None]
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
