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
                    + 2.0 * j12 * du * dv
                    + 2.0 * j13 * du
                    + 2.0 * j23 * dv
                    + J[ch, 2, i, j]
                )
                if s2 < 0.0:
                    s2 = 0.0
                psi = wts[ch, i, j] * a_data * (s2 + EPS) ** (a_data - 1.0)
                A[0, i, j] += psi * j11
                A[1, i, j] += psi * j22
                A[2, i, j] += psi * j12
                A[3, i, j] += psi * j13
                A[4, i, j] += psi * j23


@njit(cache=True, nogil=True)
def _refresh_smooth(U, V, hx, hy, a_smooth, psi):
    """Lagged smoothness weights from central differences of the total flow."""
    h, w = U.shape
    sx = 0.5 / hx
    sy = 0.5 / hy
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            ux = (U[i, j + 1] - U[i, j - 1]) * sx
            uy = (U[i + 1, j] - U[i - 1, j]) * sy
            vx = (V[i, j + 1] - V[i, j - 1]) * sx
            vy = (V[i + 1, j] - V[i - 1, j]) * sy
            psi[i, j] = a_smooth * (ux * ux + uy * uy + vx * vx + vy * vy + EPS) ** (a_smooth - 1.0)
    _neumann(psi)


@njit(cache=True, nogil=True)
def _sweep_const(U, V, u, v, A, cx, cy, omega):
    """One red-black sweep with constant smoothness weights (a_smooth == 1)."""
    h, w = U.shape
    S = 2.0 * cx + 2.0 * cy
    for color in range(2):
        _neumann(U)
        _neumann(V)
        for i in range(1, h - 1):
            j0 = 1 if (i + 1) % 2 == color else 2
            for j in range(j0, w - 1, 2):
                a11 = A[0, i, j]
                a22 = A[1, i, j]
                a12 = A[2, i, j]
                su = cx * (U[i, j - 1] + U[i, j + 1]) + cy * (U[i - 1, j] + U[i + 1, j])
                u_star = (su + a11 * u[i, j] - a12 * (V[i, j] - v[i, j]) - A[3, i, j]) / (S + a11)
                up = (1.0 - omega) * U[i, j] + omega * u_star
                U[i, j] = up
                sv = cx * (V[i, j - 1] + V[i, j + 1]) + cy * (V[i - 1, j] + V[i + 1, j])
                v_star = (sv + a22 * v[i, j] - a12 * (up - u[i, j]) - A[4, i, j]) / (S + a22)
                V[i, j] = (1.0 - omega) * V[i, j] + omega * v_star


@njit(cache=True, nogil=True)
def _sweep_robust(U, V, u, v, A, psi, cx, cy, omega):
    """One red-black sweep with lagged robust smoothness weights ``psi``."""
    h, w = U.shape
    for color in range(2):
        _neumann(U)
        _neumann(V)
        for i in range(1, h - 1):
            j0 = 1 if (i + 1) % 2 == color else 2
            for j in range(j0, w - 1, 2):
                p = psi[i, j]
                cl = 0.5 * (p + psi[i, j - 1]) * cx
                cr = 0.5 * (p + psi[i, j + 1]) * cx
                cu = 0.5 * (p + psi[i - 1, j]) * cy
                cd = 0.5 * (p + psi[i + 1, j]) * cy
                S = cl + cr + cu + cd
                a11 = A[0, i, j]
                a22 = A[1, i, j]
                a12 = A[2, i, j]
                su = cl * U[i, j - 1] + cr * U[i, j + 1] + cu * U[i - 1, j] + cd * U[i + 1, j]
                u_star = (su + a11 * u[i, j] - a12 * (V[i, j] - v[i, j]) - A[3, i, j]) / (S + a11)
                up = (1.0 - omega) * U[i, j] + omega * u_star
                U[i, j] = up
                sv = cl * V[i, j - 1] + cr * V[i, j + 1] + cu * V[i - 1, j] + cd * V[i + 1, j]
                v_star = (sv + a22 * v[i, j] - a12 * (up - u[i, j]) - A[4, i, j]) / (S + a22)
                V[i, j] = (1.0 - omega) * V[i, j] + omega * v_star


@njit(cache=True, nogil=True)
def sor_solve(J, wts, u, v, alpha_x, alpha_y, hx, hy, iterations, update_lag, a_data, a_smooth, omega):
    """Solve one level for the total flow; returns ``(U, V)`` (h, w).

    ``J`` (C, 6, h, w) motion tensors, ``wts`` (C, h, w) data weights, ``u``, ``v`` the flow on
    entry. Nothing is solved on levels thinner than 3 px.
    """
    h, w = u.shape
    U = u.copy()
    V = v.copy()
    if h < 3 or w < 3:
        return U, V
    A = np.zeros((5, h, w), u.dtype)
    psi = np.ones((h, w), u.dtype)
    cx = alpha_x / (hx * hx)
    cy = alpha_y / (hy * hy)
    robust = a_smooth < 1.0
    for it in range(iterations):
        if it % update_lag == 0:
            _refresh_data(J, wts, U, V, u, v, a_data, A)
            if robust:
                _neumann(U)
                _neumann(V)
                _refresh_smooth(U, V, hx, hy, a_smooth, psi)
        if robust:
            _sweep_robust(U, V, u, v, A, psi, cx, cy, omega)
        else:
            _sweep_const(U, V, u, v, A, cx, cy, omega)
    _neumann(U)
    _neumann(V)
    return U, V


@njit(cache=True, nogil=True, inline="always")
def _select(buf, n, k):
    """k-th smallest of ``buf[:n]`` (in place, Hoare quickselect)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                tmp = buf[i]
                buf[i] = buf[j]
                buf[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return buf[k]


@njit(cache=True, nogil=True)
def median5(a):
    """5x5 median filter of ``a`` (h, w) with symmetric borders."""
    h, w = a.shape
    out = np.empty_like(a)
    buf = np.empty(25, a.dtype)
    for i in range(h):
        for j in range(w):
            n = 0
            if 2 <= i < h - 2 and 2 <= j < w - 2:
                for di in range(-2, 3):
                    for dj in range(-2, 3):
                        buf[n] = a[i + di, j + dj]
                        n += 1
            else:
                for di in range(-2, 3):
                    ii = mirror(i + di, h)
                    for dj in range(-2, 3):
                        buf[n] = a[ii, mirror(j + dj, w)]
                        n += 1
            out[i, j] = _select(buf, 25, 12)
    return out
