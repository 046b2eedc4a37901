"""Level solver: red-black SOR with lagged robust weights, and the 5x5 median of increments.

The unknowns are the total flow ``U = u + du``, ``V = v + dv`` (see docs/numerics.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .pyramid import mirror

EPS = 1e-5


@njit(cache=True, nogil=True, inline="always")
def _neumann(a):
    """Copy the first/last interior rows, then columns, into the ghost frame of ``a`` (h, w)."""
    h, w = a.shape
    for j in range(w):
        a[0, j] = a[1, j]
        a[h - 1, j] = a[h - 2, j]
    for i in range(h):
        a[i, 0] = a[i, 1]
        a[i, w - 1] = a[i, w - 2]


@njit(cache=True, nogil=True)
def _refresh(J, wts, U, V, u, v, a_data, psi, cx, cy, robust, coef_r, coef_b, acc):
    """Refresh the lagged data weights and the packed per-pixel constants of the sweeps.

    With ``psi_k = w_k a (theta^T J_k theta + eps)^(a - 1)`` and ``A = sum_k psi_k J_k``
    (J11, J22, J12, J13, J23), store per pixel ``cu = a11 u + a12 v - a13``,
    ``cv = a22 v + a12 u - a23``, ``a12``, ``1 / (S + a11)`` and ``1 / (S + a22)`` in the packed
    arrays of its colour. Row by row through ``acc`` (6, w), so the arithmetic vectorises and
    only the power is scalar.
    """
    c = J.shape[0]
    h, w = U.shape
    dt = U.dtype.type
    eps = dt(EPS)
    a = dt(a_data)
    expo = dt(a_data - 1.0)
    two = dt(2.0)
    half = dt(0.5)
    one = dt(1.0)
    zero = dt(0.0)
    for i in range(1, h - 1):
        for ch in range(c):
            for j in range(1, w - 1):
                du = U[i, j] - u[i, j]
                dv = V[i, j] - v[i, j]
                s2 = (
                    J[ch, 0, i, j] * du * du
                    + J[ch, 1, i, j] * dv * dv
                    + two * (J[ch, 3, i, j] * du * dv + J[ch, 4, i, j] * du + J[ch, 5, i, j] * dv)
                    + J[ch, 2, i, j]
                )
                acc[5, j] = s2 if s2 > zero else zero
            for j in range(1, w - 1):
                acc[5, j] = (acc[5, j] + eps) ** expo
            if ch == 0:
                for j in range(1, w - 1):
                    p = wts[ch, i, j] * a * acc[5, j]
                    acc[0, j] = p * J[ch, 0, i, j]
                    acc[1, j] = p * J[ch, 1, i, j]
                    acc[2, j] = p * J[ch, 3, i, j]
                    acc[3, j] = p * J[ch, 4, i, j]
                    acc[4, j] = p * J[ch, 5, i, j]
            else:
                for j in range(1, w - 1):
                    p = wts[ch, i, j] * a * acc[5, j]
                    acc[0, j] += p * J[ch, 0, i, j]
                    acc[1, j] += p * J[ch, 1, i, j]
                    acc[2, j] += p * J[ch, 3, i, j]
                    acc[3, j] += p * J[ch, 4, i, j]
                    acc[4, j] += p * J[ch, 5, i, j]
        S = cx + cx + cy + cy
        for colour in range(2):
            coef = coef_r if colour == 0 else coef_b
            q = (i + colour) & 1
            for k in range(1 - q, ((w - 2 - q) >> 1) + 1):
                j = 2 * k + q
                if robust:
                    r = psi[i, j]
                    S = half * cx * (r + r + psi[i, j - 1] + psi[i, j + 1])
                    S += half * cy * (r + r + psi[i - 1, j] + psi[i + 1, j])
                a12 = acc[2, j]
                coef[0, i, k] = acc[0, j] * u[i, j] + a12 * v[i, j] - acc[3, j]
                coef[1, i, k] = acc[1, j] * v[i, j] + a12 * u[i, j] - acc[4, j]
                coef[2, i, k] = a12
                coef[3, i, k] = one / (S + acc[0, j])
                coef[4, i, k] = one / (S + acc[1, j])


@njit(cache=True, nogil=True)
def _refresh_smooth(U, V, hx, hy, a_smooth, psi):
    """Lagged smoothness weights from central differences of the total flow."""
    h, w = U.shape
    dt = U.dtype.type
    sx = dt(0.5 / hx)
    sy = dt(0.5 / hy)
    eps = dt(EPS)
    a = dt(a_smooth)
    expo = dt(a_smooth - 1.0)
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            ux = (U[i, j + 1] - U[i, j - 1]) * sx
            uy = (U[i + 1, j] - U[i - 1, j]) * sy
            vx = (V[i, j + 1] - V[i, j - 1]) * sx
            vy = (V[i + 1, j] - V[i - 1, j]) * sy
            psi[i, j] = a * (ux * ux + uy * uy + vx * vx + vy * vy + eps) ** expo
    _neumann(psi)


# Red-black layout: pixel (i, j) has colour (i + j) % 2 and lives at column j // 2 of the packed
# array of its colour, shape (h, (w + 1) // 2). Within one colour every update is independent and
# the neighbours (other colour) sit at contiguous packed columns, so the sweeps vectorise.


@njit(cache=True, nogil=True)
def _pack(a, red, black):
    h, w = a.shape
    for i in range(h):
        p = i & 1
        for j in range(w):
            if (j & 1) == p:
                red[i, j >> 1] = a[i, j]
            else:
                black[i, j >> 1] = a[i, j]


@njit(cache=True, nogil=True)
def _unpack(red, black, a):
    h, w = a.shape
    for i in range(h):
        p = i & 1
        for j in range(w):
            a[i, j] = red[i, j >> 1] if (j & 1) == p else black[i, j >> 1]


@njit(cache=True, nogil=True)
def _neumann_packed(red, black, w):
    """Ghost-frame copy (rows, then columns) on a packed pair of width ``w`` pixels.

    Adjacent pixels have opposite colours and the same packed column ``j // 2`` along a column
    pair ``(2k, 2k + 1)``, so each copy moves values between the two arrays.
    """
    h, w2 = red.shape
    for k in range(w2):
        red[0, k] = black[1, k]
        black[0, k] = red[1, k]
        red[h - 1, k] = black[h - 2, k]
        black[h - 1, k] = red[h - 2, k]
    ka = (w - 1) >> 1
    kb = (w - 2) >> 1
    for i in range(h):
        if i & 1 == 0:
            red[i, 0] = black[i, 0]
        else:
            black[i, 0] = red[i, 0]
        if (i + w - 1) & 1 == 0:
            red[i, ka] = black[i, kb]
        else:
            black[i, ka] = red[i, kb]


@njit(cache=True, nogil=True)
def _half_sweep(Uo, Vo, Un, Vn, coef, pso, psn, cx, cy, omega, colour, w, robust):
    """Update the pixels of one colour (own arrays ``Uo``, ``Vo``) from the other colour's.

    Plain 2-D indexing (no row views: each view costs reference-count updates).
    """
    h = Uo.shape[0]
    half = Uo.dtype.type(0.5)
    keep = Uo.dtype.type(1.0) - omega
    for i in range(1, h - 1):
        q = (i + colour) & 1  # column parity of this colour's pixels in row i
        k0 = 1 - q
        k1 = (w - 2 - q) >> 1
        if robust:
            for k in range(k0, k1 + 1):
                lft = k - 1 + q
                rgt = k + q
                po = pso[i, k]
                cl = half * cx * (po + psn[i, lft])
                cr = half * cx * (po + psn[i, rgt])
                cup = half * cy * (po + psn[i - 1, k])
                cdn = half * cy * (po + psn[i + 1, k])
                su = cl * Un[i, lft] + cr * Un[i, rgt] + cup * Un[i - 1, k] + cdn * Un[i + 1, k]
                up = (
                    keep * Uo[i, k]
                    + omega * (su + coef[0, i, k] - coef[2, i, k] * Vo[i, k]) * (coef[3, i, k])
                )
                Uo[i, k] = up
                sv = cl * Vn[i, lft] + cr * Vn[i, rgt] + cup * Vn[i - 1, k] + cdn * Vn[i + 1, k]
                Vo[i, k] = (
                    keep * Vo[i, k]
                    + omega * (sv + coef[1, i, k] - coef[2, i, k] * up) * (coef[4, i, k])
                )
        else:
            for k in range(k0, k1 + 1):
                su = cx * (Un[i, k - 1 + q] + Un[i, k + q]) + cy * (Un[i - 1, k] + Un[i + 1, k])
                up = (
                    keep * Uo[i, k]
                    + omega * (su + coef[0, i, k] - coef[2, i, k] * Vo[i, k]) * (coef[3, i, k])
                )
                Uo[i, k] = up
                sv = cx * (Vn[i, k - 1 + q] + Vn[i, k + q]) + cy * (Vn[i - 1, k] + Vn[i + 1, k])
                Vo[i, k] = (
                    keep * Vo[i, k]
                    + omega * (sv + coef[1, i, k] - coef[2, i, k] * up) * (coef[4, i, k])
                )


@njit(cache=True, nogil=True)
def sor_solve(
    J, wts, u, v, alpha_x, alpha_y, hx, hy, iterations, update_lag, a_data, a_smooth, omega
):
    """Solve one level for the total flow; returns ``(U, V)`` (h, w).

    ``J`` (C, 6, h, w) motion tensors, ``wts`` (C, h, w) data weights, ``u``, ``v`` the flow on
    entry. Red-black SOR (red: ``(i + j) % 2 == 0`` first) with the lagged weights refreshed every
    ``update_lag`` sweeps. Nothing is solved on levels thinner than 3 px.
    """
    h, w = u.shape
    U = u.copy()
    V = v.copy()
    if h < 3 or w < 3:
        return U, V
    dt = u.dtype
    w2 = (w + 1) // 2
    acc = np.zeros((6, w), dt)
    psi = np.ones((h, w), dt)
    Ur = np.zeros((h, w2), dt)
    Ub = np.zeros((h, w2), dt)
    Vr = np.zeros((h, w2), dt)
    Vb = np.zeros((h, w2), dt)
    pr = np.ones((h, w2), dt)
    pb = np.ones((h, w2), dt)
    coef_r = np.zeros((5, h, w2), dt)
    coef_b = np.zeros((5, h, w2), dt)
    cx = dt.type(alpha_x / (hx * hx))
    cy = dt.type(alpha_y / (hy * hy))
    om = dt.type(omega)
    robust = a_smooth < 1.0
    _pack(U, Ur, Ub)
    _pack(V, Vr, Vb)
    for it in range(iterations):
        if it % update_lag == 0:
            if it > 0:
                _unpack(Ur, Ub, U)
                _unpack(Vr, Vb, V)
            if robust:
                _neumann(U)
                _neumann(V)
                _refresh_smooth(U, V, hx, hy, a_smooth, psi)
                _pack(psi, pr, pb)
            _refresh(J, wts, U, V, u, v, a_data, psi, cx, cy, robust, coef_r, coef_b, acc)
        _neumann_packed(Ur, Ub, w)
        _neumann_packed(Vr, Vb, w)
        _half_sweep(Ur, Vr, Ub, Vb, coef_r, pr, pb, cx, cy, om, 0, w, robust)
        _neumann_packed(Ur, Ub, w)
        _neumann_packed(Vr, Vb, w)
        _half_sweep(Ub, Vb, Ur, Vr, coef_b, pb, pr, cx, cy, om, 1, w, robust)
    _unpack(Ur, Ub, U)
    _unpack(Vr, Vb, V)
    _neumann(U)
    _neumann(V)
    return U, V


def _median_network(n: int = 25) -> np.ndarray:
    """Comparators ``(k, 2)`` of Batcher's odd-even merge sort for ``n`` values, pruned to those
    that influence the middle element: applied in order as (min, max) pairs they leave the median
    at index ``n // 2``. Branch-free, so the filter vectorises along image rows."""
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed = {n // 2}
    kept = []
    for a, b in reversed(pairs):
        if a in needed or b in needed:
            kept.append((a, b))
            needed |= {a, b}
    return np.array(kept[::-1], dtype=np.int64)


MEDIAN25 = _median_network(25)


@njit(cache=True, nogil=True)
def median5_kernel(a, network):
    h, w = a.shape
    out = np.empty_like(a)
    buf = np.empty((25, w), a.dtype)
    for i in range(h):
        n = 0
        for di in range(-2, 3):
            row = a[mirror(i + di, h)]
            for dj in range(-2, 3):
                for j in range(w):
                    jj = j + dj
                    if jj < 0 or jj >= w:
                        jj = mirror(jj, w)
                    buf[n, j] = row[jj]
                n += 1
        for k in range(network.shape[0]):
            p = buf[network[k, 0]]
            q = buf[network[k, 1]]
            for j in range(w):
                x = p[j]
                y = q[j]
                p[j] = x if x < y else y
                q[j] = y if x < y else x
        out[i] = buf[12]
    return out


def median5(a: np.ndarray) -> np.ndarray:
    """5x5 median filter of ``a`` (h, w) with symmetric borders (-1 -> 0, -2 -> 1)."""
    return median5_kernel(a, MEDIAN25)
