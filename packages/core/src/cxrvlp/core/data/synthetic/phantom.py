"""Procedural chest-radiograph phantoms with findings a small model can learn, each with its mask.

The phantom is drawn in normalised coordinates (x, y in [0, 1], x to the image's right, y down) on a grid
that is first posed (small rotation, scale and shift per image), so anatomy and findings move together.
Sides follow radiological convention for frontal views: the patient's *right* is on the image's *left*.
Intensities are an additive "density" map (air 0, soft tissue ~0.45, lung ~0.15, bone / fluid bright)
blurred and noised at the end; the result is float32 (H, W) in [0, 1] like every reader's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FINDINGS: tuple[str, ...] = (
    "pleural_effusion",
    "pneumothorax",
    "cardiomegaly",
    "consolidation",
    "pneumonia",
    "nodule",
    "mass",
    "edema",
    "atelectasis",
    "support_devices",
)
"""The finding names `render_phantom` understands (keys of its `findings` argument and of its masks)."""

SIDES = ("right", "left", "bilateral")
SEVERITIES = ("small", "moderate", "large")
ZONES = ("upper", "middle", "lower")

WORK_SIZE = 128
"""Phantoms are drawn at most at this resolution and resized up (speed: a few ms per 256-px image)."""

FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LATERAL", "LL", "L")


@dataclass
class _Anatomy:
    """Per-image anatomy parameters (normalised units), drawn once per phantom."""

    lung_cx: dict[str, float]  # side -> lung centre x
    lung_a: float  # lung half-width at its base
    lung_top: float
    dia_level: dict[str, float]  # side -> costophrenic-angle level (y of the lung base laterally)
    dome: float  # height of the diaphragmatic dome
    heart_cx: float
    heart_cy: float
    heart_a: float  # heart half-width
    heart_b: float  # heart half-height
    mediastinum_x: float
    body_a: float


def _side_sign(side: str) -> int:
    """Image-x direction of a patient side in a frontal view: patient right is image left (-1)."""
    return -1 if side == "right" else 1


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


def _severity(params: dict, default: str = "moderate") -> float:
    """Map a severity word (or a float in [0, 1]) to a scale in [0, 1]."""
    sev = params.get("severity", default)
    if isinstance(sev, (int, float)):
        return float(np.clip(sev, 0.0, 1.0))
    return {"mild": 0.0, "small": 0.0, "moderate": 0.5, "large": 1.0, "severe": 1.0}.get(str(sev), 0.5)


def _sample_anatomy(rng: np.random.Generator, findings: dict[str, dict]) -> _Anatomy:
    spread = rng.uniform(0.17, 0.2)
    base = rng.uniform(0.7, 0.75)
    anat = _Anatomy(
        lung_cx={"right": 0.5 - spread, "left": 0.5 + spread},
        lung_a=rng.uniform(0.13, 0.15),
        lung_top=rng.uniform(0.12, 0.16),
        # the right hemidiaphragm usually sits a little higher than the left
        dia_level={"right": base - rng.uniform(0.01, 0.03), "left": base},
        dome=rng.uniform(0.05, 0.08),
        heart_cx=0.5 + rng.uniform(0.03, 0.05),
        heart_cy=base - rng.uniform(0.1, 0.13),
        heart_a=rng.uniform(0.11, 0.13),
        heart_b=rng.uniform(0.1, 0.12),
        mediastinum_x=0.5,
        body_a=rng.uniform(0.4, 0.44),
    )
    if "cardiomegaly" in findings:
        s = _severity(findings["cardiomegaly"])
        anat.heart_a *= 1.4 + 0.25 * s  # cardiothoracic ratio well above 0.5
        anat.heart_b *= 1.12 + 0.08 * s
        anat.heart_cy -= 0.01
    if "atelectasis" in findings:
        # volume loss: the hemidiaphragm rises and the mediastinum shifts toward the collapsed side
        for side in _sides(findings["atelectasis"].get("side", "right")):
            anat.dia_level[side] -= 0.035
            if findings["atelectasis"].get("side") != "bilateral":
                anat.mediastinum_x += 0.015 * _side_sign(side)
                anat.heart_cx += 0.015 * _side_sign(side)
    return anat


def _posed_grid(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (x, y) grids after a small random rotation, scale and shift (slight pose variation)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    ang = np.deg2rad(rng.uniform(-4, 4))
    scale = rng.uniform(0.94, 1.06)
    dx, dy = rng.uniform(-0.025, 0.025, size=2)
    cos, sin = np.cos(ang), np.sin(ang)
    x = (cos * xx + sin * yy) / scale + 0.5 + dx
    y = (-sin * xx + cos * yy) / scale + 0.5 + dy
    return x.astype(np.float32), y.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_frac: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (texture for lung markings and patchy opacities)."""
    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), max(0.5, sigma_frac * size))
    return (n - n.mean()) / (n.std() + 1e-6)


