"""Part-based category models for :func:`xnn_support.data.creatures` (papers 01/02, section 7).

Each category is drawn in its object frame (x forward = facing direction, y up, units of the
body) from a few primitives of :class:`~._creatures_draw.Canvas`; each part is a function
``draw(cv, p, x, y, ang)`` anchored at its joint, so the same function draws the part inside the
assembled object (anchored at the joint, rotated by the articulation angle) and alone, scattered
over a negative image (anchored at the origin of its own random frame).

* ``bird``: body ellipse; head disc with eye and beak (the facing cue) on a neck joint
  (+-0.25 rad); fan-shaped tail wedge (+-0.5 rad); two thin legs with feet (+-0.35 rad each).
  Head and body share a colour in half of the images (paper 01 spec).
* ``quadruped``: long body ellipse with a neck; elliptic head with ear, eye and snout direction
  (+-0.3 rad); thin tail (+-0.5 rad); four thick legs (+-0.3 rad each), the far pair shaded.
* ``wheels``: a cart, i.e. a chassis with a cab at the front (``frame``) and two IDENTICAL wheels
  (same colours, size and spoke angle in one image); articulation = independent vertical
  suspension offsets (+-0.07) and a wheelbase jitter. Front and rear wheel are told apart only by
  their place relative to the cab, i.e. by configuration.
* ``texture``: no parts; a blob (union of two ellipses) filled with a sharp two-colour dot,
  checker or stripe pattern whose period is 0.06-0.09 S (at least 3.5 px).

Landmarks are interior points of their part (centres of discs, the end of a leg's centre line,
a point near the tip of a tail), chosen so that a visible landmark always rounds to a pixel of
its part's visible mask.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np

PART_NAMES = ("head", "body", "tail", "legs", "frame", "wheel_front", "wheel_rear", "texture")
LANDMARK_PARTS = {  # landmark name -> part whose visible mask contains it
    "head": "head", "back": "body", "tail_tip": "tail", "front_foot": "legs",
    "quad_head": "head", "quad_back": "body", "quad_tail_tip": "tail",
    "quad_front_foot": "legs", "quad_rear_foot": "legs",
    "wheel_front": "wheel_front", "wheel_rear": "wheel_rear", "cab": "frame",
}
LANDMARK_NAMES = tuple(LANDMARK_PARTS)
_PID = {name: i + 1 for i, name in enumerate(PART_NAMES)}  # label-map values
_F = np.float32
_PI = np.float32(np.pi)


def _u(rng, lo, hi, m):
    return rng.uniform(lo, hi, m).astype(_F)


def _cols(rng, m):
    return rng.uniform(0.0, 1.0, (m, 3)).astype(_F)


def _rot(ang, x, y):
    c, s = np.cos(ang), np.sin(ang)
    return c * x - s * y, s * x + c * y


def _away(ref, col):
    """``col`` pushed to the far side of ``ref`` channel-wise (a detail visible on its part)."""
    return np.where(ref > 0.5, col * _F(0.3), _F(0.7) + _F(0.3) * col).astype(_F)


def _eye_colour(col):
    return np.where(col.mean(1, keepdims=True) > 0.45, _F(0.05), _F(0.95)) * np.ones_like(col)


# ---------------------------------------------------------------------------------------- bird
def bird_head(cv, p, x, y, ang):
    cv.paint(cv.disc(x, y, 0.4, thin=False), p["col_head"], _PID["head"])
    bx0, by0 = _rot(ang, 0.28, -0.02)
    bx1, by1 = _rot(ang, 0.8, -0.1)
    cv.paint(cv.capsule(x + bx0, y + by0, x + bx1, y + by1, 0.14, 0.02), _away(p["col_head"], p["col_beak"]), _PID["head"])
    ex, ey = _rot(ang, 0.13, 0.12)
    cv.paint(cv.disc(x + ex, y + ey, 0.09), _eye_colour(p["col_head"]), _PID["head"], outline=False)


def bird_body(cv, p, x, y, ang):
    cv.paint(cv.ellipse(x, y, 1.0, 0.58, ang + 0.08), p["col_body"], _PID["body"])


def bird_tail(cv, p, x, y, ang):
    tx, ty = _rot(ang, 1.0, 0.0)
    cv.paint(cv.capsule(x, y, x + tx, y + ty, 0.1, 0.32), p["col_tail"], _PID["tail"])


def bird_leg(cv, p, x, y, ang):
    lx, ly = _rot(ang, 0.8, 0.0)
    fx, fy = _rot(ang + _PI / 2, 0.3, 0.0)
    cv.paint(cv.capsule(x, y, x + lx, y + ly, 0.075), p["col_legs"], _PID["legs"])
    cv.paint(cv.capsule(x + lx, y + ly, x + lx + fx, y + ly + fy, 0.06, 0.035), p["col_legs"], _PID["legs"])


class Bird:
    name, scale, centre = "bird", (0.135, 0.17), (-0.1, -0.05)
    _neck, _tail, _hips = (0.85, 0.35), (-0.85, 0.1), ((0.3, -0.4), (-0.15, -0.4))

    @staticmethod
    def sample(rng, m):
        p = {"neck": _u(rng, -0.25, 0.25, m), "tail": _u(rng, -0.5, 0.5, m),
             "leg0": _u(rng, -0.35, 0.35, m), "leg1": _u(rng, -0.35, 0.35, m),
             "col_body": _cols(rng, m), "col_head": _cols(rng, m), "col_tail": _cols(rng, m),
             "col_legs": _cols(rng, m), "col_beak": _cols(rng, m)}
        same = rng.random(m) < 0.5
        p["col_head"] = np.where(same[:, None], p["col_body"], p["col_head"])
        return p

    @classmethod
    def geometry(cls, p):
        hx, hy = _rot(0.7 + p["neck"], 0.42, 0.0)
        head = (cls._neck[0] + hx, cls._neck[1] + hy)
        tail_ang = _PI - 0.35 + p["tail"]
        legs = [(h, -_PI / 2 + p[f"leg{i}"]) for i, h in enumerate(cls._hips)]
        return head, tail_ang, legs

    @classmethod
    def draw(cls, cv, p):
        head, tail_ang, legs = cls.geometry(p)
        bird_tail(cv, p, *cls._tail, tail_ang)
        for (hx, hy), ang in legs[::-1]:
            bird_leg(cv, p, hx, hy, ang)
        bird_body(cv, p, 0.0, 0.0, 0.0)
        bird_head(cv, p, head[0], head[1], p["neck"])

    @classmethod
    def landmarks(cls, p):
        head, tail_ang, legs = cls.geometry(p)
        tx, ty = _rot(tail_ang, 0.82, 0.0)
        (hx, hy), ang = legs[0]
        fx, fy = _rot(ang, 0.8, 0.0)
        z = np.zeros_like(p["neck"])
        return {"head": head, "back": (z - 0.1, z + 0.38),
                "tail_tip": (cls._tail[0] + tx, cls._tail[1] + ty), "front_foot": (hx + fx, hy + fy)}

    # scattered parts for negatives: name -> (draw at origin, anchor offset)
    kinds = {"bird_head": (bird_head, (0.0, 0.0), 0.0), "bird_body": (bird_body, (0.0, 0.0), 0.0),
             "bird_tail": (bird_tail, (-0.5, 0.0), 0.0), "bird_leg": (bird_leg, (0.0, 0.45), -np.pi / 2)}


# ----------------------------------------------------------------------------------- quadruped
def quad_head(cv, p, x, y, ang):
    ex0, ey0 = _rot(ang, -0.1, 0.14)
    ex1, ey1 = _rot(ang, -0.22, 0.45)
    cv.paint(cv.capsule(x + ex0, y + ey0, x + ex1, y + ey1, 0.1, 0.02), p["col_head"], _PID["head"])
    cv.paint(cv.ellipse(x, y, 0.38, 0.23, ang), p["col_head"], _PID["head"])
    ex, ey = _rot(ang, 0.08, 0.08)
    cv.paint(cv.disc(x + ex, y + ey, 0.06), _eye_colour(p["col_head"]), _PID["head"], outline=False)


def quad_body(cv, p, x, y, ang, neck=None):
    if neck is not None:
        cv.paint(cv.capsule(x + 0.8, y + 0.15, neck[0], neck[1], 0.22, 0.15), p["col_body"], _PID["body"])
    cv.paint(cv.ellipse(x, y, 1.15, 0.45, ang), p["col_body"], _PID["body"])


def quad_tail(cv, p, x, y, ang):
    tx, ty = _rot(ang, 0.85, 0.0)
    cv.paint(cv.capsule(x, y, x + tx, y + ty, 0.07, 0.05), p["col_tail"], _PID["tail"])


def quad_leg(cv, p, x, y, ang, shade=1.0):
    lx, ly = _rot(ang, 0.95, 0.0)
    cv.paint(cv.capsule(x, y, x + lx, y + ly, 0.11, 0.09), p["col_legs"] * _F(shade), _PID["legs"])


class Quadruped:
    name, scale, centre = "quadruped", (0.14, 0.175), (0.0, -0.05)
    _hips = ((0.72, -0.25), (0.45, -0.25), (-0.5, -0.25), (-0.8, -0.25))  # near, far, far, near
    _tail = (-1.05, 0.2)

    @staticmethod
    def sample(rng, m):
        p = {"neck": _u(rng, -0.3, 0.3, m), "tail": _u(rng, -0.5, 0.5, m),
             "col_body": _cols(rng, m), "col_head": _cols(rng, m), "col_tail": _cols(rng, m),
             "col_legs": _cols(rng, m)}
        for i in range(4):
            p[f"leg{i}"] = _u(rng, -0.3, 0.3, m)
        same = rng.random(m) < 0.5
        p["col_head"] = np.where(same[:, None], p["col_body"], p["col_head"])
        return p

    @classmethod
    def geometry(cls, p):
        nx, ny = _rot(1.0 + p["neck"], 0.75, 0.0)
        neck = (0.85 + nx, 0.2 + ny)
        head_ang = -0.4 + 0.5 * p["neck"]
        ox, oy = _rot(head_ang, 0.12, 0.0)
        head = (neck[0] + ox, neck[1] + oy)
        legs = [(h, -_PI / 2 + p[f"leg{i}"]) for i, h in enumerate(cls._hips)]
        return neck, head, head_ang, legs, _PI + 0.5 + p["tail"]

    @classmethod
    def draw(cls, cv, p):
        neck, head, head_ang, legs, tail_ang = cls.geometry(p)
        for i in (1, 2):
            quad_leg(cv, p, *legs[i][0], legs[i][1], shade=0.7)
        quad_tail(cv, p, *cls._tail, tail_ang)
        for i in (0, 3):
            quad_leg(cv, p, *legs[i][0], legs[i][1])
        quad_body(cv, p, 0.0, 0.0, 0.0, neck=neck)
        quad_head(cv, p, head[0], head[1], head_ang)

    @classmethod
    def landmarks(cls, p):
        neck, head, head_ang, legs, tail_ang = cls.geometry(p)
        tx, ty = _rot(tail_ang, 0.78, 0.0)
        feet = []
        for i in (0, 3):
            (hx, hy), ang = legs[i]
            fx, fy = _rot(ang, 0.95, 0.0)
            feet.append((hx + fx, hy + fy))
        z = np.zeros_like(p["neck"])
        return {"quad_head": head, "quad_back": (z + 0.1, z + 0.28),
                "quad_tail_tip": (cls._tail[0] + tx, cls._tail[1] + ty),
                "quad_front_foot": feet[0], "quad_rear_foot": feet[1]}

    kinds = {"quad_head": (quad_head, (0.0, 0.0), -0.4), "quad_body": (quad_body, (0.0, 0.0), 0.0),
             "quad_tail": (quad_tail, (-0.4, 0.0), 0.0), "quad_leg": (quad_leg, (0.0, 0.45), -np.pi / 2)}


# -------------------------------------------------------------------------------------- wheels
def cart_frame(cv, p, x, y, ang):
    cv.paint(cv.box(x + p["cab"], y + 0.62, 0.45, 0.34, ang, 0.1), p["col_frame"], _PID["frame"])
    cv.paint(cv.box(x, y, 1.25, 0.3, ang, 0.08), p["col_frame"], _PID["frame"])
    cv.paint(cv.box(x + p["cab"] + 0.12, y + 0.66, 0.2, 0.16, ang, 0.04), _away(p["col_frame"], p["col_window"]), _PID["frame"],
             outline=False)


def wheel(cv, p, x, y, ang, part="wheel_front"):
    pid = _PID[part]
    cv.paint(cv.disc(x, y, 0.42, thin=False), p["col_tyre"], pid)
    cv.paint(cv.disc(x, y, 0.27, thin=False), _away(p["col_tyre"], p["col_rim"]), pid, outline=False)
    for k in range(3):
        sx, sy = _rot(p["spokes"] + ang + k * _PI / 3, 0.27, 0.0)
        cv.paint(cv.capsule(x - sx, y - sy, x + sx, y + sy, 0.035), p["col_tyre"], pid, outline=False)
    cv.paint(cv.disc(x, y, 0.09), p["col_tyre"], pid, outline=False)


class Wheels:
    name, scale, centre = "wheels", (0.17, 0.21), (0.0, 0.1)

    @staticmethod
    def sample(rng, m):
        p = {"base": _u(rng, 0.7, 0.86, m), "bounce0": _u(rng, -0.07, 0.07, m),
             "bounce1": _u(rng, -0.07, 0.07, m), "cab": _u(rng, 0.5, 0.7, m),
             "spokes": _u(rng, 0, np.pi, m), "col_frame": _cols(rng, m),
             "col_window": _cols(rng, m), "col_rim": _cols(rng, m),
             "col_tyre": rng.uniform(0.0, 0.3, (m, 3)).astype(_F)}
        return p

    @staticmethod
    def geometry(p):
        return (p["base"], -0.32 + p["bounce0"]), (-p["base"], -0.32 + p["bounce1"])

    @classmethod
    def draw(cls, cv, p):
        front, rear = cls.geometry(p)
        cart_frame(cv, p, 0.0, 0.0, 0.0)
        wheel(cv, p, *rear, 0.0, part="wheel_rear")
        wheel(cv, p, *front, 0.0, part="wheel_front")

    @classmethod
    def landmarks(cls, p):
        front, rear = cls.geometry(p)
        return {"wheel_front": front, "wheel_rear": rear, "cab": (p["cab"], 0.62 + 0 * p["cab"])}

    kinds = {"wheel": (wheel, (0.0, 0.0), 0.0), "cart_frame": (cart_frame, (0.0, -0.3), 0.0)}


# ------------------------------------------------------------------------------------- texture
class Texture:
    name, scale, centre = "texture", (0.2, 0.26), (0.1, 0.0)

    @staticmethod
    def sample(rng, m):
        return {"b": _u(rng, 0.55, 0.85, m), "x2": _u(rng, 0.2, 0.6, m), "y2": _u(rng, -0.3, 0.3, m),
                "r2": _u(rng, 0.45, 0.7, m), "pattern": rng.integers(0, 3, m),
                "period": _u(rng, 0.06, 0.09, m), "col_a": _cols(rng, m), "col_b": _cols(rng, m)}

    @staticmethod
    def draw(cv, p):
        d = np.minimum(cv.ellipse(0.0, 0.0, 1.0, p["b"]), cv.disc(p["x2"], p["y2"], p["r2"], thin=False))
        cv.paint(d, p["col_a"], _PID["texture"], outline=False)
        period = np.maximum(p["period"] * cv.S, _F(3.5)).reshape(-1, 1, 1) / cv.s  # object units
        gx, gy = cv.X / period, cv.Y / period
        dots = np.sqrt((gx - np.round(gx)) ** 2 + (gy - np.round(gy)) ** 2) - 0.3  # periods
        checker = -np.sin(_PI * gx) * np.sin(_PI * gy) * 0.5
        stripes = -np.sin(2 * _PI * gx) * 0.25
        pat = np.select([p["pattern"].reshape(-1, 1, 1) == k for k in range(2)], [dots, checker], stripes)
        cover = np.clip(0.5 - pat * period * cv.s, 0.0, 1.0)  # soft pattern edge in pixels
        cv.paint(d, _away(p["col_a"], p["col_b"]), None, outline=False, alpha_mul=cover)

    @staticmethod
    def landmarks(p):
        return {}

    kinds: Dict[str, Tuple[Callable, Tuple[float, float], float]] = {}


MODELS = {m.name: m for m in (Bird, Quadruped, Wheels, Texture)}
CATEGORIES = tuple(MODELS)


def scatter_kinds(categories) -> List[Tuple[str, str]]:
    """(category, kind) pairs available for the scattered parts of negative images."""
    return [(c, k) for c in categories for k in MODELS[c].kinds]


def draw_scattered(cv, category: str, kind: str, p) -> None:
    """Draw one part of ``category`` alone, centred on the frame origin."""
    fn, (ox, oy), ang = MODELS[category].kinds[kind]
    fn(cv, p, ox, oy, ang)
