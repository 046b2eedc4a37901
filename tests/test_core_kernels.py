"""Numba kernels against slow, obvious NumPy references (docs/numerics.md)."""

import numpy as np
import pytest
from scipy import ndimage

from pyflowreg.core.pyramid import axis_depth, build_pyramid, cubic_taps, level_shapes, resize
from pyflowreg.core.solver import median5, sor_solve
from pyflowreg.core.tensors import GC, GRAY, derivatives, motion_tensor
from pyflowreg.core.warp import cubic_weights, level_coefficients, warp, warp_level


def naive_keys(d, a=-0.5):
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def naive_bspline(d):
    """The cubic B-spline: the piecewise cubic whose integer samples are 1/6, 2/3, 1/6."""
    d = abs(d)
    if d <= 1:
        return 2 / 3 - d**2 + d**3 / 2
    if d < 2:
        return (2 - d) ** 3 / 6
    return 0.0


def naive_resize_1d(x, n, kernel=naive_bspline):
    out = np.zeros(n)
    for i in range(n):
        s = (i + 0.5) * len(x) / n - 0.5
        x0 = int(np.floor(s))
        for k in range(-1, 3):
            out[i] += kernel(s - (x0 + k)) * x[min(max(x0 + k, 0), len(x) - 1)]
    return out


def naive_solver(J, wts, u, v, ax, ay, hx, hy, iterations, lag, a_data, a_smooth, omega):
    """Red-black SOR written pixel by pixel from docs/numerics.md (float64)."""
    U, V = u.copy(), v.copy()
    h, w = u.shape
    A = np.zeros((5, h, w))
    psi = np.ones((h, w))

    def neumann(a):
        a[0, :], a[-1, :] = a[1, :], a[-2, :]
        a[:, 0], a[:, -1] = a[:, 1], a[:, -2]

    for it in range(iterations):
        if it % lag == 0:
            du, dv = U - u, V - v
            A[:] = 0
            for k in range(J.shape[0]):
                j11, j22, j33, j12, j13, j23 = J[k]
                s2 = j11 * du**2 + j22 * dv**2 + 2 * j12 * du * dv + 2 * j13 * du
                s2 = np.maximum(s2 + 2 * j23 * dv + j33, 0)
                p = wts[k] * a_data * (s2 + 1e-5) ** (a_data - 1)
                A += p * np.stack([j11, j22, j12, j13, j23])
            A[:, [0, -1], :] = 0
            A[:, :, [0, -1]] = 0
            if a_smooth < 1:
                neumann(U)
                neumann(V)
                g = np.zeros((h, w))
                for i in range(1, h - 1):
                    for j in range(1, w - 1):
                        ux = (U[i, j + 1] - U[i, j - 1]) / (2 * hx)
                        uy = (U[i + 1, j] - U[i - 1, j]) / (2 * hy)
                        vx = (V[i, j + 1] - V[i, j - 1]) / (2 * hx)
                        vy = (V[i + 1, j] - V[i - 1, j]) / (2 * hy)
                        g[i, j] = ux**2 + uy**2 + vx**2 + vy**2
                psi = a_smooth * (g + 1e-5) ** (a_smooth - 1)
                neumann(psi)
        for color in (0, 1):
            neumann(U)
            neumann(V)
            for i in range(1, h - 1):
                for j in range(1, w - 1):
                    if (i + j) % 2 != color:
                        continue
                    nb = [(i, j - 1, ax / hx**2), (i, j + 1, ax / hx**2)]
                    nb += [(i - 1, j, ay / hy**2), (i + 1, j, ay / hy**2)]
                    c = [0.5 * (psi[i, j] + psi[a, b]) * f for a, b, f in nb]
                    S = sum(c)
                    su = sum(ci * U[a, b] for ci, (a, b, _) in zip(c, nb, strict=False))
                    us = su + A[0, i, j] * u[i, j] - A[2, i, j] * (V[i, j] - v[i, j]) - A[3, i, j]
                    U[i, j] = (1 - omega) * U[i, j] + omega * us / (S + A[0, i, j])
                    sv = sum(ci * V[a, b] for ci, (a, b, _) in zip(c, nb, strict=False))
                    vs = sv + A[1, i, j] * v[i, j] - A[2, i, j] * (U[i, j] - u[i, j]) - A[4, i, j]
                    V[i, j] = (1 - omega) * V[i, j] + omega * vs / (S + A[1, i, j])
    neumann(U)
    neumann(V)
    return U, V