def _lung_region(x: np.ndarray, y: np.ndarray, anat: _Anatomy, side: str, shrink: float = 0.0) -> np.ndarray:
    """Boolean lung field of one side; `shrink` > 0 collapses it toward its base-medial corner."""
    cx, a, top, base = anat.lung_cx[side], anat.lung_a, anat.lung_top, anat.dia_level[side]
    if shrink > 0:
        # scale about a point at the hilum-base so the gap opens at the apex and the lateral wall
        px, py = cx - 0.5 * a * _side_sign(side), base
        x = px + (x - px) / (1 - shrink)
        y = py + (y - py) / (1 - shrink * 0.8)
    v = (y - top) / (base - top)
    vc = np.clip(v, 0, 1)
    half = a * np.sqrt(np.clip(vc / 0.3, 0, 1)) * (0.85 + 0.15 * vc)  # rounded apex, widest at the base
    dome = base - anat.dome * np.clip(1 - ((x - cx) / a) ** 2, 0, 1)
    return (v > 0) & (np.abs(x - cx) < half) & (y < dome)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2


def _zone_center(anat: _Anatomy, side: str, zone: str, rng: np.random.Generator) -> tuple[float, float]:
    top, base = anat.lung_top, anat.dia_level[side]
    frac = {"upper": 0.22, "middle": 0.5, "lower": 0.75}[zone] + rng.uniform(-0.05, 0.05)
    cy = top + frac * (base - top)
    lateral = rng.uniform(0.0, 0.45) * anat.lung_a
    return anat.lung_cx[side] + _side_sign(side) * lateral, cy


