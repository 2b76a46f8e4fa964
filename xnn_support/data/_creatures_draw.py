"""Vectorised signed-distance rasteriser behind :func:`xnn_support.data.creatures`.

Serves the synthetic "creatures" data of papers 01 (explanatory graph, spec section 7) and 02
(interpretable CNN, spec section 7). A :class:`Canvas` holds a batch of B images (B,3,S,S), a
part-label map (B,S,S) and, once :meth:`Canvas.set_frame` is called, the coordinates of every
pixel in a per-image *object frame* (x forward along the facing direction, y up, unit = one
"body unit" of ``s`` pixels). Every primitive (disc, ellipse, tapered capsule, rounded box) is a
signed distance evaluated on the whole (B,S,S) grid at once, so a batch of creatures with
different poses and articulations is drawn with a handful of numpy array operations per part --
no per-pixel and no per-image Python loop.

Conventions (shared with the rest of ``xnn_support.data``):

* pixel (i, j) has its centre at (row, col) = (i, j); landmarks use the same coordinates;
* object frame -> image: ``col = cc + s*(cos t * f*x - sin t * y)``,
  ``row = cr - s*(sin t * f*x + cos t * y)`` with flip ``f`` in {+1, -1} applied *before* the
  rotation ``t`` (so mirroring a pose is ``f -> -f, t -> -t, cc -> S-1-cc``);
* a pixel belongs to a primitive when its signed distance is <= 0; painting uses a one-pixel
  soft edge (``alpha = clip(0.5 - d, 0, 1)``), so masks are exactly the ``alpha >= 0.5`` pixels;
* the label map keeps the *visible* part (later primitives overwrite earlier ones), hence the
  part masks of one image are disjoint and a landmark counts as visible only if its pixel carries
  its part's label.

Design notes: thin primitives get a minimum radius of 0.75 px, so that at 32 px a leg is still
one pixel wide and a landmark on its centre line always rounds to a pixel inside it. The ellipse
distance is the first-order approximation ``(k - 1) / |grad k|`` (exact on the boundary, which is
all the soft edge needs). Everything is float32.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Canvas", "MIN_RADIUS_PX"]

MIN_RADIUS_PX = 0.75  # thin parts never get thinner than this (pixels)
_F = np.float32


def _col(v, b):
    """Broadcast a scalar or (B,) parameter to (B,1,1) float32."""
    a = np.asarray(v, dtype=_F)
    if a.ndim == 0:
        return a.reshape(1, 1, 1)
    if a.shape != (b,):
        raise ValueError(f"parameter has shape {a.shape}, expected () or ({b},)")
    return a.reshape(b, 1, 1)


class Canvas:
    """A batch of RGB images plus a part-label map, drawn into in a per-image object frame.

    ``img`` (B,3,S,S) float32 and ``label`` (B,S,S) int8 (0 = background, p + 1 = part p) are
    modified in place. Call :meth:`set_frame` before drawing; it may be called again to draw a
    second object (a scattered part of a negative image) with another pose.
    """

    def __init__(self, img: np.ndarray, label: np.ndarray, outline_px: float = 1.0):
        self.img, self.label = img, label
        self.B, self.S = img.shape[0], img.shape[-1]
        self.outline_px = float(outline_px)
        r = np.arange(self.S, dtype=_F)
        self._rows, self._cols = r.reshape(1, -1, 1), r.reshape(1, 1, -1)
        self.X = self.Y = self.s = None

    # -- frame ---------------------------------------------------------------------------------
    def set_frame(self, cr, cc, s, theta, flip) -> None:
        """Object frame of each image: origin at pixel (cr, cc), ``s`` px per unit, rotation
        ``theta`` (radians, counter-clockwise on screen), ``flip`` +1 (facing right) or -1."""
        B = self.B
        cr, cc, s, th, f = (_col(v, B) for v in (cr, cc, s, theta, flip))
        u = (self._cols - cc) / s
        v = (cr - self._rows) / s
        c, sn = np.cos(th), np.sin(th)
        self.X = (c * u + sn * v) * f
        self.Y = -sn * u + c * v
        self.s = s

    def _local(self, cx, cy, ang=None):
        dx = self.X - _col(cx, self.B)
        dy = self.Y - _col(cy, self.B)
        if ang is None:
            return dx, dy
        a = _col(ang, self.B)
        c, sn = np.cos(a), np.sin(a)
        return c * dx + sn * dy, -sn * dx + c * dy

    # -- signed distances (pixels) -------------------------------------------------------------
    def disc(self, cx, cy, r, thin: bool = True):
        dx, dy = self._local(cx, cy)
        rp = _col(r, self.B) * self.s
        if thin:
            rp = np.maximum(rp, _F(MIN_RADIUS_PX))
        return np.sqrt(dx * dx + dy * dy) * self.s - rp

    def ellipse(self, cx, cy, a, b, ang=0.0):
        lx, ly = self._local(cx, cy, ang)
        a, b = _col(a, self.B), _col(b, self.B)
        qx, qy = lx / a, ly / b
        k = np.sqrt(qx * qx + qy * qy)
        gx, gy = qx / a, qy / b
        g = np.sqrt(gx * gx + gy * gy) / np.maximum(k, _F(1e-6))
        return (k - 1.0) / np.maximum(g, _F(1e-6)) * self.s

    def capsule(self, x0, y0, x1, y1, r0, r1=None):
        """Segment (x0,y0)-(x1,y1) with radius r0 at the start and r1 at the end (a cone)."""
        B = self.B
        x0, y0, x1, y1 = (_col(v, B) for v in (x0, y0, x1, y1))
        r0 = _col(r0, B)
        r1 = r0 if r1 is None else _col(r1, B)
        bx, by = x1 - x0, y1 - y0
        px, py = self.X - x0, self.Y - y0
        h = np.clip((px * bx + py * by) / np.maximum(bx * bx + by * by, _F(1e-9)), 0.0, 1.0)
        ex, ey = px - h * bx, py - h * by
        rp = np.maximum((r0 + (r1 - r0) * h) * self.s, _F(MIN_RADIUS_PX))
        return np.sqrt(ex * ex + ey * ey) * self.s - rp

    def box(self, cx, cy, hw, hh, ang=0.0, rnd=0.0):
        lx, ly = self._local(cx, cy, ang)
        rnd = _col(rnd, self.B)
        qx = np.abs(lx) - _col(hw, self.B) + rnd
        qy = np.abs(ly) - _col(hh, self.B) + rnd
        out = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
        return (out + np.minimum(np.maximum(qx, qy), 0.0) - rnd) * self.s

    # -- painting ------------------------------------------------------------------------------
    def paint(self, d, colour, part: int | None, outline: bool = True, alpha_mul=None) -> None:
        """Composite ``colour`` (B,3) where the signed distance ``d`` (B,S,S, px) is inside.

        ``part``: label written where ``d <= 0`` (part index + 1; 0 clears to background;
        None leaves the label map alone). ``outline`` darkens a thin band inside the edge so that
        touching parts of one colour stay visually separable. ``alpha_mul`` (B,S,S) modulates
        the coverage (used for texture patterns).
        """
        alpha = np.clip(_F(0.5) - d, 0.0, 1.0)
        if alpha_mul is not None:
            alpha = alpha * alpha_mul
        col = np.asarray(colour, dtype=_F).reshape(self.B, 3, 1, 1)
        if outline:
            band = np.clip(_F(1.0) + d / _F(self.outline_px), 0.0, 1.0)  # 1 at the edge, 0 inside
            col = col * (_F(1.0) - _F(0.55) * band)[:, None]
        self.img += alpha[:, None] * (col - self.img)
        if part is not None:
            self.label[d <= 0] = part

    def pixel_grid(self):
        """Row and column index grids (1,S,1) and (1,1,S) float32."""
        return self._rows, self._cols