@pytest.mark.parametrize("a_smooth", [1.0, 0.6])
def test_level_solver_matches_naive_reference(a_smooth):
    rng = np.random.default_rng(0)
    h, w = 9, 11
    f1 = ndimage.gaussian_filter(rng.random((1, h, w)), 1)
    f2 = ndimage.gaussian_filter(rng.random((1, h, w)), 1)
    J = motion_tensor(f1, derivatives(f1, 1.3, 1.1), f2, derivatives(f2, 1.3, 1.1), GC)
    assert J.shape == (1, 6, h + 2, w + 2)  # the frame plus the solver's ghost ring
    wts = np.ones((1, h + 2, w + 2))
    u = rng.normal(size=(h + 2, w + 2)) * 0.1
    v = rng.normal(size=(h + 2, w + 2)) * 0.1
    args = (J, wts, u, v, 1.5, 2.0, 1.3, 1.1, 7, 3, 0.45, a_smooth, 1.95)
    U, V = sor_solve(*args)
    Un, Vn = naive_solver(*args)
    np.testing.assert_allclose(U, Un, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(V, Vn, rtol=1e-9, atol=1e-11)


def test_motion_tensor_matches_formulas():
    rng = np.random.default_rng(1)
    f1, f2 = rng.random((2, 1, 7, 8))
    hx, hy = 1.25, 2.0
    d1, d2 = derivatives(f1, hx, hy), derivatives(f2, hx, hy)
    # first derivatives: central differences with symmetric padding
    fp = np.pad(f1[0], 1, mode="symmetric")
    np.testing.assert_allclose(d1[0, 0], (fp[1:-1, 2:] - fp[1:-1, :-2]) / (2 * hx))
    np.testing.assert_allclose(d1[1, 0], (fp[2:, 1:-1] - fp[:-2, 1:-1]) / (2 * hy))
    # second derivatives: the compact 3-point stencil; mixed: d_y of the central d_x
    c = fp[1:-1, 1:-1]
    np.testing.assert_allclose(d1[2, 0], (fp[1:-1, 2:] - 2 * c + fp[1:-1, :-2]) / hx**2)
    np.testing.assert_allclose(d1[3, 0], (fp[2:, 1:-1] - 2 * c + fp[:-2, 1:-1]) / hy**2)
    fxp = np.pad(d1[0, 0], 1, mode="symmetric")
    np.testing.assert_allclose(d1[4, 0], (fxp[2:, 1:-1] - fxp[:-2, 1:-1]) / (2 * hy))
    J = motion_tensor(f1, d1, f2, d2, GC)
    assert J.shape == (1, 6, 9, 10)
    fxx, fyy, fxy = [(d1[k, 0] + d2[k, 0]) / 2 for k in (2, 3, 4)]
    fxt, fyt = d2[0, 0] - d1[0, 0], d2[1, 0] - d1[1, 0]
    rx, ry = 1 / (fxx**2 + fxy**2 + 1e-6), 1 / (fxy**2 + fyy**2 + 1e-6)
    expected = [
        rx * fxx**2 + ry * fxy**2, rx * fxy**2 + ry * fyy**2, rx * fxt**2 + ry * fyt**2,
        rx * fxx * fxy + ry * fxy * fyy, rx * fxx * fxt + ry * fxy * fyt,
        rx * fxy * fxt + ry * fyy * fyt,
    ]  # fmt: skip
    for k, e in enumerate(expected):
        # every frame pixel, its border included, has its tensor; the ghost ring is zero
        np.testing.assert_allclose(J[0, k, 1:-1, 1:-1], e, rtol=1e-10)
        assert not J[0, k, 0].any() and not J[0, k, -1].any()
        assert not J[0, k, :, 0].any() and not J[0, k, :, -1].any()
    Jg = motion_tensor(f1, d1, f2, d2, GRAY)
    fx = (d1[0, 0] + d2[0, 0]) / 2
    np.testing.assert_allclose(Jg[0, 4, 1:-1, 1:-1], fx * (f2[0] - f1[0]))


def test_median_matches_scipy():
    rng = np.random.default_rng(2)
    for shape in [(5, 5), (17, 23), (64, 40)]:
        a = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_array_equal(median5(a), ndimage.median_filter(a, 5, mode="reflect"))


def test_resize_matches_naive_bspline():
    """Fields (flows, weights) are resized with the unprefiltered cubic B-spline."""
    rng = np.random.default_rng(3)
    img = rng.random((1, 13, 17))
    out = resize(img, (10, 21))
    rows = np.stack([naive_resize_1d(img[0, :, j], 10) for j in range(17)], axis=1)
    expected = np.stack([naive_resize_1d(rows[i], 21) for i in range(10)])
    np.testing.assert_allclose(out[0], expected, rtol=1e-12)
    assert np.array_equal(resize(img, (13, 17)), img)
    # constant and linear fields survive (a coarse level's affine motion reaches full size)
    yy, xx = np.mgrid[0:9, 0:11].astype(float)
    ramp = (0.3 * xx - 0.2 * yy + 1.5)[None]
    big = resize(ramp, (36, 44))[0]
    s_y, s_x = 9 / 36, 11 / 44
    y, x = np.mgrid[0:36, 0:44]
    exact = 0.3 * ((x + 0.5) * s_x - 0.5) - 0.2 * ((y + 0.5) * s_y - 0.5) + 1.5
    inner = (slice(8, -8), slice(8, -8))  # within 2 source px of an edge the taps are clamped
    np.testing.assert_allclose(big[inner], exact[inner], atol=1e-12)


@pytest.mark.parametrize("kernel", ["keys", "bspline"])
def test_cubic_taps_match_naive_kernels(kernel):
    naive = naive_keys if kernel == "keys" else naive_bspline
    idx, wts = cubic_taps(7, 12, "float64", kernel)
    x = np.random.default_rng(4).random(7)
    np.testing.assert_allclose((wts * x[idx]).sum(1), naive_resize_1d(x, 12, naive), rtol=1e-12)
    np.testing.assert_allclose(wts.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="kernel must be 'keys' or 'bspline', got 'lanczos'"):
        cubic_taps(7, 12, "float64", "lanczos")


def test_pyramid_geometry():
    # the coarsest level is the first whose rounded size drops below 10 px
    assert axis_depth(512, 0.8) == 18  # round(512 * 0.8**17) = 12, round(512 * 0.8**18) = 9
    assert axis_depth(9, 0.8) == 0
    assert axis_depth(10, 0.8) == 1
    shapes = level_shapes((64, 512), 0.8, 100)
    assert len(shapes) == 19
    assert shapes[0] == (64, 512)
    assert shapes[9][0] == shapes[18][0] == 9  # the short axis stops
    assert shapes[18][1] == 9
    assert len(level_shapes((512, 512), 0.8, 5)) == 5


def test_pyramid_levels_are_blurred_and_resampled_from_full_resolution():
    rng = np.random.default_rng(5)
    img = rng.random((1, 61, 47))
    shapes = level_shapes((61, 47), 0.8, 100)
    levels = build_pyramid(img, shapes, 2)
    assert levels[0] is None and levels[1] is None
    for i in range(2, len(shapes)):
        s = min(shapes[i][0] / 61, shapes[i][1] / 47)
        sigma = 0.6 / s
        radius = max(1, int(np.ceil(2 * sigma)))
        blurred = ndimage.gaussian_filter(img[0], sigma, mode="reflect", truncate=radius / sigma)
        h, w = shapes[i]  # images are resampled with the interpolating Keys kernel
        rows = np.stack([naive_resize_1d(blurred[:, j], h, naive_keys) for j in range(47)], 1)
        expected = np.stack([naive_resize_1d(rows[r], w, naive_keys) for r in range(h)])
        np.testing.assert_allclose(levels[i][0], expected, rtol=1e-10, atol=1e-12)


def test_cubic_weights_are_keys_kernel():
    for a in (-0.5, -0.75):
        for t in (0.0, 0.13, 0.5, 0.87):
            expected = [naive_keys(t + 1, a), naive_keys(t, a), naive_keys(1 - t, a)]
            expected.append(naive_keys(2 - t, a))
            np.testing.assert_allclose(cubic_weights(t, a), expected, atol=1e-14)


def test_warp_methods_against_scipy_and_round_trip():
    rng = np.random.default_rng(4)
    img = ndimage.gaussian_filter(rng.random((40, 50)), 2)
    w = np.zeros((40, 50, 2))
    w[..., 0], w[..., 1] = 2.0, -1.0  # sample at (y - 1, x + 2)
    for method, order in [("nearest", 0), ("linear", 1)]:
        ref = ndimage.shift(img, (1.0, -2.0), order=order, mode="nearest")
        np.testing.assert_allclose(warp(img, w, method=method), ref, atol=1e-6)
    # integer shifts are exact for the cubic kernel too
    np.testing.assert_allclose(warp(img, w)[2:-2, 2:-3], img[1:-3, 4:-1], atol=1e-6)
    # sub-pixel round trip: shift forth and back, compare away from the borders; the error
    # ranks the kernels as docs/numerics.md measures them (B-spline far ahead of the Keys ones)
    w[..., 0], w[..., 1] = 0.37, -0.61
    bounds = {"bspline": 2e-4, "catmull_rom": 2e-3, "cubic": 4e-3}
    errors = {}
    for method, bound in bounds.items():
        back = warp(warp(img, w, method=method), -w, method=method)
        errors[method] = np.abs(back - img)[5:-5, 5:-5].max()
        assert errors[method] < bound, (method, errors[method])
    assert errors["bspline"] < errors["catmull_rom"] < errors["cubic"]


def test_warp_shapes_dtypes_and_fill():
    img = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1000
    w = np.zeros((6, 7, 2), np.float32)
    w[..., 0] = 0.5
    out = warp(img, w)
    assert out.dtype == np.uint16 and out.shape == img.shape
    # cubic overshoot is clipped, not wrapped around
    spike = np.zeros((6, 7), np.uint16)
    spike[3, 3] = 65535
    assert warp(spike, w).max() <= 65535 and warp(spike, w)[3, 2] < 60000
    assert warp(spike, w).min() == 0
    video = np.stack([img, img + 1])[..., None]  # (T, H, W, C)
    assert warp(video, w).shape == video.shape
    assert warp(np.stack([img, img]), np.stack([w, w])).shape == (2, 6, 7)
    w[..., 0] = 100.0
    assert np.all(warp(img.astype(np.float32), w, fill=np.nan) != warp(img.astype(np.float32), w))
    with pytest.raises(ValueError, match="method must be one of"):
        warp(img, w, method="spline")
    with pytest.raises(ValueError, match="does not match the field size"):
        warp(img, np.zeros((5, 7, 2)))
    with pytest.raises(ValueError, match="w contains NaN"):
        warp(img, np.full((6, 7, 2), np.nan))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("workers", [1, 2])
def test_prefilter_matches_scipy_and_does_not_depend_on_workers(channels, workers):
    """Fused normalise + blur: the spatial passes equal scipy's Gaussian with symmetric borders
    (to float32 rounding), the temporal pass equals scipy's nearest-mode Gaussian bit for bit."""
    from pyflowreg.core.preprocess import gaussian_filter_video, normalize, prefilter

    rng = np.random.default_rng(3)
    raw = (rng.random((9, 21, 26, channels)) * 4000).astype(">u2")  # big-endian input
    low, high = np.full(channels, 100.0), np.full(channels, 3900.0)
    sigma = np.array([[1.5, 1.0, 0.6], [0.0, 2.0, 0.1]])[:channels]
    out = prefilter(raw, low, high, sigma, workers=workers)
    norm = (raw.astype(np.float32) - np.float32(100.0)) * np.float32(1 / 3800.0)
    for ch in range(channels):
        sy, sx, st = sigma[ch]
        spatial = ndimage.gaussian_filter(
            norm[..., ch].astype(np.float64), (0, sy, sx), mode="reflect", truncate=4.0
        ).astype(np.float32)
        if st < 0.125:
            np.testing.assert_allclose(out[..., ch], spatial, atol=2e-6)
        else:
            spatial_only = prefilter(raw, low, high, np.array([sy, sx, 0.0]), workers=workers)
            temporal = ndimage.gaussian_filter1d(
                spatial_only[..., ch], st, axis=0, mode="nearest", truncate=4.0
            )
            np.testing.assert_array_equal(out[..., ch], temporal)
            np.testing.assert_allclose(spatial_only[..., ch], spatial, atol=2e-6)
    np.testing.assert_array_equal(out, prefilter(raw, low, high, sigma, workers=1))
    np.testing.assert_array_equal(out, gaussian_filter_video(normalize(raw, low, high), sigma))


def test_level_warp_is_the_interpolating_cubic_spline():
    rng = np.random.default_rng(6)
    img = ndimage.gaussian_filter(rng.random((1, 23, 31)), 1.0)
    ref = rng.random((1, 23, 31))
    u = rng.uniform(-3, 3, size=(23, 31))
    v = rng.uniform(-3, 3, size=(23, 31))
    hx, hy = 1.5, 2.0
    out = warp_level(level_coefficients(img), ref, u, v, hx, hy)
    yy, xx = np.mgrid[0:23, 0:31]
    y, x = yy + v / hy, xx + u / hx
    expected = ndimage.map_coordinates(img[0], [y, x], order=3, mode="mirror")
    inside = (y >= 0) & (y <= 22) & (x >= 0) & (x <= 30)
    np.testing.assert_allclose(out[0][inside], expected[inside], atol=1e-12)
    np.testing.assert_array_equal(out[0][~inside], ref[0][~inside])
    # on the grid the spline interpolates: zero flow gives the image back
    zero = np.zeros((23, 31))
    np.testing.assert_allclose(warp_level(level_coefficients(img), ref, zero, zero, 1, 1), img)


@pytest.mark.parametrize("method", ["cubic", "catmull_rom", "bspline", "lanczos3"])
def test_output_kernels_interpolate_and_match_their_definitions(method):
    rng = np.random.default_rng(7)
    img = ndimage.gaussian_filter(rng.random((30, 40)), 1.5)
    w = np.zeros((30, 40, 2))
    np.testing.assert_allclose(warp(img, w, method=method), img, atol=1e-12)  # interpolating
    w[..., 0], w[..., 1] = 0.37, -0.61
    out = warp(img, w, method=method)
    yy, xx = np.mgrid[0:30, 0:40].astype(float)
    y, x = yy - 0.61, xx + 0.37
    if method == "bspline":
        expected = ndimage.map_coordinates(img, [y, x], order=3, mode="mirror")
        np.testing.assert_allclose(out, expected, atol=1e-12)
        return
    x0, y0 = np.floor(x), np.floor(y)
    expected = np.zeros_like(img)
    a = {"cubic": -0.75, "catmull_rom": -0.5}.get(method)
    reach = 3 if method == "lanczos3" else 2
    wsum = np.zeros_like(img)
    for dy in range(1 - reach, reach + 1):
        for dx in range(1 - reach, reach + 1):
            if method == "lanczos3":
                k = np.sinc(y - (y0 + dy)) * np.sinc((y - (y0 + dy)) / 3)
                k = k * np.sinc(x - (x0 + dx)) * np.sinc((x - (x0 + dx)) / 3)
            else:
                k = np.vectorize(naive_keys)(y - (y0 + dy), a) * np.vectorize(naive_keys)(
                    x - (x0 + dx), a
                )
            yi = np.clip(y0 + dy, 0, 29).astype(int)
            xi = np.clip(x0 + dx, 0, 39).astype(int)
            expected += k * img[yi, xi]
            wsum += k
    np.testing.assert_allclose(out, expected / wsum, atol=1e-10)


def test_unobserved_pixels_have_no_data_term():
    from pyflowreg.core.tensors import clear_unobserved

    rng = np.random.default_rng(8)
    J = rng.random((2, 6, 9, 12))
    u = np.zeros((7, 10))
    v = np.zeros((7, 10))
    u[:, -1] = 3.0  # the last column samples beyond the right edge (hx = 2: 1.5 px)
    v[6, 0] = 0.5  # the bottom-left pixel samples below the last row
    before = J.copy()
    clear_unobserved(J, u, v, 2.0, 1.0)
    # cleared: the unobserved pixels and their 3 x 3 neighbours (frame (i, j) is J[.., i+1, j+1])
    cleared = np.zeros((9, 12), bool)
    cleared[1:-1, 9:11] = True
    cleared[6:8, 1:3] = True
    assert not J[:, :, cleared].any()
    np.testing.assert_array_equal(J[:, :, ~cleared], before[:, :, ~cleared])
