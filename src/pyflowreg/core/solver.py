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
def sor_solve(
    J, wts, u, v, alpha_x, alpha_y, hx, hy, iterations, update_lag, a_data, a_smooth, omega
):
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
