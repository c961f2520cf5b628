"""A randomised upper abdomen in patient-frame millimetres, and how to paint it onto a grid.

``Abdomen(rng)`` draws every anatomical parameter up front (so the anatomy depends only on the seed, not on
the grid it is painted on); ``Abdomen.paint(canvas)`` renders it. Frame: x towards the patient's right,
y anterior, z superior (RAS axes); the origin is the body's centre at the level of the pancreatic body.
Structures are painted back to front: later ones win, and organs get a thin fat halo so neighbours stay
separable, as on a real scan. HU values are portal-venous phase.
"""

from __future__ import annotations

import math

import numpy as np

from lib.data.geometry import (
    FAR,
    Box,
    Canvas,
    FourierNoise,
    arclength,
    bounds,
    ellipse2d_sd,
    ellipsoid_sd,
    rotation,
    smin,
    spline,
    tube,
)

TUMOUR_SITES = ("head", "body", "tail")


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / max(np.linalg.norm(v), 1e-9)


def keep_clear(pts, radii, obs_pts, obs_r, gap: float, iterations: int = 6):
    """Push a tube's centreline away from an obstacle tube until it is ``gap`` mm clear of it.

    The displacement is smoothed along the curve so the tube bends round the obstacle instead of
    kinking; whatever overlap is left is taken off the radius (never below 3 mm)."""
    pts = np.array(pts, dtype=np.float64)
    radii = np.array(np.broadcast_to(radii, (len(pts),)), dtype=np.float64)
    obs_r = np.broadcast_to(obs_r, (len(obs_pts),))
    kernel = np.array([1, 2, 3, 2, 1], dtype=np.float64) / 9.0
    for _ in range(iterations):
        d = np.linalg.norm(pts[:, None, :] - obs_pts[None], axis=2)
        need = radii[:, None] + obs_r[None] + gap - d
        j = np.argmax(need, axis=1)
        deficit = need[np.arange(len(pts)), j]
        if deficit.max() <= 0:
            break
        away = pts - obs_pts[j]
        away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-6)
        move = away * np.maximum(deficit, 0)[:, None] * 1.2
        if len(pts) >= 5:  # spread each push over neighbouring samples
            move = 0.5 * move + np.stack([np.convolve(move[:, k], kernel, mode="same") for k in range(3)], axis=1)
        pts += move
    d = np.linalg.norm(pts[:, None, :] - obs_pts[None], axis=2)
    room = (d - obs_r[None] - gap).min(axis=1)
    radii = np.where(room < radii, np.maximum(room, 3.0), radii)
    return pts, radii


