"""Procedural 3D CT-like phantoms with one labelled lesion (NumPy only).

One generator serves the demo model's training data, the committed sample
volume (``tests/fixtures/demo/``) and the held-out evaluation phantoms, so
everything is reproducible from a seed.  Nothing here comes from patient
data.

A phantom is a stack of axial slices in Hounsfield units (HU):

* air outside an irregular body outline (optionally a table), a
  subcutaneous fat layer and a muscle wall;
* a body *region*: abdomen (liver, spleen, kidneys, bowel with gas, fluid or
  oral contrast, mesenteric fat) or thorax (lungs with vessels, mediastinum,
  heart, ribs); always a vertebra (trabecular + cortical bone, canal),
  aorta and IVC; non-contrast or portal-venous phase;
* the **target lesion**: a 3-D deformed blob (low-order Fourier boundary
  whose coefficients, centre, radius and contrast drift from slice to slice),
  hypo- or hyper-dense, sometimes with a rim or a necrotic core, appearing
  and disappearing along z, placed in an organ, the lung or fat, often
  touching the organ's edge or a vessel;
* **hard negatives**: other unlabelled lesions of the same kind, vessels
  seen end-on as bright dots, cysts, bowel loops;
* acquisition: the lesion and the organs are integrated over the slice
  thickness (partial volume), an in-plane Gaussian point-spread function,
  and correlated (blurred white) noise.

``window_u8`` maps HU to ``u8`` exactly as the Rust engine does
(``medsam2-core/src/medical/intensity.rs``: clip to the window, stretch the
clipped min..max to 0..255, truncate), so training sees the bytes that
``segment_volume --window abdomen`` gives the model.
"""

import gzip
import struct

import numpy as np

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def smooth_1d(rng, n_terms=3, max_freq=0.6):
    """A smooth random function of z (slices): sum of a few sinusoids, |f| <= 1."""
    amps = rng.uniform(-1, 1, n_terms)
    amps /= max(1.0, np.abs(amps).sum())
    freqs = rng.uniform(0.05, max_freq, n_terms)
    phases = rng.uniform(0, 2 * np.pi, n_terms)

    def f(z):
        return float(np.sum(amps * np.sin(freqs * z + phases)))

    return f


class Blob:
    """A 2-D star-shaped region whose parameters are smooth functions of z.

    Boundary radius in direction theta (in the blob's rotated, anisotropically
    scaled frame): ``r(z) * (1 + sum_k a_k(z) cos(k theta + p_k))``.
    """

    def __init__(self, rng, cy, cx, ry, rx, angle=None, harmonics=3, wobble=0.15, drift=0.0,
                 zc=None, zhalf=None, zvary=0.1, pow_=2.0):
        self.cy, self.cx, self.ry, self.rx = cy, cx, ry, rx
        self.angle = rng.uniform(0, np.pi) if angle is None else angle
        ks = np.arange(2, 2 + harmonics)
        self.ks = ks
        self.amp = [rng.uniform(-wobble, wobble) / (1 + 0.5 * (k - 2)) for k in ks]
        self.amp_var = [smooth_1d(rng) for _ in ks]
        self.ph = rng.uniform(0, 2 * np.pi, len(ks))
        self.ph_var = [smooth_1d(rng) for _ in ks]
        self.dy, self.dx = smooth_1d(rng), smooth_1d(rng)
        self.drift = drift
        self.rvar = smooth_1d(rng)
        self.zvary = zvary
        self.zc, self.zhalf, self.pow = zc, zhalf, pow_

    def scale(self, z):
        """Radius factor at slice position z (0 outside the blob's z extent)."""
        s = 1.0 + self.zvary * self.rvar(z)
        if self.zc is not None:
            u = abs(z - self.zc) / self.zhalf
            if u >= 1.0:
                return 0.0
            s *= (1.0 - u ** self.pow) ** (1.0 / self.pow)
        return max(s, 0.0)

    def center(self, z):
        return (self.cy + self.drift * self.dy(z), self.cx + self.drift * self.dx(z))

    def sdist(self, z, yy, xx):
        """Approximate signed distance (pixels, < 0 inside) on the grid yy, xx."""
        s = self.scale(z)
        if s <= 0.0:
            return None
        cy, cx = self.center(z)
        dy, dx = yy - cy, xx - cx
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        u = (ca * dx + sa * dy) / (self.rx * s)
        v = (-sa * dx + ca * dy) / (self.ry * s)
        rho = np.sqrt(u * u + v * v)
        th = np.arctan2(v, u)
        bound = np.ones_like(rho)
        for k, a, av, p, pv in zip(self.ks, self.amp, self.amp_var, self.ph, self.ph_var):
            bound += (a * (1 + 0.5 * av(z))) * np.cos(k * th + p + 0.5 * pv(z))
        rmean = 0.5 * (self.rx + self.ry) * s
        return (rho - bound) * rmean

    def occupancy(self, z, yy, xx, soft=1.0):
        """Anti-aliased occupancy in 0..1 (1-pixel transition)."""
        d = self.sdist(z, yy, xx)
        if d is None:
            return None
        return np.clip(0.5 - d / soft, 0.0, 1.0)

    def bbox(self, z, margin=3):
        s = self.scale(z)
        cy, cx = self.center(z)
        r = max(self.rx, self.ry) * s * (1 + sum(abs(a) * 1.5 for a in self.amp)) + margin
        return cy - r, cy + r, cx - r, cx + r


