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
def _refresh_data(J, wts, U, V, u, v, a_data, A):
    """Lagged data weights: ``A = sum_k w_k psi_k J_k`` for J11, J22, J12, J13, J23."""
    c = J.shape[0]
    h, w = U.shape
    A[:] = 0.0
    eps = U.dtype.type(EPS)
    a = U.dtype.type(a_data)
    expo = U.dtype.type(a_data - 1.0)
    two = U.dtype.type(2.0)
    for ch in range(c):
        for i in range(1, h - 1):
            for j in range(1, w - 1):
                du = U[i, j] - u[i, j]
                dv = V[i, j] - v[i, j]
                j11 = J[ch, 0, i, j]
                j22 = J[ch, 1, i, j]
                j12 = J[ch, 3, i, j]
                j13 = J[ch, 4, i, j]
                j23 = J[ch, 5, i, j]
                s2 = (
                    j11 * du * du
                    + j22 * dv * dv
                    + two * (j12 * du * dv + j13 * du + j23 * dv)
                    + J[ch, 2, i, j]
                )
                if s2 < 0:
                    s2 = 0
                psi = wts[ch, i, j] * a * (s2 + eps) ** expo
                A[0, i, j] += psi * j11
                A[1, i, j] += psi * j22
                A[2, i, j] += psi * j12
                A[3, i, j] += psi * j13
                A[4, i, j] += psi * j23


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


@njit(cache=True, nogil=True, inline="always")
def _get(red, black, i, j):
    return red[i, j >> 1] if ((i + j) & 1) == 0 else black[i, j >> 1]


@njit(cache=True, nogil=True, inline="always")
def _set(red, black, i, j, value):
    if ((i + j) & 1) == 0:
        red[i, j >> 1] = value
    else:
        black[i, j >> 1] = value


@njit(cache=True, nogil=True)
def _neumann_packed(red, black, w):
    """Ghost-frame copy (rows, then columns) on a packed pair of width ``w`` pixels."""
    h = red.shape[0]
    for j in range(w):
        _set(red, black, 0, j, _get(red, black, 1, j))
        _set(red, black, h - 1, j, _get(red, black, h - 2, j))
    for i in range(h):
        _set(red, black, i, 0, _get(red, black, i, 1))
        _set(red, black, i, w - 1, _get(red, black, i, w - 2))


@njit(cache=True, nogil=True)
def _coefficients(A, u, v, psi, cx, cy, robust, coef_r, coef_b):
    """Per-pixel constants of the sweep, packed: ``cu, cv, a12, 1/(S+a11), 1/(S+a22)``.

    ``cu = a11 u + a12 v - a13`` and ``cv = a22 v + a12 u - a23`` collect the parts of the update
    that do not change between refreshes of the lagged weights.
    """
    h, w = u.shape
    half = u.dtype.type(0.5)
    one = u.dtype.type(1.0)
    for i in range(1, h - 1):
        p = i & 1
        for j in range(1, w - 1):
            a11 = A[0, i, j]
            a22 = A[1, i, j]
            a12 = A[2, i, j]
            if robust:
                q = psi[i, j]
                S = half * cx * (q + q + psi[i, j - 1] + psi[i, j + 1])
                S += half * cy * (q + q + psi[i - 1, j] + psi[i + 1, j])
            else:
                S = cx + cx + cy + cy
            coef = coef_r if (j & 1) == p else coef_b
            k = j >> 1
            coef[0, i, k] = a11 * u[i, j] + a12 * v[i, j] - A[3, i, j]
            coef[1, i, k] = a22 * v[i, j] + a12 * u[i, j] - A[4, i, j]
            coef[2, i, k] = a12
            coef[3, i, k] = one / (S + a11)
            coef[4, i, k] = one / (S + a22)


@njit(cache=True, nogil=True)
def _half_sweep(Uo, Vo, Un, Vn, coef, pso, psn, cx, cy, omega, colour, w, robust):
    """Update the pixels of one colour (own arrays ``Uo``, ``Vo``) from the other colour's."""
    h = Uo.shape[0]
    half = Uo.dtype.type(0.5)
    keep = Uo.dtype.type(1.0) - omega
    for i in range(1, h - 1):
        q = (i + colour) & 1  # column parity of this colour's pixels in row i
        k0 = 1 - q
        k1 = (w - 2 - q) >> 1
        Ui = Uo[i]
        Vi = Vo[i]
        Nu = Un[i]
        Nv = Vn[i]
        Nuu = Un[i - 1]
        Nud = Un[i + 1]
        Nvu = Vn[i - 1]
        Nvd = Vn[i + 1]
        cu = coef[0, i]
        cv = coef[1, i]
        a12 = coef[2, i]
        i11 = coef[3, i]
        i22 = coef[4, i]
        if robust:
            po = pso[i]
            pn = psn[i]
            pnu = psn[i - 1]
            pnd = psn[i + 1]
            for k in range(k0, k1 + 1):
                lft = k - 1 + q
                rgt = k + q
                cl = half * cx * (po[k] + pn[lft])
                cr = half * cx * (po[k] + pn[rgt])
                cup = half * cy * (po[k] + pnu[k])
                cdn = half * cy * (po[k] + pnd[k])
                su = cl * Nu[lft] + cr * Nu[rgt] + cup * Nuu[k] + cdn * Nud[k]
                up = keep * Ui[k] + omega * (su + cu[k] - a12[k] * Vi[k]) * i11[k]
                Ui[k] = up
                sv = cl * Nv[lft] + cr * Nv[rgt] + cup * Nvu[k] + cdn * Nvd[k]
                Vi[k] = keep * Vi[k] + omega * (sv + cv[k] - a12[k] * up) * i22[k]
        else:
            for k in range(k0, k1 + 1):
                su = cx * (Nu[k - 1 + q] + Nu[k + q]) + cy * (Nuu[k] + Nud[k])
                up = keep * Ui[k] + omega * (su + cu[k] - a12[k] * Vi[k]) * i11[k]
                Ui[k] = up
                sv = cx * (Nv[k - 1 + q] + Nv[k + q]) + cy * (Nvu[k] + Nvd[k])
                Vi[k] = keep * Vi[k] + omega * (sv + cv[k] - a12[k] * up) * i22[k]


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
    A = np.zeros((5, h, w), dt)
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
            _refresh_data(J, wts, U, V, u, v, a_data, A)
            if robust:
                _neumann(U)
                _neumann(V)
                _refresh_smooth(U, V, hx, hy, a_smooth, psi)
                _pack(psi, pr, pb)
            _coefficients(A, u, v, psi, cx, cy, robust, coef_r, coef_b)
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
