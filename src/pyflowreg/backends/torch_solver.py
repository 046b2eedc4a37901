"""Red-black SOR level solver of the torch backend, vectorised over a batch of frames.

Mirrors :func:`pyflowreg.core.solver.sor_solve`: the unknowns are the total flow ``U = u + du``,
``V = v + dv`` on a level's grid, which is the frame plus a one-pixel ghost ring (see
:func:`pad_edge` and :func:`pyflowreg.core.flow.level_step`), so every frame pixel is an interior
pixel of the grid; only interior pixels are updated, the ghost frame is set by
Neumann copy before every half-sweep, and the robust weights are lagged (refreshed every
``update_lag`` sweeps from sweep 0). A half-sweep evaluates the update on the whole interior and
applies it on one colour through a masked step size, so every operation is one elementwise kernel
over ``(T, h-2, w-2)``; no host round trip happens inside the sweep loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

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


def pad_edge(flow: torch.Tensor) -> torch.Tensor:
    """``flow`` (T, 2, h, w) with a one-pixel ring repeating its border (the solver's grid;
    :func:`pyflowreg.core.flow.pad_edge`)."""
    return F.pad(flow, (1, 1, 1, 1), mode="replicate")


def neumann_(a: torch.Tensor) -> None:
    """Copy the first/last interior rows, then columns, into the ghost frame of ``a`` (T, h, w)."""
    a[:, 0, :] = a[:, 1, :]
    a[:, -1, :] = a[:, -2, :]
    a[:, :, 0] = a[:, :, 1]
    a[:, :, -1] = a[:, :, -2]


def _neumann4(a: torch.Tensor) -> None:
    """Ghost-frame copy for a stacked ``(T, K, h, w)`` tensor."""
    a[..., 0, :] = a[..., 1, :]
    a[..., -1, :] = a[..., -2, :]
    a[..., :, 0] = a[..., :, 1]
    a[..., :, -1] = a[..., :, -2]


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
        Interior motion tensors ``(6, T, C, h-2, w-2)`` (J11, J22, J33, J12, J13, J23); J is
        zero on the ghost frame, which is therefore not stored.
    wts : Tensor
        Interior data weights ``(1 or T, C, h-2, w-2)``.
    u, v : Tensor
        Flow on entry ``(T, h, w)`` in full-resolution pixels, on the whole grid (a level's
        flow padded by :func:`pad_edge`: the frame is the interior).
    s : SolverSettings

    Notes
    -----
    ``U`` and ``V`` live in one ``(T, 2, h, w)`` tensor so that one set of ghost copies and one
    neighbour sum serve both. With ``K = omega * mask / (S + A11)`` and ``F = 1 - omega * mask``
    the SOR step ``U <- (1 - omega) U + omega U*`` on the pixels of one colour reads
    ``U <- F U + K (sum_q c_q U_q + A11 u + A12 v - A13) - K A12 V`` (likewise for ``V`` with the
    new ``U``). With constant smoothness weights everything is divided by ``c_x`` beforehand.
    """
    h, w = u.shape[1:]
    UV = torch.stack((u, v), dim=1)
    if h < 3 or w < 3:
        return UV[:, 0], UV[:, 1]
    uvi = UV[..., 1:-1, 1:-1].clone()
    ui, vi = uvi[:, 0], uvi[:, 1]
    inner = UV[..., 1:-1, 1:-1]
    Ui, Vi = inner[:, 0], inner[:, 1]
    left, right, up, down = (
        UV[..., 1:-1, :-2],
        UV[..., 1:-1, 2:],
        UV[..., :-2, 1:-1],
        UV[..., 2:, 1:-1],
    )
    cx = s.alpha_x / (s.hx * s.hx)
    cy = s.alpha_y / (s.hy * s.hy)
    rho = cy / cx
    robust = s.a_smooth < 1.0
    ii = torch.arange(1, h - 1, device=u.device).view(-1, 1)
    jj = torch.arange(1, w - 1, device=u.device).view(1, -1)
    red = ((ii + jj) % 2 == 0).to(u.dtype)
    masks = (red, 1.0 - red)
    keep = [1.0 - s.omega * m for m in masks]
    nb = torch.empty_like(uvi)
    for it in range(s.iterations):
        if it % s.update_lag == 0:
            a11, a22, a12, a13, a23 = _data_weights(J, wts, Ui - ui, Vi - vi, s.a_data)
            if robust:
                _neumann4(UV)
                psi = _smooth_weights(UV[:, 0], UV[:, 1], s)
                p = _interior(psi)
                pl, pr, pu, pd = _neighbours(psi)
                coef = [(p + q).mul_(0.5 * c).unsqueeze(1) for q, c in
                        ((pl, cx), (pr, cx), (pu, cy), (pd, cy))]  # fmt: skip
                S = coef[0] + coef[1] + coef[2] + coef[3]
                S = S[:, 0]
            else:
                S = 2.0 + 2.0 * rho
                a11, a22, a12, a13, a23 = (a / cx for a in (a11, a22, a12, a13, a23))
            b = torch.stack(
                ((a11 * ui).addcmul_(a12, vi).sub_(a13), (a22 * vi).addcmul_(a12, ui).sub_(a23)),
                dim=1,
            )
            ku = torch.reciprocal(a11.add_(S)).mul_(s.omega)
            kv = torch.reciprocal(a22.add_(S)).mul_(s.omega)
            k_u = [ku * m for m in masks]
            k_v = [kv * m for m in masks]
            ka_u = [k * a12 for k in k_u]
            ka_v = [k * a12 for k in k_v]
        for color in (0, 1):
            _neumann4(UV)
            if robust:
                torch.mul(coef[0], left, out=nb)
                nb.addcmul_(coef[1], right).addcmul_(coef[2], up).addcmul_(coef[3], down)
            else:
                torch.add(left, right, out=nb)
                nb.add_(up, alpha=rho).add_(down, alpha=rho)
            nb.add_(b)
            Ui.mul_(keep[color]).addcmul_(k_u[color], nb[:, 0]).addcmul_(
                ka_u[color], Vi, value=-1.0
            )
            Vi.mul_(keep[color]).addcmul_(k_v[color], nb[:, 1]).addcmul_(
                ka_v[color], Ui, value=-1.0
            )
    _neumann4(UV)
    return UV[:, 0], UV[:, 1]