def _window(b, h, w):
    y0, y1, x0, x1 = b
    y0, x0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
    y1, x1 = min(int(np.ceil(y1)) + 1, h), min(int(np.ceil(x1)) + 1, w)
    if y1 <= y0 or x1 <= x0:
        return None
    return slice(y0, y1), slice(x0, x1)


def paint(img, blob, z, value, yy, xx, weight=1.0, soft=1.0):
    """img = img*(1-o) + value*o inside blob's bbox; value may be an array."""
    h, w = img.shape
    if blob.scale(z) <= 0:
        return None
    win = _window(blob.bbox(z), h, w)
    if win is None:
        return None
    o = blob.occupancy(z, yy[win], xx[win], soft)
    if o is None:
        return None
    o = o * weight
    v = value[win] if isinstance(value, np.ndarray) else value
    img[win] = img[win] * (1 - o) + v * o
    full = np.zeros_like(img)
    full[win] = o
    return full


def gaussian_filter_fft(img, sigma):
    """Periodic Gaussian blur of a 2-D array by FFT (sigma in pixels)."""
    if sigma <= 0:
        return img
    h, w = img.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (fy * fy + fx * fx))
    return np.fft.irfft2(np.fft.rfft2(img) * g, s=(h, w))


def smooth_field(rng, h, w, sigma):
    f = gaussian_filter_fft(rng.standard_normal((h, w)), sigma)
    return f / (f.std() + 1e-8)


# ---------------------------------------------------------------------------
# the phantom
# ---------------------------------------------------------------------------