def render_phantom(
    findings: dict[str, dict] | None,
    rng: np.random.Generator,
    size: int = 256,
    view: str = "PA",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw one radiograph-like phantom with the given findings.

    findings: {name: params} with names from `FINDINGS`; params (all optional): "side" ("right" | "left" |
    "bilateral"), "severity" ("small" | "moderate" | "large" or a float in [0, 1]), "zone" ("upper" |
    "middle" | "lower"). view: "PA" / "AP" (frontal) or "LATERAL" / "LL" / "L".
    Returns (image float32 (size, size) in [0, 1], {name: uint8 (size, size) mask, 1 inside}) with one mask
    per requested finding (all zeros where a finding is not visible in this view, e.g. a pneumothorax on
    a lateral view).
    """
    findings = dict(findings or {})
    unknown = set(findings) - set(FINDINGS)
    if unknown:
        raise KeyError(f"render_phantom: unknown finding(s) {sorted(unknown)}; known: {FINDINGS}")
    work = min(size, WORK_SIZE)
    if view.upper() in LATERAL_VIEWS:
        dens, masks = _render_lateral(findings, rng, work)
    else:
        dens, masks = _render_frontal(findings, rng, work, ap=view.upper() == "AP")
    return _finish(dens, masks, rng, size)


def _render_frontal(
    findings: dict[str, dict], rng: np.random.Generator, size: int, ap: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Density map and boolean masks of a frontal view at size x size."""
    anat = _sample_anatomy(rng, findings)
    if ap:  # AP films magnify the heart a little and are often rotated more
        anat.heart_a *= 1.08
    x, y = _posed_grid(rng, size)
    masks: dict[str, np.ndarray] = {}

    body = _ellipse(x, y, 0.5, 0.62, anat.body_a, 0.62) < 1
    lungs = {s: _lung_region(x, y, anat, s) for s in ("right", "left")}
    heart = _ellipse(x, y, anat.heart_cx, anat.heart_cy, anat.heart_a, anat.heart_b) < 1
    mediastinum = (
        (np.abs(x - anat.mediastinum_x) < 0.055 + 0.02 * (y > 0.35)) & (y < anat.heart_cy) & (y > 0.02)
    )
    spine = (np.abs(x - anat.mediastinum_x) < 0.03) & body
    below_dia = y > np.minimum(anat.dia_level["right"], anat.dia_level["left"]) - anat.dome * 0.5
    any_lung = (lungs["right"] | lungs["left"]) & ~heart & ~mediastinum

    dens = np.zeros((size, size), np.float32)
    dens += 0.45 * body
    dens += 0.08 * (body & below_dia & ~any_lung)  # abdomen below the diaphragm
    dens -= 0.3 * any_lung
    dens += 0.25 * heart + 0.2 * (mediastinum & ~heart)
    dens += 0.08 * spine

    # ribs: posterior arcs over each lung (one periodic band pattern per side), plus clavicles
    ribs = np.zeros_like(dens)
    n_ribs = 9
    for side in ("right", "left"):
        sgn = _side_sign(side)
        spacing = (anat.dia_level[side] - anat.lung_top) / n_ribs
        u = np.clip((x - anat.mediastinum_x) * sgn, 0, None)  # distance from the spine toward the wall
        arc = -0.06 * u + 0.25 * np.clip(u - 0.1, 0, None) ** 2
        t = (y - arc - anat.lung_top - 0.02) / spacing
        band = (np.abs(t - np.round(t)) * spacing < 0.011) & (t > -0.5) & (t < n_ribs - 0.5) & (u > 0.02)
        band &= np.abs(x - anat.lung_cx[side]) < anat.lung_a * 1.25
        clav = (np.abs(y - (0.11 + 0.12 * u)) < 0.012) & (u < 0.3) & (u > 0.04)
        ribs += 0.07 * band + 0.08 * clav
    dens += ribs * body

    # lung markings: branching-vessel-like texture, denser toward the hila
    hilum_dist = np.minimum(
        np.hypot(x - anat.lung_cx["right"] - 0.07, y - 0.45),
        np.hypot(x - anat.lung_cx["left"] + 0.07, y - 0.45),
    )
    vessels = np.abs(_smooth_noise(rng, size, 0.012))
    marking = 0.05 * np.clip(1.2 - vessels, 0, None) * np.exp(-hilum_dist / 0.18)
    ptx_region = np.zeros((size, size), bool)

    # --- findings -------------------------------------------------------------------------------------
    if "pneumothorax" in findings:
        p = findings["pneumothorax"]
        shrink = 0.14 + 0.22 * _severity(p)
        m = np.zeros((size, size), bool)
        for side in _sides(p.get("side", "right")):
            collapsed = _lung_region(x, y, anat, side, shrink=shrink)
            region = lungs[side] & ~collapsed & ~heart & ~mediastinum
            m |= region
            # visible visceral pleural line at the edge of the collapsed lung
            edge = cv2.morphologyEx(collapsed.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8))
            dens += 0.22 * (edge.astype(bool) & lungs[side])
        dens -= 0.13 * m  # hyperlucent: no lung markings, darker than lung
        ptx_region |= m
        masks["pneumothorax"] = m
    dens += marking * (any_lung & ~ptx_region)

    if "pleural_effusion" in findings:
        p = findings["pleural_effusion"]
        frac = 0.22 + 0.25 * _severity(p)
        m = np.zeros((size, size), bool)
        for side in _sides(p.get("side", "right")):
            top, base = anat.lung_top, anat.dia_level[side]
            level = base - frac * (base - top)
            # meniscus: the fluid climbs the lateral chest wall, so the costophrenic angle is blunted
            lat = np.clip((x - anat.lung_cx[side]) * _side_sign(side) / anat.lung_a, -1, 1)
            meniscus = level - 0.07 * (lat + 1) / 2
            m |= lungs[side] & (y > meniscus) & ~heart
        # fluid has soft-tissue density: it cancels the lung's lucency, densest at the base
        grad = np.clip((y - y[m].min()) / 0.05, 0, 1) if m.any() else 0
        dens += (0.26 + 0.06 * grad) * m
        masks["pleural_effusion"] = m

    if "cardiomegaly" in findings:
        masks["cardiomegaly"] = heart.copy()

    if "consolidation" in findings:
        # lobar consolidation: dense, homogeneous, one edge sharp along a fissure, air bronchograms inside
        p = findings["consolidation"]
        m = np.zeros((size, size), bool)
        for side in _sides(p.get("side", "right")):
            cx, cy = _zone_center(anat, side, p.get("zone", "lower"), rng)
            r = 0.08 + 0.04 * _severity(p)
            lobe = _ellipse(x, y, cx, cy, r * 1.4, r) < 1
            fissure = cy - r * rng.uniform(0.2, 0.5)  # the sharp, straight (fissural) upper border
            m |= lobe & (y > fissure + 0.15 * (x - cx)) & lungs[side]
        bronchi = np.abs(_smooth_noise(rng, size, 0.01)) < 0.12  # thin lucent branching lines
        dens += (0.4 - 0.12 * bronchi) * m
        masks["consolidation"] = m

    if "pneumonia" in findings:
        # bronchopneumonia: patchy, ill-defined, multifocal airspace opacity
        p = findings["pneumonia"]
        field = np.zeros((size, size), np.float32)
        for side in _sides(p.get("side", "right")):
            cx, cy = _zone_center(anat, side, p.get("zone", "lower"), rng)
            r = 0.07 + 0.04 * _severity(p)
            blob = np.exp(-_ellipse(x, y, cx, cy, r * 1.2, r))
            for _ in range(3):  # satellite lobules make the opacity patchy
                ox, oy = rng.uniform(-r, r, size=2)
                blob = np.maximum(blob, 0.8 * np.exp(-_ellipse(x, y, cx + ox, cy + oy, r * 0.6, r * 0.6)))
            field = np.maximum(field, blob)
        patch = field + 0.18 * _smooth_noise(rng, size, 0.015)
        m = (patch > 0.45) & (field > 0.3) & (lungs["right"] | lungs["left"])  # no far-off specks
        dens += 0.36 * m * np.clip(patch, 0, 1.2)
        masks["pneumonia"] = m

    for name, (rlo, rhi) in (("nodule", (0.034, 0.045)), ("mass", (0.065, 0.09))):
        if name in findings:
            p = findings[name]
            side = p.get("side", "right") if p.get("side") != "bilateral" else "right"
            cx, cy = _zone_center(anat, side, p.get("zone", "upper"), rng)
            r = rng.uniform(rlo, rhi)
            d = _ellipse(x, y, cx, cy, r, r * rng.uniform(0.85, 1.15))
            m = d < 1
            dens += 0.45 * np.clip(1.3 - d, 0, 1) * body
            masks[name] = m

    if "edema" in findings:
        p = findings["edema"]
        s = _severity(p)
        haze = np.zeros((size, size), np.float32)
        for side in ("right", "left"):
            hx = anat.lung_cx[side] - _side_sign(side) * 0.06
            haze = np.maximum(haze, np.exp(-_ellipse(x, y, hx, 0.46, 0.12 + 0.03 * s, 0.16 + 0.03 * s)))
        lung_now = lungs["right"] | lungs["left"]
        dens += (0.22 + 0.08 * s) * haze * lung_now  # bilateral perihilar "bat-wing" haze
        # interstitial lines (Kerley-B like) at the lung bases
        kb = (np.abs(np.sin(y * size * 0.9)) > 0.97) & (y > 0.55) & lung_now
        dens += 0.06 * kb
        masks["edema"] = (haze > 0.35) & lung_now

    if "atelectasis" in findings:
        p = findings["atelectasis"]
        m = np.zeros((size, size), bool)
        for side in _sides(p.get("side", "right")):
            cx = anat.lung_cx[side]
            cy = anat.dia_level[side] - rng.uniform(0.07, 0.12)
            ang = rng.uniform(-0.3, 0.3)
            dist = np.abs((y - cy) * np.cos(ang) - (x - cx) * np.sin(ang))
            half = 0.018 + 0.014 * _severity(p)
            band = (dist < half) & (np.abs(x - cx) < anat.lung_a * 0.9) & lungs[side]
            m |= band
        dens += 0.4 * m
        masks["atelectasis"] = m

    if "support_devices" in findings:
        # endotracheal / enteric tube down the midline, plus a right-sided central line
        tube = (np.abs(x - anat.mediastinum_x - 0.005) < 0.006) & (y > 0.0) & (y < 0.34)
        cvc_x = anat.mediastinum_x - 0.2 + 0.17 * np.clip((y - 0.12) / 0.25, 0, 1)
        cvc = (np.abs(x - cvc_x) < 0.005) & (y > 0.12) & (y < 0.42)
        m = tube | cvc
        dens += 0.35 * m
        masks["support_devices"] = m

    return dens, masks