class Abdomen:
    """All parameters of one synthetic patient; see the module docstring for the frame."""

    def __init__(self, rng: np.random.Generator, tumour_probability: float = 0.72, tumour: bool | None = None):
        u = rng.uniform
        self.size = u(0.9, 1.12)
        # ---- body wall: superellipse cavity + muscle + subcutaneous fat (radial offsets) -------------------
        self.Ac = u(108, 132) * self.size  # cavity half-width
        self.Bca = u(72, 95) * self.size  # cavity anterior half-depth
        self.Bcp = u(80, 96) * self.size  # cavity posterior half-depth
        self.n_ant, self.n_post = u(2.0, 2.4), u(2.6, 3.4)
        self.musc = dict(ant=u(9, 15), lat=u(10, 17), post=u(6, 10))
        fat = 5 + 35 * u(0, 1) ** 1.4
        self.fat = dict(ant=fat * u(0.9, 1.3), lat=fat * u(0.7, 1.1), post=fat * u(0.4, 0.8))
        self.zwiden = u(0.04, 0.1)
        self.fat_wobble = FourierNoise(rng, 5, (80, 250), 0.12)
        self.hu_fat = u(-110, -90)
        self.hu_muscle = u(45, 60)
        self.hu_skin = u(10, 40)

        # ---- diaphragm, lungs and heart ----------------------------------------------------------------------
        self.z_dome_r = u(95, 145)
        self.z_dome_l = self.z_dome_r - u(8, 25)
        self.dome_r = (0.45 * self.Ac + u(-10, 10), -0.1 * self.Bcp + u(-10, 10))
        self.dome_l = (-0.45 * self.Ac + u(-10, 10), -0.1 * self.Bcp + u(-10, 10))
        self.dome_k = (u(0.007, 0.012), u(0.007, 0.012))
        self.heart_c = (-u(5, 30), u(0.15, 0.35) * self.Bca, max(self.z_dome_r, self.z_dome_l) + u(25, 45))
        self.heart_semi = (u(55, 70), u(42, 52), u(40, 50))
        self.hu_lung = u(-880, -820)
        self.hu_heart = (u(90, 110), u(140, 180))

        # ---- spine and posterior muscles -------------------------------------------------------------------
        self.y_vb = -self.Bcp + u(42, 52)
        self.vb_semi = (u(19, 24), u(14, 17))
        self.canal_r = u(7, 9)
        self.y_canal = self.y_vb - self.vb_semi[1] - self.canal_r - 2
        self.vert_period, self.disc = u(33, 40), u(7, 10)
        self.vert_phase = u(0, self.vert_period)
        self.hu_cortical, self.hu_cancellous = u(700, 1000), u(180, 300)
        self.psoas_gain = u(0.1, 0.16)
        self.ribs = dict(z0=u(-45, -15), period=u(24, 32), slope=u(35, 55), hu=u(450, 700))

        # ---- great vessels ---------------------------------------------------------------------------------
        self.r_a = u(9, 13)
        self.x_a = -u(6, 16)
        self.y_a = self.y_vb + self.vb_semi[1] + self.r_a + u(1, 4)
        self.hu_artery = u(150, 230)
        self.hu_portal = u(150, 200)
        self.hu_ivc = u(110, 150)
        self.r_ivc = u(9, 12)
        self.x_ivc, self.y_ivc = u(18, 28), self.y_vb + self.vb_semi[1] + u(2, 8)
        self.aorta_pts = np.array([(self.x_a + u(-3, 3), self.y_a + u(-3, 3) - 0.03 * z, z) for z in np.arange(-260, 261, 65)])
        self.ivc_pts = [(self.x_ivc + u(-3, 3), self.y_ivc + u(-3, 3) + (0.1 * z if z > 40 else 0), z)
                        for z in np.arange(-260, 261, 65)]
        self.calcified = [(u(0, 2 * np.pi), u(-200, 40), u(1.5, 3.5)) for _ in range(rng.integers(0, 7))] \
            if u() < 0.45 else []
        ya_front = self.y_a + self.r_a
        self.z_sma = u(0, 15)
        self.r_sma = u(3, 4.5)
        self.sma_pts = np.array([(self.x_a + 1, ya_front - 3, self.z_sma), (self.x_a + 3, ya_front + 9, self.z_sma - 8),
                                 (self.x_a + 4, ya_front + 18, self.z_sma - 22), (self.x_a + 6, ya_front + 25, self.z_sma - 45),
                                 (self.x_a + 9, ya_front + 29, -110), (self.x_a + 13, ya_front + 32, -260)])
        self.r_smv = u(5, 7)
        self.x_smv = self.x_a + 3 + u(14, 18)
        self.y_smv = ya_front + u(24, 30)
        self.z_conf = u(-8, 2)

        # ---- kidneys and spleen (their places steer the pancreatic tail) --------------------------------------
        self.kidneys = []
        z_left = u(-35, -5)
        for side in (-1, 1):  # -1 left (x < 0), +1 right
            alpha, beta = u(0.35, 0.75), u(0.12, 0.3)
            rot = rotation(yaw=-side * alpha) @ rotation(pitch=-side * beta)
            semi = (u(22, 28), u(20, 25), u(45, 58)) * np.array(self.size)
            c = np.array([side * u(58, 72) * self.size, self.y_vb + u(-2, 10), z_left if side < 0 else z_left - u(5, 25)])
            hilum_dir = _unit(rot @ np.array([-side, 0.0, 0.0]))
            self.kidneys.append(dict(side=side, c=c, semi=semi, rot=rot, hilum=c + hilum_dir * semi[0] * 0.85,
                                     hilum_dir=hilum_dir, cortex=u(5, 7), hu=u(150, 200), medulla_drop=u(0, 20),
                                     sinus_hu=u(-80, -40)))
        kl = self.kidneys[0]

        phi = math.radians(u(195, 215))  # spleen against the left posterolateral wall
        radial = np.array([math.cos(phi), math.sin(phi), 0.0])
        sc = np.array([0.0, 0.0, self.z_dome_l - u(45, 70)])
        sc[:2] = radial[:2] * (self._cavity_radius(radial[0], radial[1]) - u(25, 35))
        s_semi = np.array((u(15, 22), u(40, 58), u(40, 58))) * self.size
        self.spleen = dict(c=sc, semi=s_semi, rot=rotation(yaw=phi + u(-0.2, 0.2), roll=u(-0.2, 0.2)),
                           notch=sc - radial * s_semi[0] * u(1.3, 1.7), hu=u(105, 130))
        hilum = sc - radial * (s_semi[0] + 4)

        # ---- pancreas: a lobulated tube along a smooth curve ------------------------------------------------
        r_head, r_neck, r_body, r_tail = u(13, 18), u(7.5, 10), u(8.5, 11.5), u(7.5, 10.5)
        r_v = self.r_smv
        Pn = (self.x_smv + u(-2, 4), self.y_smv + r_v + r_neck + u(1.5, 3), self.z_conf + u(0, 6))
        Ph = (self.x_smv + r_v + r_head + u(1, 5), self.y_smv + u(-4, 4), self.z_conf - u(8, 16))
        Phl = (Ph[0] + u(-4, 2), Ph[1] - u(0, 6), Ph[2] - u(12, 20))
        r_unc = u(6, 8)
        Pu = (self.x_smv - u(2, 8), self.y_smv - r_v - r_unc - u(1, 3), Phl[2] - u(-2, 6))
        Pb = (self.x_a - u(20, 35), self.y_smv + u(0, 8), u(0, 12))
        Pt = (kl["c"][0] + u(-5, 10), kl["c"][1] + kl["semi"][1] + r_tail + u(4, 9), u(15, 32))
        Pb2 = (0.5 * (Pb[0] + Pt[0]) + u(-5, 5), 0.5 * (Pb[1] + Pt[1]) + u(0, 8), 0.5 * (Pb[2] + Pt[2]) + u(-3, 3))
        end = hilum - radial * u(6, 14)
        Pe = (end[0], end[1], float(np.clip(hilum[2] - u(0, 15), Pt[2] + 3, Pt[2] + 25)))
        ctrl = np.array([Pu, Phl, Ph, Pn, Pb, Pb2, Pt, Pe])
        r_ctrl = np.array([r_unc, r_head * u(0.85, 1.0), r_head, r_neck, r_body, u(8, 11), r_tail, u(5, 7)]) * self.size ** 0.5
        pts = spline(ctrl, 2.0)
        s = arclength(pts)
        s_ctrl = np.array([s[np.argmin(np.linalg.norm(pts - c, axis=1))] for c in ctrl])
        s_ctrl = np.maximum.accumulate(s_ctrl)
        radii = np.interp(s, s_ctrl, r_ctrl)
        self.panc = dict(pts=pts, s=s, s_ctrl=s_ctrl, radii=radii, hu=u(110, 138), tex=u(5, 10),
                         halo=u(1.5, 3.0), lob_fine=FourierNoise(rng, 8, (7, 16), u(0.8, 1.6)),
                         lob_coarse=FourierNoise(rng, 5, (30, 70), u(1.0, 2.0)),
                         fatty=u(0, 0.6) if u() < 0.35 else 0.0, fat_noise=FourierNoise(rng, 10, (5, 10), 1.0))

        # ---- tumour (always drawn, so forcing it on or off keeps every other organ where it was; only the
        # gland around a tumour swells, and the splenic vein behind it moves with the gland) -----------------
        site = TUMOUR_SITES[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        lo, hi = {"head": (s_ctrl[1], s_ctrl[3]), "body": (s_ctrl[3] + 5, s_ctrl[5]), "tail": (s_ctrl[5], s_ctrl[7] - 12)}[site]
        s_t = u(lo, hi)
        i_t = int(np.searchsorted(s, s_t))
        diam = math.exp(u(math.log(8), math.log(40)))
        r_loc = radii[min(i_t, len(radii) - 1)]
        offset_dir = _unit(rng.normal(size=3))
        centre = pts[min(i_t, len(pts) - 1)] + offset_dir * u(0, 0.35) * r_loc
        semi_t = diam / 2 * rng.uniform(0.8, 1.2, size=3)
        draw_tumour = u() < tumour_probability
        self.has_tumour = draw_tumour if tumour is None else bool(tumour)
        self.tumour = dict(site=site, s=s_t, diameter=diam, centre=centre, semi=semi_t,
                           rot=rotation(u(0, 2 * np.pi), u(-0.6, 0.6), u(-0.6, 0.6)),
                           drop=u(55, 85), tex=u(4, 9), ramp=u(1.0, 2.0), margin=u(0.6, 1.4),
                           rough=FourierNoise(rng, 6, (0.5 * diam + 4, 1.5 * diam + 6), 0.12 * diam / 2 + 0.4),
                           fine=FourierNoise(rng, 6, (4, 9), u(0.4, 1.0)),
                           duct=u() < 0.6 and site != "tail", duct_r=u(1.2, 2.8), duct_hu=u(5, 25))
        if self.has_tumour:  # the tumour swells the gland so it stays (mostly) inside it
            grow = max(0.0, 0.95 * diam / 2 + 0.4 * u(0, 1) * r_loc - r_loc)
            self.panc["radii"] = radii + grow * np.exp(-(((s - s_t) / (0.55 * diam + 3)) ** 2))

        # ---- portal system, arteries, renal veins -----------------------------------------------------------
        z_conf = self.z_conf
        self.smv_pts = np.array([(self.x_smv + 6, self.y_smv + 4, -260), (self.x_smv + 2, self.y_smv + 1, -110),
                                 (self.x_smv, self.y_smv, -40), (self.x_smv, self.y_smv, z_conf)])
        liver_hilum = (u(30, 45) * self.size, self.y_ivc + u(18, 28), u(35, 55))
        self.portal_pts = np.array([(self.x_smv, self.y_smv, z_conf), (self.x_smv + 10, self.y_smv - 2, z_conf + 18),
                                    liver_hilum])
        self.r_portal = u(6, 8)
        sv = []
        i_neck = int(np.searchsorted(s, s_ctrl[3]))
        for i in range(i_neck, len(pts), 6):
            sv.append(pts[i] + np.array([0.0, -(self.panc["radii"][i] + 5.5), 1.0]))
        self.splenic_vein = np.vstack([[(self.x_smv, self.y_smv - 1, z_conf)], sv, [hilum]])
        self.r_sv = u(3.5, 5)
        coeliac = np.array([self.x_a + 1, ya_front + 12, self.z_sma + u(12, 20)])
        self.coeliac = np.array([(self.x_a + 1, ya_front - 3, coeliac[2] - 4), coeliac])
        sa = [coeliac]
        for i in range(i_neck + 10, len(pts), 10):
            sa.append(pts[i] + np.array([u(-4, 4), u(-6, 2), self.panc["radii"][i] + u(3, 7)]))
        sa.append(hilum + np.array([0, 0, 6.0]))
        self.splenic_artery = np.array(sa)
        self.hepatic_artery = np.array([coeliac, (self.x_smv + 8, coeliac[1] + 4, coeliac[2] + 4),
                                        (liver_hilum[0] - 6, liver_hilum[1] + 6, liver_hilum[2] - 4)])
        kr = self.kidneys[1]
        z_lrv = self.z_sma - u(10, 18)
        self.renal_veins = [np.array([kl["hilum"], (self.x_a - self.r_a - 6, ya_front + 2, z_lrv),
                                      (self.x_a, ya_front + 5.5, z_lrv), (self.x_ivc, self.y_ivc, z_lrv + 4)]),
                            np.array([kr["hilum"], (0.5 * (kr["hilum"][0] + self.x_ivc), self.y_ivc, kr["hilum"][2] + 3),
                                      (self.x_ivc, self.y_ivc, kr["hilum"][2] + 6)])]

        # ---- duodenum (C-loop round the head) and stomach -----------------------------------------------------
        r_d = u(8, 12)
        self.r_d = r_d
        rh = r_head * self.size ** 0.5
        py = np.array([Ph[0] - u(0, 10), Ph[1] + rh + r_d + u(8, 16), Ph[2] + rh + u(2, 10)])
        z_d3 = min(Phl[2] - rh, Pu[2] - r_unc) - r_d - u(3, 6)
        y_sma_d3 = np.interp(-z_d3, -self.sma_pts[:, 2], self.sma_pts[:, 1])
        gap = y_sma_d3 - self.r_sma - ya_front
        r_d3 = float(np.clip(gap / 2 - 1.5, 5, r_d))
        self.duodenum = np.array([
            py, (Ph[0] + 0.7 * rh + r_d, Ph[1] + u(0, 8), Ph[2] + rh + 0.5 * r_d + 3),
            (Ph[0] + rh + r_d + u(3, 6), Ph[1] + u(-5, 3), Ph[2]),
            (Phl[0] + rh + r_d + u(3, 6), Phl[1] + u(-5, 3), Phl[2] - u(0, 6)),
            (Phl[0] + 0.3 * rh, Phl[1] - u(0, 5), z_d3 + 2),
            (self.x_smv, ya_front + r_d3 + 1.5, z_d3),
            (self.x_a - self.r_a - r_d - 3, self.y_a + 0.3 * self.r_a + 0.5 * r_d, z_d3 + 6),
            (self.x_a - self.r_a - r_d - u(8, 15), ya_front + u(10, 18), Pb[2] - r_body - r_d - u(6, 12)),
        ])
        self.duodenum_r = np.array([6, 1.2 * r_d, r_d, r_d, r_d, r_d3, r_d, r_d])
        self.duodenum_gas = u(-0.2, 0.8) if u() < 0.45 else None

        collapse = u(0.55, 1.0) if u() < 0.35 else 1.0
        r_f, r_b, r_an = u(25, 45) * collapse, u(20, 36) * collapse, u(13, 20) * collapse
        y_ant = max(Pb[1] + r_body + r_an + u(6, 12), u(0.45, 0.6) * self.Bca)
        stomach = np.array([
            (-u(0.35, 0.5) * self.Ac, -u(0.0, 0.3) * self.Bcp, self.z_dome_l - r_f - u(5, 15)),
            (-u(0.3, 0.45) * self.Ac, u(0.2, 0.4) * self.Bca, u(35, 60)),
            (-u(0.0, 0.15) * self.Ac, y_ant, u(5, 22)),
            (0.5 * (py[0] - 0.1 * self.Ac), 0.5 * (py[1] + y_ant), py[2] + u(0, 6)),
            py,
        ])
        spts = spline(stomach, 5.0)
        s_st = arclength(spts)
        idx = [int(np.argmin(np.linalg.norm(spts - c, axis=1))) for c in stomach]
        srad = np.interp(s_st, np.maximum.accumulate(s_st[idx]), [r_f, r_b, r_an, 0.8 * r_an, 6])
        body_tail = self.panc["s"] >= s_ctrl[3]
        self.stomach_pts, self.stomach_r = keep_clear(spts, srad, pts[body_tail], radii[body_tail], 8.0)
        self.stomach_gas = u(-0.3, 0.7) if u() < 0.8 else None
        self.stomach_hu = u(5, 35)
        self.hu_gut_wall = u(50, 90)

        # ---- liver and gallbladder ------------------------------------------------------------------------
        self.liver = dict(
            right_c=(0.45 * self.Ac, -0.05 * self.Bcp, self.z_dome_r - u(70, 85)),
            right_semi=(0.6 * self.Ac, 0.95 * max(self.Bca, self.Bcp), u(80, 100)),
            left_c=(-u(0.0, 0.2) * self.Ac, u(0.3, 0.5) * self.Bca, self.z_dome_l - u(30, 45)),
            left_semi=(u(0.4, 0.6) * self.Ac, u(0.3, 0.45) * self.Bca, u(35, 50)),
            z_low=u(-80, -40), slope=u(0.7, 1.1), hu=u(60, 110), wobble=FourierNoise(rng, 6, (40, 120), 3.0),
        )
        lh = np.array(liver_hilum)
        vessels = []
        for _ in range(rng.integers(4, 7)):  # portal branches from the hilum
            tip = np.array([u(-0.2, 0.95) * self.Ac, u(-0.6, 0.7) * self.Bca, u(self.z_dome_r - 100, self.z_dome_r - 20)])
            mid = 0.5 * (lh + tip) + rng.normal(scale=8, size=3)
            vessels.append((np.array([lh, mid, tip]), np.array([u(4, 6), u(3, 4), 1.5])))
        for _ in range(3):  # hepatic veins into the IVC below the dome
            top = np.array([self.x_ivc, self.y_ivc, self.z_dome_r - u(15, 30)])
            tip = np.array([u(-0.3, 0.9) * self.Ac, u(-0.5, 0.8) * self.Bca, u(self.z_dome_r - 80, self.z_dome_r - 30)])
            vessels.append((np.array([top, 0.5 * (top + tip) + rng.normal(scale=6, size=3), tip]), np.array([u(4, 7), u(3, 4), 1.5])))
        self.liver_vessels = vessels
        self.gallbladder = dict(c=(u(0.35, 0.5) * self.Ac, u(0.3, 0.55) * self.Bca, u(15, 40)),
                                semi=(u(11, 18), u(11, 18), u(22, 38)), rot=rotation(u(-0.5, 0.5), u(0.2, 0.7), u(-0.6, -0.2)),
                                hu=u(0, 20)) if u() < 0.85 else None

        # ---- bowel: colon frame and small-bowel loops -----------------------------------------------------
        j = lambda s_: rng.normal(scale=s_, size=3)  # noqa: E731
        A, Ba, Bp = self.Ac, self.Bca, self.Bcp
        self.colon = spline(np.array([
            (0.6 * A, 0.1 * Ba, -200), (0.72 * A, -0.05 * Bp, -120), (0.7 * A, 0.0, -60),
            (0.55 * A, 0.3 * Ba, u(-50, -20)), (0.2 * A, 0.65 * Ba, -u(40, 90)), (-0.2 * A, 0.65 * Ba, -u(40, 90)),
            (-0.55 * A, 0.35 * Ba, u(-10, 25)), (-0.75 * A, -0.1 * Bp, -60), (-0.75 * A, -0.1 * Bp, -200),
        ]) + np.vstack([j(8) for _ in range(9)]), 8.0)
        self.colon_r = u(15, 24) * (1 + 0.15 * np.sin(2 * np.pi * arclength(self.colon) / u(35, 50)))
        self.colon, self.colon_r = keep_clear(self.colon, self.colon_r, pts, radii, 6.0)
        self.colon_gas = u(-0.6, 0.4)
        self.oral_contrast = u() < 0.2
        self.lumen_hu = u(150, 300) if self.oral_contrast else u(0, 30)
        regions = [((-0.65 * A, 0.55 * A), (self.y_a + self.r_a + 15, 0.85 * Ba), (-200, -25), rng.integers(6, 11)),
                   ((-0.7 * A, -0.15 * A), (-0.1 * Bp, 0.7 * Ba), (-55, 10), rng.integers(2, 5))]
        self.loops = []
        for (x0, x1), (y0, y1), (z0, z1), n in regions:
            lo, hi = np.array([x0, y0, z0]), np.array([x1, y1, z1])
            for _ in range(n):
                p = rng.uniform(lo, hi)
                d = _unit(rng.normal(size=3))
                path = [p.copy()]
                for _ in range(rng.integers(10, 26)):
                    d = _unit(d + rng.normal(scale=0.6, size=3))
                    p = p + 12 * d
                    out = (p < lo) | (p > hi)
                    d[out] *= -1
                    p = np.clip(p, lo, hi)
                    path.append(p.copy())
                r = u(8, 13) if u() > 0.3 else u(5, 7.5)
                lp, lr = keep_clear(spline(np.array(path), 4.0), r, pts, radii, 6.0)
                self.loops.append(dict(pts=lp, r=lr, wall=2.0 if r > 7.5 else 3.0, gas=u(-0.1, 0.8) if u() < 0.35 else None))
        self.mesenteric = []
        for _ in range(rng.integers(5, 10)):
            z = u(-150, -40)
            start = np.array([np.interp(-z, -self.sma_pts[:, 2], self.sma_pts[:, 0]),
                              np.interp(-z, -self.sma_pts[:, 2], self.sma_pts[:, 1]), z])
            tip = start + np.array([u(-80, 80), u(10, 50), u(-40, 20)])
            self.mesenteric.append(np.array([start, 0.5 * (start + tip) + j(8), tip]))

    # ---- landmarks used to place the field of view -------------------------------------------------------------
    def pancreas_z_range(self) -> tuple[float, float]:
        p, r = self.panc["pts"], self.panc["radii"]
        return float((p[:, 2] - r).min()), float((p[:, 2] + r).max())

    def z_landmarks(self) -> dict:
        lo, hi = self.pancreas_z_range()
        kid_low = min(k["c"][2] - k["semi"][2] for k in self.kidneys)
        return {"dome": self.z_dome_r, "kidneys_low": kid_low, "pancreas_low": lo, "pancreas_high": hi}

    def half_extent(self) -> tuple[float, float, float]:
        """Half-width and anterior/posterior half-depths of the body surface (largest over z)."""
        w = 1 + self.zwiden
        return ((self.Ac + self.musc["lat"] + self.fat["lat"]) * w * 1.05,
                (self.Bca + self.musc["ant"] + self.fat["ant"]) * w * 1.05,
                (self.Bcp + self.musc["post"] + self.fat["post"]) * w * 1.05)

    # ---- body wall geometry --------------------------------------------------------------------------------
    def _cavity_radius(self, c, s):
        """Superellipse radius of the cavity in the direction (cos, sin) = (c, s), at z = 0."""
        b = np.where(s > 0, self.Bca, self.Bcp)
        n = np.where(s > 0, self.n_ant, self.n_post)
        return 1.0 / ((np.abs(c) / self.Ac) ** n + (np.abs(s) / b) ** n) ** (1.0 / n)

    def _polar(self, box: Box):
        r = np.sqrt(box.X ** 2 + box.Y ** 2)
        rs = np.maximum(r, 1e-3)
        return r, box.X / rs, box.Y / rs

    def _widen(self, box: Box):
        return (1.0 + self.zwiden * np.tanh(box.Z / 120.0)).astype(np.float32)

    def _layers(self, c, s, which):
        d = self.musc if which == "musc" else self.fat
        ap = np.where(s > 0, d["ant"], d["post"])
        return (d["lat"] * c * c + ap * s * s).astype(np.float32)

    def cavity_sd(self, box: Box):
        r, c, s = self._polar(box)
        return r - self._cavity_radius(c, s).astype(np.float32) * self._widen(box)

    def diaphragm_z(self, box: Box):
        (xr, yr), (xl, yl) = self.dome_r, self.dome_l
        kr, kl = self.dome_k
        zr = self.z_dome_r + 4 - kr * ((box.X - xr) ** 2 + (box.Y - yr) ** 2)
        zl = self.z_dome_l + 4 - kl * ((box.X - xl) ** 2 + (box.Y - yl) ** 2)
        return np.maximum(np.maximum(zr, zl), min(self.z_dome_r, self.z_dome_l) - 100).astype(np.float32)

    def below_diaphragm_sd(self, box: Box, gap: float = 4.0):
        return box.Z - (self.diaphragm_z(box) - gap)

    def fat_value(self, canvas: Canvas, box: Box):
        return self.hu_fat + 8.0 * canvas.tex(box)

    # ---- painting -------------------------------------------------------------------------------------------
    def paint(self, canvas: Canvas) -> dict:
        """Render everything; returns measurements of the truth (voxel counts are taken by the caller)."""
        self._paint_body(canvas)
        self._paint_chest(canvas)
        self._paint_ribs(canvas)
        self._paint_bowel(canvas)
        self._paint_stomach(canvas)
        self._paint_liver(canvas)
        self._paint_spleen(canvas)
        self._paint_kidneys(canvas)
        self._paint_spine(canvas)
        self._paint_duodenum(canvas)
        self._paint_pancreas(canvas)
        self._paint_vessels(canvas)
        return {"tumour_site": self.tumour["site"] if self.has_tumour else None,
                "tumour_diameter_mm": round(float(self.tumour["diameter"]), 1) if self.has_tumour else None}

    def _paint_body(self, cv: Canvas):
        g = cv.grid
        full = g.full()
        r, c, s = self._polar(full)
        widen = self._widen(full)
        rc = self._cavity_radius(c, s).astype(np.float32) * widen
        rm = rc + self._layers(c, s, "musc")
        rb = rm + self._layers(c, s, "fat") * (1 + self.fat_wobble(full)) * widen
        # CT table under the patient (curved carbon shell + foam pad)
        yb = -(self.Bcp + self.musc["post"] + self.fat["post"]) * (1 + self.zwiden) - 3
        t2 = (yb - 1 + 0.0006 * full.X ** 2) - full.Y  # > 0 below the pad's upper surface
        pad = np.maximum(np.abs(t2 - 6) - 6, np.abs(full.X) - 230)
        cv.paint(full, pad, -800)
        shell = np.maximum(np.abs(t2 - 15) - 2.5, np.abs(full.X) - 240)
        cv.paint(full, shell, 150)
        cv.paint(full, r - rb, self.hu_skin)
        cv.paint(full, r - rb + 2.0, self.fat_value(cv, full))
        cv.paint(full, r - rm, self.hu_muscle + 6.0 * cv.tex(full))
        cv.paint(full, r - rc, self.fat_value(cv, full))
        # room air around the patient: the caller keeps it noise-free (it only costs file size)
        cv.exterior = ((r - rb) > 2.0) & (pad > 1.0) & (shell > 1.0)

    def _paint_chest(self, cv: Canvas):
        g = cv.grid
        zlo = min(self.z_dome_r, self.z_dome_l) - 110
        box = g.box((-400, -400, zlo), (400, 400, 1000))
        if box is None:
            return
        cav, dia = self.cavity_sd(box), self.diaphragm_z(box)
        cv.paint(box, np.maximum(cav, (dia - 5.0) - box.Z), self.hu_muscle + 6.0 * cv.tex(box))  # diaphragm
        lung = np.maximum(cav + 1.0, (dia + 4.0) - box.Z)
        cv.paint(box, lung, self.hu_lung + 25.0 * cv.tex(box))
        c, semi = self.heart_c, self.heart_semi
        hbox = g.box(np.subtract(c, semi) - 8, np.add(c, semi) + 8)
        if hbox is None:
            return
        above = (self.diaphragm_z(hbox) + 2.0) - hbox.Z
        sd = np.maximum(ellipsoid_sd(hbox, c, semi), above)
        cv.paint(hbox, sd - 5.0, self.fat_value(cv, hbox))
        cv.paint(hbox, sd, self.hu_heart[0] + 6 * cv.tex(hbox))
        cv.paint(hbox, np.maximum(ellipsoid_sd(hbox, c, np.multiply(semi, 0.72)), above + 8), self.hu_heart[1])

    def _paint_ribs(self, cv: Canvas):
        g = cv.grid
        rb = self.ribs
        box = g.box((-400, -400, rb["z0"] - 30), (400, 400, 1000))
        if box is None:
            return
        r, c, s = self._polar(box)
        rc = self._cavity_radius(c, s).astype(np.float32) * self._widen(box)
        rr = rc + 0.5 * self._layers(c, s, "musc")
        zc = rb["z0"] - rb["slope"] * s
        u = (box.Z - zc) / rb["period"]
        k = np.floor(u + 0.5)
        dz = (u - k) * rb["period"]
        sd = (np.sqrt(((r - rr) / 4.0) ** 2 + (dz / 5.0) ** 2) - 1.0) * 4.0
        # floating ribs stay posterolateral; none across the anterior midline (costal margin)
        reach = np.where(k < 2, -0.2, 0.55 + 0.1 * np.minimum(k, 4))
        sd = np.where((s > reach) | (k < 0) | (np.abs(c) < 0.25), FAR, sd).astype(np.float32)
        cv.paint(box, sd, rb["hu"])
        cv.paint(box, sd + 1.5, self.hu_cancellous)

    def _paint_hollow(self, cv: Canvas, pts, radii, wall, content, gas_level=None, halo=0.0, step_box=None):
        """A gut segment: wall, fluid content and (supine) gas collecting anteriorly."""
        tf = tube(cv.grid, pts, radii, margin=4.0 + halo, want_s=gas_level is not None)
        if tf is None:
            return
        box = tf.box
        if halo:
            cv.paint(box, tf.sd - halo, self.fat_value(cv, box))
        cv.paint(box, tf.sd, self.hu_gut_wall + 8 * cv.tex(box))
        lumen = tf.sd + wall
        cv.paint(box, lumen, content if np.isscalar(content) else content(box))
        if gas_level is not None:
            s = arclength(pts)
            yc = np.interp(tf.s, s, pts[:, 1]).astype(np.float32)
            rr = np.interp(tf.s, s, np.broadcast_to(radii, (len(pts),))).astype(np.float32)
            gas = np.maximum(lumen, yc + gas_level * rr - box.Y)
            cv.paint(box, gas, -990 + 10 * cv.tex(box))

    def _paint_bowel(self, cv: Canvas):
        for lp in self.loops:
            self._paint_hollow(cv, lp["pts"], lp["r"], lp["wall"], self.lumen_hu + 8, lp["gas"])
        for m in self.mesenteric:
            p = spline(m, 4.0)
            tf = tube(cv.grid, p, np.linspace(2.5, 1.2, len(p)), margin=3)
            if tf is not None:
                cv.paint(tf.box, tf.sd, self.hu_portal - 20)

        def stool(box):
            t = cv.tex(box)
            return np.where(t > 1.1, -900.0, 30.0 + 40.0 * t).astype(np.float32)

        self._paint_hollow(cv, self.colon, self.colon_r, 2.0, stool, self.colon_gas)

    def _paint_stomach(self, cv: Canvas):
        pts, radii = self.stomach_pts, self.stomach_r
        s_c = arclength(pts)
        tf = tube(cv.grid, pts, radii, margin=6.0, want_s=True)
        if tf is None:
            return
        box = tf.box
        clip = np.maximum(self.below_diaphragm_sd(box), self.cavity_sd(box) + 2.0)
        sd = np.maximum(tf.sd, clip)
        cv.paint(box, sd - 2.0, self.fat_value(cv, box))
        cv.paint(box, sd, self.hu_gut_wall + 10 * cv.tex(box))
        lumen = sd + 4.0
        cv.paint(box, lumen, self.stomach_hu + 10 * cv.tex(box) if not self.oral_contrast else self.lumen_hu)
        if self.stomach_gas is not None:
            yc = np.interp(tf.s, s_c, pts[:, 1]).astype(np.float32)
            rr = np.interp(tf.s, s_c, radii).astype(np.float32)
            cv.paint(box, np.maximum(lumen, yc + self.stomach_gas * rr - box.Y), -995 + 5 * cv.tex(box))

    def _liver_sd(self, box: Box):
        lv = self.liver
        right = ellipsoid_sd(box, lv["right_c"], lv["right_semi"])
        left = ellipsoid_sd(box, lv["left_c"], lv["left_semi"])
        sd = smin(right, left, 20.0)
        slope = lv["slope"]
        z_inf = lv["z_low"] + slope * (0.9 * self.Ac - box.X) + 0.005 * (box.Y - 0.2 * self.Bca) ** 2
        sd = np.maximum(sd, (z_inf - box.Z) / math.sqrt(1 + slope ** 2)) + lv["wobble"](box)
        sd = np.maximum(sd, self.cavity_sd(box) + 1.5)
        retro = ellipse2d_sd(box, 5.0, self.y_vb, self.vb_semi[0] + 28, self.vb_semi[1] + 30)
        sd = np.maximum(sd, -retro)
        return np.maximum(sd, self.below_diaphragm_sd(box)).astype(np.float32)

    def _paint_liver(self, cv: Canvas):
        lv = self.liver
        lo = np.minimum(np.subtract(lv["right_c"], lv["right_semi"]), np.subtract(lv["left_c"], lv["left_semi"])) - 8
        hi = np.maximum(np.add(lv["right_c"], lv["right_semi"]), np.add(lv["left_c"], lv["left_semi"])) + 8
        box = cv.grid.box(lo, hi)
        if box is None:
            return
        sd = self._liver_sd(box)
        cv.paint(box, sd - 2.0, self.fat_value(cv, box))
        cv.paint(box, sd, lv["hu"] + 7 * cv.tex(box))
        for pts, r in self.liver_vessels:
            p = spline(pts, 4.0)
            s = arclength(p)
            loc = box.local(*bounds(p, r.max() + 3))
            if loc is None:
                continue
            sub = box.sub(loc)
            tf = tube(cv.grid, p, np.interp(s, [0, s[-1] / 2, s[-1]], r), margin=3.0, box=sub)
            cv.paint(sub, np.maximum(tf.sd, sd[loc] + 4.0), self.hu_portal - 10)
        gb = self.gallbladder
        if gb is not None:
            gbox = cv.grid.box(np.subtract(gb["c"], max(gb["semi"]) + 6), np.add(gb["c"], max(gb["semi"]) + 6))
            if gbox is not None:
                gsd = np.maximum(ellipsoid_sd(gbox, gb["c"], gb["semi"], gb["rot"]), self.cavity_sd(gbox) + 3)
                cv.paint(gbox, gsd, lv["hu"] - 10)
                cv.paint(gbox, gsd + 2.0, gb["hu"])

    def _paint_spleen(self, cv: Canvas):
        sp = self.spleen
        r = max(sp["semi"]) + 8
        box = cv.grid.box(sp["c"] - r, sp["c"] + r)
        if box is None:
            return
        sd = ellipsoid_sd(box, sp["c"], sp["semi"], sp["rot"])
        notch = ellipsoid_sd(box, sp["notch"], (sp["semi"][0] * 1.2, sp["semi"][1] * 0.6, sp["semi"][2] * 0.55), sp["rot"])
        sd = np.maximum(sd, -notch)
        sd = np.maximum(np.maximum(sd, self.cavity_sd(box) + 1.5), self.below_diaphragm_sd(box))
        cv.paint(box, sd - 2.0, self.fat_value(cv, box))
        cv.paint(box, sd, sp["hu"] + 5 * cv.tex(box), organ="spleen")

    def _paint_kidneys(self, cv: Canvas):
        for k in self.kidneys:
            r = max(k["semi"]) + 12
            box = cv.grid.box(k["c"] - r, k["c"] + r)
            if box is None:
                continue
            sd = ellipsoid_sd(box, k["c"], k["semi"], k["rot"])
            cv.paint(box, sd - 6.0, self.fat_value(cv, box))
            cv.paint(box, sd, k["hu"] + 6 * cv.tex(box))
            cv.paint(box, sd + k["cortex"], k["hu"] - k["medulla_drop"] + 6 * cv.tex(box))
            sinus_c = k["c"] + k["hilum_dir"] * k["semi"][0] * 0.55
            sinus = ellipsoid_sd(box, sinus_c, (k["semi"][0] * 0.5, k["semi"][1] * 0.4, k["semi"][2] * 0.5), k["rot"])
            cv.paint(box, sinus, k["sinus_hu"])
            pelvis = ellipsoid_sd(box, sinus_c + k["hilum_dir"] * 3, (6, 5, 9), k["rot"])
            cv.paint(box, pelvis, 10.0)

    def _paint_spine(self, cv: Canvas):
        g = cv.grid
        vb_a, vb_b = self.vb_semi
        box = g.box((-120, self.y_canal - 80, -1000), (120, self.y_vb + vb_b + 40, 1000))
        if box is None:
            return
        inside_fat = self._inside_subcut(box)
        # back muscles (clipped to the subcutaneous fat boundary), psoas growing caudally
        for side in (-1, 1):
            para = ellipse2d_sd(box, side * 28, self.y_canal - 22, 24, 22)
            cv.paint(box, np.maximum(para, inside_fat), self.hu_muscle + 6 * cv.tex(box))
            ql = ellipse2d_sd(box, side * 62, self.y_canal - 5, 16, 9)
            cv.paint(box, np.maximum(np.maximum(ql, inside_fat), box.Z + 10), self.hu_muscle + 6 * cv.tex(box))
            rp = np.clip(5 + (10 - box.Z) * self.psoas_gain, 0, 26)
            rp = np.where(rp < 4, 0, rp)
            px = side * (vb_a + 4 + rp * 0.8)
            d = np.sqrt((box.X - px) ** 2 + ((box.Y - (self.y_vb + 2)) * 1.2) ** 2) - rp
            cv.paint(box, np.where(rp < 4, FAR, d).astype(np.float32), self.hu_muscle + 6 * cv.tex(box))
        # vertebral column: bodies with discs, canal, posterior arch, processes
        P, disc = self.vert_period, self.disc
        u = (box.Z - self.vert_phase) / P
        dz = (u - np.floor(u + 0.5)) * P
        zsd = np.abs(dz) - (P - disc) / 2
        body = ellipse2d_sd(box, 0, self.y_vb, vb_a, vb_b)
        cv.paint(box, body + 1.0, 90.0)  # discs
        vert = np.maximum(body, zsd)
        arch = ellipse2d_sd(box, 0, self.y_canal - 2, self.canal_r + 6, self.canal_r + 7)
        spinous = ellipse2d_sd(box, 0, self.y_canal - self.canal_r - 22, 4.5, 18)
        tp = np.maximum(ellipse2d_sd(box, 0, self.y_canal + 3, vb_a + 20, 3.5), np.abs(dz) - 5)
        post = np.maximum(np.minimum(np.minimum(arch, np.maximum(spinous, inside_fat + 3)), tp), np.abs(dz) - (P - disc) / 2 + 3)
        bone = np.minimum(vert, post)
        cv.paint(box, bone, self.hu_cortical)
        cv.paint(box, bone + 1.3, self.hu_cancellous + 20 * cv.tex(box))
        canal = ellipse2d_sd(box, 0, self.y_canal, self.canal_r, self.canal_r * 0.9)
        cv.paint(box, canal, 15.0)

    def _inside_subcut(self, box: Box):
        """Signed distance (radial) to the inner surface of the subcutaneous fat."""
        r, c, s = self._polar(box)
        rm = self._cavity_radius(c, s).astype(np.float32) * self._widen(box) + self._layers(c, s, "musc")
        return r - rm - 0.5 * self._layers(c, s, "fat")

    def _paint_duodenum(self, cv: Canvas):
        pts = spline(self.duodenum, 3.0)
        s = arclength(pts)
        idx = [int(np.argmin(np.linalg.norm(pts - c, axis=1))) for c in self.duodenum]
        radii = np.interp(s, np.maximum.accumulate(s[idx]), self.duodenum_r)
        self._paint_hollow(cv, pts, radii, 2.5, self.lumen_hu, self.duodenum_gas, halo=1.5)

    def pancreas_field(self, grid, want_s=True):
        pc = self.panc
        tf = tube(grid, pc["pts"], pc["radii"], margin=8.0, want_s=want_s)
        if tf is None:
            return None
        tf.sd += pc["lob_fine"](tf.box) + pc["lob_coarse"](tf.box)
        return tf

    def _paint_pancreas(self, cv: Canvas):
        pc, tm = self.panc, self.tumour
        tf = self.pancreas_field(cv.grid)
        if tf is None:
            return
        box, sd = tf.box, tf.sd
        cv.paint(box, sd - pc["halo"], self.fat_value(cv, box) + 15)
        value = pc["hu"] + pc["tex"] * cv.tex(box)
        if pc["fatty"]:
            value = value - pc["fatty"] * 70.0 * np.clip(pc["fat_noise"](box) - 0.9, 0, 1)
        cv.paint(box, sd, value, label=1)
        if not self.has_tumour:
            return
        if tm["duct"]:
            far = tm["s"] + tm["diameter"] / 2
            keep = pc["s"] >= far
            if keep.sum() > 4:
                p = pc["pts"][keep][:-4]
                dr = np.linspace(tm["duct_r"], 1.0, len(p))
                dtf = tube(cv.grid, p, dr, margin=2.0, box=box)
                cv.paint(box, np.maximum(dtf.sd, sd + 1.5), tm["duct_hu"], label=1)
        t_sd = ellipsoid_sd(box, tm["centre"], tm["semi"], tm["rot"]) + tm["rough"](box) + tm["fine"](box)
        t_sd = np.maximum(t_sd, sd - 1.5)
        value = pc["hu"] - tm["drop"] + tm["tex"] * cv.tex(box)
        # the hypo-attenuation reaches a little past the drawn margin (infiltrative edge), as in real PDAC
        cv.paint(box, t_sd - tm["margin"], value, label=None, ramp=tm["ramp"])
        cv.label[box.slices][t_sd < 0] = 2

    def _paint_vessels(self, cv: Canvas):
        g = cv.grid

        def vessel(pts, r, hu, step=4.0, halo=1.0):
            p = spline(pts, step)
            tf = tube(g, p, r, margin=3.0 + halo)
            if tf is None:
                return
            if halo:
                cv.paint(tf.box, tf.sd - halo, self.fat_value(cv, tf.box))
            cv.paint(tf.box, tf.sd, hu)

        vessel(self.smv_pts, self.r_smv, self.hu_portal, halo=0.5)
        vessel(self.portal_pts, self.r_portal, self.hu_portal, halo=0.5)
        vessel(self.splenic_vein, self.r_sv, self.hu_portal, halo=0.5)
        vessel(self.sma_pts, self.r_sma, self.hu_artery, halo=2.0)
        vessel(self.coeliac, 3.5, self.hu_artery, halo=1.0)
        vessel(self.splenic_artery, 2.5, self.hu_artery, halo=0.0)
        vessel(self.hepatic_artery, 2.5, self.hu_artery, halo=0.0)
        for rv in self.renal_veins:
            vessel(rv, 4.5, self.hu_portal - 10, halo=0.5)
        vessel(np.array(self.ivc_pts), self.r_ivc, self.hu_ivc, step=8.0, halo=0.0)
        vessel(self.aorta_pts, self.r_a, self.hu_artery, step=8.0, halo=1.0)
        for ang, z, r in self.calcified:
            ax, ay = (np.interp(z, self.aorta_pts[:, 2], self.aorta_pts[:, k]) for k in (0, 1))
            c = np.array([ax + self.r_a * math.cos(ang), ay + self.r_a * math.sin(ang), z])
            box = g.box(c - r - 3, c + r + 3)
            if box is not None:
                cv.paint(box, ellipsoid_sd(box, c, (r, r, r * 1.5)), 900.0)