def make_phantom(seed, n_slices=16, size=256, key=None, lesion_kind=None, easy=False):
    """Generate one phantom.

    Returns a dict with ``hu`` (float32 [D, H, W]), ``label`` (uint8
    [D, H, W], 1 = target lesion), ``spacing`` (x, y, z mm) and ``info``.
    ``key`` fixes the slice where the lesion is centred (default: random);
    ``easy`` gives a well-contrasted, medium-size lesion (for the sample).
    """
    rng = np.random.default_rng(seed)
    D, H, W = n_slices, size, size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    sub = 4  # sub-slices per slice for partial volume
    thick = float(rng.choice([2.5, 3.0, 5.0, 5.0]))
    spacing_xy = float(rng.uniform(0.6, 0.9)) * 512 / size  # mm per pixel (a 512 slice of 0.6-0.9 mm)
    region = "thorax" if rng.random() < 0.3 else "abdomen"
    contrast = rng.random() < 0.65
    if lesion_kind is None:
        kinds = ["organ", "organ", "organ", "fat"] + (["lung", "lung"] if region == "thorax" else ["kidney"])
        lesion_kind = kinds[rng.integers(len(kinds))]
    if region == "abdomen" and lesion_kind == "lung":
        lesion_kind = "organ"

    # --- body outline (may be larger than the field of view) ---
    bcx = W / 2 + rng.uniform(-0.06, 0.06) * W
    bcy = H / 2 + rng.uniform(-0.04, 0.08) * H
    brx = rng.uniform(0.36, 0.56) * W
    bry = brx * rng.uniform(0.62, 0.85)
    body = Blob(rng, bcy, bcx, bry, brx, angle=rng.uniform(-0.1, 0.1), harmonics=4, wobble=0.06,
                drift=1.5, zvary=0.03)
    fat_t = rng.uniform(0.03, 0.16)
    inner = Blob(rng, bcy, bcx, bry * (1 - fat_t * 1.3), brx * (1 - fat_t), angle=body.angle,
                 harmonics=3, wobble=0.05, drift=1.5, zvary=0.03)
    wall_t = rng.uniform(0.025, 0.06)
    cavity = Blob(rng, bcy, bcx, bry * (1 - fat_t * 1.3 - wall_t * 1.3), brx * (1 - fat_t - wall_t),
                  angle=body.angle, harmonics=3, wobble=0.05, drift=1.5, zvary=0.03)
    table = rng.random() < 0.4
    table_y = bcy + bry * rng.uniform(1.02, 1.12)

    # anatomy positions relative to the cavity (patient's right = image left)
    crx, cry = cavity.rx, cavity.ry
    spine_y = bcy + cry * rng.uniform(0.45, 0.7)
    spine_x = bcx + rng.uniform(-0.03, 0.03) * W
    vr = crx * rng.uniform(0.11, 0.16)
    vert = Blob(rng, spine_y, spine_x, vr * 0.9, vr, angle=0.0, harmonics=2, wobble=0.05, drift=1.0)
    canal = Blob(rng, spine_y + vr * 1.35, spine_x, vr * 0.45, vr * 0.45, harmonics=2, wobble=0.05, drift=0.5)
    post = Blob(rng, spine_y + vr * 1.6, spine_x, vr * 0.9, vr * 1.3, angle=0.0, harmonics=3, wobble=0.1, drift=0.5)
    ar = crx * rng.uniform(0.06, 0.09)
    aorta = Blob(rng, spine_y - vr - ar * 1.1, spine_x + ar * 0.6, ar, ar, harmonics=2, wobble=0.03, drift=1.0)
    ivc = Blob(rng, spine_y - vr - ar * 0.9, spine_x - ar * 2.6, ar * 0.8, ar * 1.2, harmonics=2, wobble=0.1, drift=1.0)

    organs = []  # (name, blob, hu, texture sd)
    if region == "abdomen":
        liver_hu = rng.uniform(95, 135) if contrast else rng.uniform(50, 68)
        liver = Blob(rng, bcy - cry * rng.uniform(0.0, 0.25), bcx - crx * rng.uniform(0.3, 0.5),
                     cry * rng.uniform(0.5, 0.8), crx * rng.uniform(0.4, 0.6), harmonics=4, wobble=0.15,
                     drift=4.0, zvary=0.08)
        organs.append(("liver", liver, liver_hu, 6.0))
        if rng.random() < 0.8:
            sp = Blob(rng, spine_y - cry * 0.15, bcx + crx * rng.uniform(0.5, 0.7), cry * rng.uniform(0.2, 0.35),
                      crx * rng.uniform(0.12, 0.2), harmonics=3, wobble=0.12, drift=3.0, zvary=0.1)
            organs.append(("spleen", sp, rng.uniform(100, 130) if contrast else rng.uniform(42, 55), 5.0))
        for side in (-1, 1):
            if rng.random() < 0.75:
                kr = crx * rng.uniform(0.1, 0.15)
                kb = Blob(rng, spine_y - vr * 0.2, spine_x + side * (vr + kr * 1.9), kr * 1.3, kr,
                          angle=side * rng.uniform(0.2, 0.6), harmonics=3, wobble=0.12, drift=2.0, zvary=0.1)
                organs.append(("kidney", kb, rng.uniform(150, 210) if contrast else rng.uniform(28, 40), 6.0))
        # bowel loops: gas, fluid or oral contrast, with a wall
        bowel = []
        for _ in range(rng.integers(3, 9)):
            r = crx * rng.uniform(0.05, 0.13)
            by = bcy + rng.uniform(-0.6, 0.4) * cry
            bx = bcx + rng.uniform(-0.2, 0.75) * crx
            b = Blob(rng, by, bx, r * rng.uniform(0.6, 1.0), r, harmonics=3, wobble=0.15, drift=4.0, zvary=0.25)
            content = rng.choice(["gas", "fluid", "contrast", "stool"], p=[0.35, 0.3, 0.15, 0.2])
            hu = {"gas": -950.0, "fluid": 10.0, "contrast": rng.uniform(180, 400), "stool": -300.0}[content]
            bowel.append((b, hu, content))
    else:
        bowel = []
        lungs = []
        for side in (-1, 1):
            lr = crx * rng.uniform(0.32, 0.42)
            lb = Blob(rng, bcy - cry * 0.05, bcx + side * crx * rng.uniform(0.42, 0.52), cry * rng.uniform(0.65, 0.8),
                      lr, harmonics=4, wobble=0.08, drift=2.0, zvary=0.05)
            lungs.append(lb)
        heart = Blob(rng, bcy - cry * rng.uniform(0.05, 0.3), bcx + crx * rng.uniform(0.0, 0.15), cry * 0.35,
                     crx * 0.3, harmonics=3, wobble=0.1, drift=2.0, zvary=0.1)
        organs.append(("heart", heart, rng.uniform(120, 250) if contrast else rng.uniform(35, 50), 5.0))
        ribs = []
        for _ in range(rng.integers(6, 12)):
            a = rng.uniform(0, 2 * np.pi)
            rr = crx * rng.uniform(0.03, 0.05)
            ry_, rx_ = cavity.ry * 0.96, cavity.rx * 0.96
            ribs.append(Blob(rng, bcy + ry_ * np.sin(a), bcx + rx_ * np.cos(a), rr * 0.8, rr * 1.6, angle=a + np.pi / 2,
                             harmonics=2, wobble=0.1, drift=3.0, zvary=0.2))

    # small vessels seen end-on (bright dots: hard negatives for small lesions)
    dots = []
    for _ in range(rng.integers(4, 16)):
        host = organs[rng.integers(len(organs))][1] if organs else cavity
        a = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0, 0.8)
        r = rng.uniform(1.0, 3.5)
        dots.append(Blob(rng, host.cy + host.ry * rad * np.sin(a), host.cx + host.rx * rad * np.cos(a), r, r,
                         harmonics=2, wobble=0.1, drift=6.0, zvary=0.3))
    dot_hu = rng.uniform(140, 220) if contrast else rng.uniform(35, 50)

    # --- lesions: the target and the hard negatives ---
    def host_for(kind):
        if kind == "lung" and region == "thorax":
            return lungs[rng.integers(2)], -850.0
        if kind == "kidney":
            ks = [o for o in organs if o[0] == "kidney"]
            if ks:
                o = ks[rng.integers(len(ks))]
                return o[1], o[2]
        if kind == "fat":
            return cavity, -90.0
        o = organs[0] if region == "abdomen" else organs[0]
        if region == "abdomen" and len(organs) > 1 and rng.random() < 0.2:
            o = organs[rng.integers(len(organs))]
        return o[1], o[2]

    def make_lesion(kind, zc, target):
        host, host_hu = host_for(kind)
        if easy:
            rmean = rng.uniform(12, 18)
        else:
            rmean = float(np.exp(rng.uniform(np.log(3.5), np.log(28))))
        if kind == "lung":
            rmean = min(rmean, 14)
        # placement: inside the host, sometimes at its edge (touching)
        a = rng.uniform(0, 2 * np.pi)
        edge = rng.random() < 0.35 and not easy
        frac = rng.uniform(0.75, 1.0) if edge else rng.uniform(0.0, 0.6)
        cy = host.cy + host.ry * frac * np.sin(a)
        cx = host.cx + host.rx * frac * np.cos(a)
        cy = float(np.clip(cy, rmean + 4, H - rmean - 4))
        cx = float(np.clip(cx, rmean + 4, W - rmean - 4))
        elong = rng.uniform(0.6, 1.0)
        zhalf = rng.uniform(1.2, 6.0) * (5.0 / thick) ** 0.5 * (rmean / 12) ** 0.3
        if easy:
            zhalf = max(zhalf, 4.5)
        b = Blob(rng, cy, cx, rmean * elong, rmean, harmonics=4, wobble=0.05 if easy else rng.uniform(0.05, 0.3),
                 drift=rng.uniform(0.5, 3.0), zc=zc, zhalf=zhalf, zvary=rng.uniform(0.05, 0.25),
                 pow_=rng.uniform(1.6, 3.0))
        lobes = []
        if rng.random() < 0.3 and not easy:
            for _ in range(rng.integers(1, 3)):
                la = rng.uniform(0, 2 * np.pi)
                lr = rmean * rng.uniform(0.4, 0.7)
                lobes.append(Blob(rng, cy + rmean * 0.7 * np.sin(la), cx + rmean * 0.7 * np.cos(la), lr, lr,
                                  harmonics=3, wobble=0.1, drift=1.0, zc=zc + rng.uniform(-1, 1),
                                  zhalf=zhalf * rng.uniform(0.5, 0.9)))
        # contrast relative to the host (HU); cyst-like, hypo or hyper
        if kind == "lung":
            hu = rng.uniform(-60, 60)
        elif kind == "fat":
            hu = rng.uniform(20, 60)  # lymph node / soft-tissue mass in fat
        else:
            t = rng.random()
            if t < 0.2:
                hu = rng.uniform(0, 20)  # cyst
            elif t < 0.8:
                hu = host_hu - (rng.uniform(25, 70) if easy else rng.uniform(12, 80))
            else:
                hu = host_hu + (rng.uniform(25, 60) if easy else rng.uniform(12, 70))
        rim = rng.random() < 0.2 and not easy
        core = rng.random() < 0.15 and not easy
        return dict(blob=b, lobes=lobes, hu=hu, cvar=smooth_1d(rng), camp=rng.uniform(0, 0.3),
                    rim=rim, rim_hu=hu + rng.uniform(30, 80), core=core, core_hu=hu - rng.uniform(15, 40),
                    tex=rng.uniform(2, 10), target=target, host_hu=host_hu)

    if key is None:
        key = rng.uniform(0.25, 0.75) * (D - 1)
    target = make_lesion(lesion_kind, key, True)
    negs = []
    for _ in range(rng.integers(0, 4)):
        kind = lesion_kind if rng.random() < 0.6 else ("organ" if region == "abdomen" else "lung")
        negs.append(make_lesion(kind, rng.uniform(-2, D + 1), False))

    # texture fields (per volume, shifted slightly per slice)
    tex_field = smooth_field(rng, H, W, rng.uniform(2, 6))
    fat_field = smooth_field(rng, H, W, rng.uniform(4, 10))
    fat_thr = rng.uniform(0.2, 1.2)
    lung_tex = smooth_field(rng, H, W, 1.5)

    rib_hu = rng.uniform(350, 800)
    aorta_hu = rng.uniform(150, 260) if contrast else 45.0
    ivc_hu = rng.uniform(100, 160) if contrast else 40.0
    trab_hu = rng.uniform(200, 350)
    psf = rng.uniform(0.4, 1.1)
    noise_sd = rng.uniform(6, 28)
    noise_corr = rng.uniform(0.5, 1.1)

    hu_vol = np.zeros((D, H, W), np.float32)
    lab = np.zeros((D, H, W), np.uint8)
    for k in range(D):
        z = float(k)
        img = np.full((H, W), -1000.0, np.float32)
        if table:
            img[int(min(table_y, H - 1)):int(min(table_y + 6, H)), :] = -150.0
        paint(img, body, z, -100.0 + 12 * tex_field, yy, xx)
        paint(img, inner, z, 55.0, yy, xx)
        # cavity: soft tissue with mesenteric fat
        shift = np.roll(fat_field, k, axis=1)
        visc = np.where(shift > fat_thr, -95.0, 35.0 + 10 * tex_field).astype(np.float32)
        visc = visc + 4 * lung_tex
        paint(img, cavity, z, visc, yy, xx)
        if region == "thorax":
            for lb in lungs:
                paint(img, lb, z, -860.0 + 40 * lung_tex, yy, xx)
            for rb in ribs:
                paint(img, rb, z, rib_hu, yy, xx)
        for name, ob, hu, sd in organs:
            paint(img, ob, z, hu + sd * tex_field, yy, xx)
        for b, hu, content in bowel:
            paint(img, b, z, 40.0, yy, xx)  # wall
            inner_b = Blob.__new__(Blob)
            inner_b.__dict__.update(b.__dict__)
            inner_b.rx, inner_b.ry = b.rx * 0.8, b.ry * 0.8
            paint(img, inner_b, z, hu + (60 * lung_tex if content == "stool" else 0), yy, xx)
        for d in dots:
            paint(img, d, z, dot_hu, yy, xx)
        paint(img, aorta, z, aorta_hu, yy, xx)
        paint(img, ivc, z, ivc_hu, yy, xx)
        paint(img, post, z, 450.0, yy, xx)
        paint(img, vert, z, 900.0, yy, xx)
        vin = Blob.__new__(Blob)
        vin.__dict__.update(vert.__dict__)
        vin.rx, vin.ry = vert.rx * 0.82, vert.ry * 0.82
        paint(img, vin, z, trab_hu, yy, xx)
        paint(img, canal, z, 20.0, yy, xx)

        # lesions, integrated over the slice thickness (partial volume)
        for les in negs + [target]:
            occ = np.zeros((H, W), np.float32)
            for s in range(sub):
                zs = z + (s + 0.5) / sub - 0.5
                o = np.zeros((H, W), np.float32)
                for bb in [les["blob"]] + les["lobes"]:
                    p = paint(o, bb, zs, 1.0, yy, xx)
                    if p is not None:
                        o = np.maximum(o, p)
                occ += o / sub
            if occ.max() <= 0:
                continue
            c = 1.0 + les["camp"] * les["cvar"](z)
            val = les["host_hu"] + (les["hu"] - les["host_hu"]) * c + les["tex"] * np.roll(tex_field, 7 * k, axis=0)
            if les["core"] or les["rim"]:
                b = les["blob"]
                d = b.sdist(z, yy, xx)
                if d is not None:
                    r = 0.5 * (b.rx + b.ry) * max(b.scale(z), 1e-3)
                    if les["rim"]:
                        val = np.where((d > -0.25 * r) & (d < 0), les["rim_hu"], val)
                    if les["core"]:
                        val = np.where(d < -0.55 * r, les["core_hu"], val)
            img = img * (1 - occ) + val * occ
            if les["target"]:
                lab[k] = (occ >= 0.5).astype(np.uint8)
        img = gaussian_filter_fft(img, psf)
        noise = gaussian_filter_fft(rng.standard_normal((H, W)), noise_corr)
        noise *= noise_sd / (noise.std() + 1e-8)
        img = img + noise
        hu_vol[k] = img
    info = dict(seed=seed, region=region, contrast=bool(contrast), lesion_kind=lesion_kind, key=float(key),
                thickness=thick, noise_sd=float(noise_sd), negatives=len(negs))
    return dict(hu=np.clip(np.round(hu_vol), -1024, 3071).astype(np.float32), label=lab,
                spacing=(spacing_xy, spacing_xy, thick), info=info)