def _render_lateral(
    findings: dict[str, dict], rng: np.random.Generator, size: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A simple lateral view: anterior to the image's left, spine on the right, one overlapping lung field."""
    x, y = _posed_grid(rng, size)
    base = rng.uniform(0.72, 0.77)
    body = _ellipse(x, y, 0.5, 0.6, 0.36, 0.62) < 1
    lung = (_ellipse(x, y, 0.52, base - 0.3, 0.25, 0.33) < 1) & (y < base - 0.08 * (x < 0.45))
    heart_scale = 1.3 if "cardiomegaly" in findings else 1.0
    heart = _ellipse(x, y, 0.38, base - 0.13, 0.12 * heart_scale, 0.12 * heart_scale) < 1
    spine = (np.abs(x - 0.78) < 0.045) & body
    dens = 0.45 * body - 0.28 * (lung & ~heart) + 0.25 * heart + 0.15 * spine
    dens += 0.04 * np.abs(_smooth_noise(rng, size, 0.02)) * lung
    masks: dict[str, np.ndarray] = {}
    empty = np.zeros((size, size), bool)
    for name in findings:
        masks[name] = empty
    if "pleural_effusion" in findings:
        # fluid first fills the posterior costophrenic sulcus
        sev = _severity(findings["pleural_effusion"])
        m = lung & (y > base - 0.08 - 0.12 * sev) & (x > 0.45)
        dens += 0.32 * m
        masks["pleural_effusion"] = m
    if "cardiomegaly" in findings:
        masks["cardiomegaly"] = heart
    for name, r in (("consolidation", 0.08), ("pneumonia", 0.08), ("mass", 0.06), ("nodule", 0.028)):
        if name in findings:
            cx, cy = rng.uniform(0.45, 0.65), rng.uniform(0.3, base - 0.1)
            m = (_ellipse(x, y, cx, cy, r, r) < 1) & lung
            dens += 0.3 * m
            masks[name] = m
    if "edema" in findings:
        m = (_ellipse(x, y, 0.52, 0.45, 0.16, 0.14) < 1) & lung
        dens += 0.2 * m
        masks["edema"] = m
    if "atelectasis" in findings:
        m = (np.abs(y - (base - 0.1) + 0.1 * (x - 0.5)) < 0.018) & lung
        dens += 0.3 * m
        masks["atelectasis"] = m
    if "support_devices" in findings:
        m = (np.abs(x - 0.45 - 0.05 * y) < 0.006) & (y < 0.35)
        dens += 0.35 * m
        masks["support_devices"] = m
    return dens, masks


def _finish(
    dens: np.ndarray, masks: dict[str, np.ndarray], rng: np.random.Generator, size: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Blur like a detector, vary the exposure, resize to size, add quantum noise, clip; masks as uint8."""
    gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-0.03, 0.03)
    img = cv2.GaussianBlur(dens, (0, 0), 0.6)
    img = img * np.float32(gain) + np.float32(offset + 0.08)  # +0.08: faint background, air is not black
    out = {k: v.astype(np.uint8) for k, v in masks.items()}
    if img.shape[0] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        out = {k: cv2.resize(v, (size, size), interpolation=cv2.INTER_NEAREST) for k, v in out.items()}
    img += np.float32(0.018) * rng.standard_normal(img.shape, dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    return img.astype(np.float32, copy=False), out
