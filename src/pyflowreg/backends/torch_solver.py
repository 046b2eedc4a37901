"""Red-black SOR level solver of the torch backend, vectorised over a batch of frames.

Mirrors :func:`pyflowreg.core.solver.sor_solve`: the unknowns are the total flow ``U = u + du``,
``V = v + dv`` on all level pixels, only interior pixels are updated, the ghost frame is set by
Neumann copy before every half-sweep, and the robust weights are lagged (refreshed every
``update_lag`` sweeps from sweep 0). A half-sweep evaluates the update on the whole interior and
applies it on one colour through a masked step size, so every operation is one elementwise kernel
over ``(T, h-2, w-2)``; no host round trip happens inside the sweep loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .torch_kernels import EPS


class SolverSettings(NamedTuple):
    """Scalars of one level solve."""

    alpha_x: float
    alpha_y: float
    hx: float
    hy: float
    iterations: int
    update_lag: int
    a_data: float
    a_smooth: float
    omega: float


def neumann_(a: torch.Tensor) -> None:
    """Copy the first/last interior rows, then columns, into the ghost frame of ``a`` (T, h, w)."""
    a[:, 0, :] = a[:, 1, :]
    a[:, -1, :] = a[:, -2, :]
    a[:, :, 0] = a[:, :, 1]
    a[:, :, -1] = a[:, :, -2]


def _interior(a: torch.Tensor) -> torch.Tensor:
    return a[:, 1:-1, 1:-1]


def _neighbours(a: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Left, right, up, down neighbours of the interior of ``a`` (T, h, w)."""
    return a[:, 1:-1, :-2], a[:, 1:-1, 2:], a[:, :-2, 1:-1], a[:, 2:, 1:-1]


def _data_weights(J, wts, dU, dV, a_data):
    """``A11, A22, A12, A13, A23`` = sum over channels of ``w_k psi_k J_k`` (interior)."""
    du = dU.unsqueeze(1)
    dv = dV.unsqueeze(1)
    j11, j22, j33, j12, j13, j23 = J
    s2 = (j11 * du).add_(j12 * dv, alpha=2.0).add_(j13, alpha=2.0).mul_(du)
    s2.add_((j22 * dv).add_(j23, alpha=2.0).mul_(dv)).add_(j33)
    psi = s2.clamp_min_(0.0).add_(EPS).pow_(a_data - 1.0).mul_(wts).mul_(a_data)
    return tuple((psi * j).sum(dim=1) for j in (j11, j22, j12, j13, j23))


def _smooth_weights(U, V, s: SolverSettings) -> torch.Tensor:
    """Lagged robust smoothness weights ``psi_s`` (T, h, w) from central differences."""
    sx = 0.5 / s.hx
    sy = 0.5 / s.hy
    psi = torch.empty_like(U)
    g = torch.zeros_like(_interior(U))
    for a in (U, V):
        left, right, up, down = _neighbours(a)
        g.add_((right - left).mul_(sx).square_()).add_((down - up).mul_(sy).square_())
    _interior(psi).copy_(g.add_(EPS).pow_(s.a_smooth - 1.0).mul_(s.a_smooth))
    neumann_(psi)
    return psi


def sor_solve(
    J: torch.Tensor,
    wts: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    s: SolverSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve one level for the total flow of a batch; returns ``(U, V)`` (T, h, w).

    Parameters
    ----------
    J : Tensor
        Interior motion tensors ``(6, T, C, h-2, w-2)`` (J11, J22, J33, J12, J13, J23).
    wts : Tensor
        Interior data weights ``(1 or T, C, h-2, w-2)``.
    u, v : Tensor
        Flow on entry ``(T, h, w)`` in full-resolution pixels.
    s : SolverSettings
    """
    t, h, w = u.shape
    U = u.clone()
    V = v.clone()
    if h < 3 or w < 3:
        return U, V
    ui, vi = _interior(u), _interior(v)
    Ui, Vi = _interior(U), _interior(V)
    cx = s.alpha_x / (s.hx * s.hx)
    cy = s.alpha_y / (s.hy * s.hy)
    rho = cy / cx
    robust = s.a_smooth < 1.0
    ii = torch.arange(1, h - 1, device=u.device).view(-1, 1)
    jj = torch.arange(1, w - 1, device=u.device).view(1, -1)
    red = ((ii + jj) % 2 == 0).to(u.dtype)
    masks = (red, 1.0 - red)
    nb = torch.empty_like(Ui)
    for it in range(s.iterations):
        if it % s.update_lag == 0:
            a11, a22, a12, a13, a23 = _data_weights(J, wts, Ui - ui, Vi - vi, s.a_data)
            if robust:
                neumann_(U)
                neumann_(V)
                psi = _smooth_weights(U, V, s)
                p = _interior(psi)
                pl, pr, pu, pd = _neighbours(psi)
                coef = ((p + pl).mul_(0.5 * cx), (p + pr).mul_(0.5 * cx))
                coef += ((p + pu).mul_(0.5 * cy), (p + pd).mul_(0.5 * cy))
                S = coef[0] + coef[1] + coef[2] + coef[3]
                scale = 1.0
            else:
                # constant weights: everything is divided by cx so that the left/right
                # neighbours enter with weight 1 and up/down with cy / cx
                S = 2.0 + 2.0 * rho
                scale = 1.0 / cx
                a11, a22, a12, a13, a23 = (a * scale for a in (a11, a22, a12, a13, a23))
            bu = (a11 * ui).addcmul_(a12, vi).sub_(a13)
            bv = (a22 * vi).addcmul_(a12, ui).sub_(a23)
            du_den = a11.add_(S)
            dv_den = a22.add_(S)
            ku = torch.reciprocal(du_den).mul_(s.omega)
            kv = torch.reciprocal(dv_den).mul_(s.omega)
            k_u = [ku * m for m in masks]
            k_v = [kv * m for m in masks]
        for color in (0, 1):
            neumann_(U)
            neumann_(V)
            for X, Xi, b, den, k, other in (
                (U, Ui, bu, du_den, k_u, Vi),
                (V, Vi, bv, dv_den, k_v, Ui),
            ):
                left, right, up, down = _neighbours(X)
                if robust:
                    torch.mul(coef[0], left, out=nb)
                    nb.addcmul_(coef[1], right).addcmul_(coef[2], up).addcmul_(coef[3], down)
                else:
                    torch.add(left, right, out=nb)
                    nb.add_(up, alpha=rho).add_(down, alpha=rho)
                nb.add_(b).addcmul_(a12, other, value=-1.0).addcmul_(den, Xi, value=-1.0)
                Xi.addcmul_(k[color], nb)
    neumann_(U)
    neumann_(V)
    return U, V