def window_u8(hu, width=400.0, level=40.0):
    """HU -> u8 as medsam2-core's IntensityMap (Window, Stretch::ClippedMinMax):
    clip to [L-W/2, L+W/2], stretch the clipped volume's min..max to 0..255,
    truncate toward zero (NumPy's ``np.uint8``)."""
    lo, hi = level - width / 2, level + width / 2
    x = hu.astype(np.float64)
    mn, mx = min(max(x.min(), lo), hi), min(max(x.max(), lo), hi)
    if mx <= mn:
        return np.zeros(hu.shape, np.uint8)
    y = (np.clip(x, mn, mx) - mn) / (mx - mn) * 255.0
    return np.clip(y, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# NIfTI-1 writer (no nibabel in the reference venv; the format is a fixed
# 348-byte header, see https://nifti.nimh.nih.gov/nifti-1)
# ---------------------------------------------------------------------------


def write_nifti(path, data_zyx, spacing, dtype):
    """Write a [D, H, W] array as NIfTI-1 (x = W, y = H, z = D), gzip if *.gz.

    The affine is diag(spacing) (sform and qform), as nibabel writes with
    ``np.diag([sx, sy, sz, 1])``."""
    arr = np.ascontiguousarray(np.transpose(data_zyx, (2, 1, 0)))  # -> x, y, z (Fortran order below)
    codes = {np.int16: (4, 16), np.uint8: (2, 8), np.float32: (16, 32)}
    code, bitpix = codes[dtype]
    nx, ny, nz = arr.shape
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<h", hdr, 70, code)
    struct.pack_into("<h", hdr, 72, bitpix)
    sx, sy, sz = spacing
    struct.pack_into("<8f", hdr, 76, 1.0, sx, sy, sz, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    struct.pack_into("<B", hdr, 123, 10)  # xyzt_units: mm, s
    struct.pack_into("<h", hdr, 252, 1)  # qform_code scanner
    struct.pack_into("<h", hdr, 254, 1)  # sform_code scanner
    # quaternion b,c,d = 0 (identity), offsets 0
    struct.pack_into("<4f", hdr, 280, sx, 0, 0, 0)
    struct.pack_into("<4f", hdr, 296, 0, sy, 0, 0)
    struct.pack_into("<4f", hdr, 312, 0, 0, sz, 0)
    hdr[344:348] = b"n+1\x00"
    raw = bytes(hdr) + b"\x00" * 4 + np.asfortranarray(arr.astype(dtype)).tobytes(order="F")
    if path.endswith(".gz"):
        with open(path, "wb") as f:
            # mtime=0: byte-identical files when regenerated
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0) as g:
                g.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)
