"""Accuracy benchmark: endpoint error per preset and per finest level, real-data sharpness, output
kernels and the data-driven smoothness weight, optionally side by side with a peer package.

Synthetic cases come from ``pyflowreg.datasets.make_recording`` (512 x 512 by default): every
motion kind (rigid jumps, smooth walk with non-rigid deformation, slow drift, raster-scan shear) at
SNR 2, 5 and 10 over several seeds. Both packages get the same pre-filtered frames (normalised by
the reference's range, Gaussian sigma 1 px) and the same parameters (alpha 1.5, 50 iterations,
eta 0.8), through their public ``get_displacement``; the reference is the noise-free mean (clean)
or the mean of 10 noisy frames warped back by the ground truth (noisy, as a pipeline's reference).
Real data: the SIMA clip (20 frames, reference = mean of frames 1..19), through each package's
``compensate_arr``.

    python benchmarks/accuracy.py                                  # this project only
    python benchmarks/accuracy.py --peer /path/to/venv/bin/python  # side by side
    python benchmarks/accuracy.py --quick --peer ...               # 1 seed, 2 frames, 256 px

The peer runs in its own interpreter (``_accuracy_worker.py``), so a package with the same import
name (the published PyFlowReg) is used as a black box. Timings are per core (one thread each).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from pyflowreg.core import gaussian_filter_video, normalize, reference_range, warp
from pyflowreg.datasets import make_recording

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_accuracy_worker.py"
PRESETS = {"quality": 0, "balanced": 4, "fast": 6}
SIMA = HERE.parent.parent / "shared" / "data" / "sima_example.tif"
TIE = 0.005  # px: differences of mean EPE below this count as ties
ONE_CORE = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def run_worker(python: str, task: str, inputs: dict, params: dict) -> dict:
    """Run one task of ``_accuracy_worker.py`` in ``python``; returns its output arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(src, params=json.dumps(params), **inputs)
        env = {**os.environ, **ONE_CORE}
        env.pop("PYTHONPATH", None)
        done = subprocess.run(
            [python, str(WORKER), task, str(src), str(dst)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{python} {task} failed:\n{done.stderr[-3000:]}")
        with np.load(dst) as out:
            return {k: out[k] for k in out.files}


# --- synthetic cases ---------------------------------------------------------------------------


def make_case(motion: str, snr: float, seed: int, n_frames: int, size: int, n_ref: int = 10):
    """Pre-filtered frames, clean and noisy references, ground truth and clean frames.

    ``jumps`` cases jump often (probability 0.25 per frame), so that a few frames hold jumps."""
    rec = make_recording(
        n_frames=n_frames + n_ref,
        shape=(size, size),
        snr=snr,
        max_rigid=10.0,
        max_nonrigid=2.0,
        seed=seed,
        motion=motion,
        jump_probability=0.25,
    )
    noisy_ref = np.mean([warp(rec.video[t], rec.flow[t]) for t in range(n_ref)], axis=0)
    low, high = reference_range(rec.reference)
    sigma = np.array([1.0, 1.0, 0.0])

    def prefilter(video):
        return gaussian_filter_video(normalize(video, low, high), sigma)[..., 0]

    frames = slice(n_ref, None)
    return {
        "frames": prefilter(rec.video[frames]),
        "clean_ref": prefilter(rec.reference[None])[0],
        "noisy_ref": prefilter(noisy_ref[None])[0],
        "truth": rec.flow[frames],
        "raw": rec.video[frames, ..., 0],
        "clean": rec.clean[frames, ..., 0],
    }


def epe(fields: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel endpoint error of ``fields`` (..., T, H, W, 2) against ``truth`` (T, H, W, 2)."""
    return np.sqrt(((fields - truth) ** 2).sum(-1))


def psnr(image: np.ndarray, clean: np.ndarray, border: int = 16) -> float:
    crop = (Ellipsis, slice(border, -border), slice(border, -border))
    mse = np.mean((image[crop] - clean[crop]) ** 2)
    peak = np.ptp(clean[crop])
    return float(10 * np.log10(peak**2 / mse))


def synthetic(args, sides: dict[str, str]) -> dict:
    """EPE of every side on every case, per min_level: ``{(case, ref): {side: (L, T, H, W)}}``."""
    results = {}
    cases = list(itertools.product(args.motions, args.snrs, range(args.seeds)))
    for n, (motion, snr, seed) in enumerate(cases, 1):
        case = make_case(motion, snr, 1000 + 17 * seed, args.frames, args.size)
        for ref in args.refs:
            inputs = {"reference": case[f"{ref}_ref"], "frames": case["frames"]}
            key = (motion, snr, seed, ref)
            results[key] = {}
            for side, python in sides.items():
                out = run_worker(python, "flow", inputs, {"min_levels": args.min_levels})
                results[key][side] = epe(out["fields"], case["truth"])
            line = "  ".join(
                f"{side} " + " ".join(f"{e.mean():.3f}" for e in results[key][side])
                for side in sides
            )
            print(
                f"[{n}/{len(cases)}] {motion:6s} snr {snr:>4g} seed {seed} {ref:5s} {line}",
                flush=True,
            )
    return results


def report_synthetic(args, results: dict, sides: list[str]) -> None:
    print("\n## Endpoint error (px) per finest level solved, mean over cases (p95 in brackets)")
    names = {v: k for k, v in PRESETS.items()}
    for ref in args.refs:
        print(f"\nreference: {ref}")
        head = f"{'min_level':>10s} {'preset':>9s}" + "".join(f"{s:>18s}" for s in sides)
        if len(sides) == 2:
            head += f"{'ratio':>8s}{'worst diff':>12s}{'cases > tie':>12s}"
        print(head)
        keys = [k for k in results if k[3] == ref]
        for i, level in enumerate(args.min_levels):
            row = f"{level:>10d} {names.get(level, ''):>9s}"
            means = {}
            for side in sides:
                errs = [results[k][side][i] for k in keys]
                means[side] = np.array([e.mean() for e in errs])
                p95 = np.mean([np.percentile(e, 95) for e in errs])
                row += f"{means[side].mean():>10.3f} ({p95:.3f})"
            if len(sides) == 2:
                a, b = means[sides[0]], means[sides[1]]
                row += f"{a.mean() / b.mean():>8.3f}{(a - b).max():>+12.3f}"
                row += f"{int(np.sum(a > b + TIE)):>8d}/{len(a)}"
            print(row)
    print("\nper motion and SNR (mean EPE at quality / balanced / fast):")
    for motion, snr in itertools.product(args.motions, args.snrs):
        keys = [k for k in results if k[0] == motion and k[1] == snr]
        cells = []
        for side in sides:
            vals = [
                np.mean([results[k][side][args.min_levels.index(lv)].mean() for k in keys])
                for lv in PRESETS.values()
                if lv in args.min_levels
            ]
            cells.append(f"{side} " + " / ".join(f"{v:.3f}" for v in vals))
        print(f"  {motion:6s} snr {snr:>4g}: " + "   ".join(cells))


def markdown_table(args, results: dict, sides: list[str], fps: dict | None) -> None:
    """The README's table: mean EPE per preset (clean and noisy reference) and frames/s."""
    print("\n## README table (markdown)\n")
    head = "| preset |"
    rule = "|---|"
    for ref in args.refs:
        for side in sides:
            head += f" EPE {ref} ref, {side} |"
            rule += "---|"
    if fps:
        for side in sides:
            head += f" frames/s/core, {side} |"
            rule += "---|"
    print(head)
    print(rule)
    for i, (preset, level) in enumerate(PRESETS.items()):
        if level not in args.min_levels:
            continue
        row = f"| `{preset}` |"
        k = args.min_levels.index(level)
        for ref in args.refs:
            keys = [key for key in results if key[3] == ref]
            for side in sides:
                row += f" {np.mean([results[key][side][k].mean() for key in keys]):.3f} px |"
        if fps:
            for side in sides:
                row += f" {fps[side][i]:.2f} |"
        print(row)


# --- speed -------------------------------------------------------------------------------------


def speed(args, sides: dict[str, str]) -> dict:
    """Frames/s per preset of every side, in ``--speed-rounds`` rounds that alternate the sides
    (so that a change of the machine's speed hits both alike); per side the median of the
    rounds, and the median, lowest and highest of the per-round ratios."""
    case = make_case("jumps", 5.0, 7, args.speed_frames, 512)
    inputs = {"reference": case["clean_ref"], "frames": case["frames"]}
    levels = list(PRESETS.values())
    rounds = {side: [] for side in sides}
    for _ in range(max(1, args.speed_rounds)):
        for side, python in sides.items():
            rounds[side].append(run_worker(python, "speed", inputs, {"min_levels": levels})["fps"])
    fps = {side: np.median(rounds[side], axis=0) for side in sides}
    print(
        f"\n## Speed, 512 x 512, one core, {args.speed_frames} frames, best of 2 after a "
        f"full-size warm-up (frames/s, median of {args.speed_rounds} alternating rounds)"
    )
    ratio = "  ratio (lowest-highest round)" if len(sides) == 2 else ""
    print(f"{'preset':>10s}" + "".join(f"{s:>10s}" for s in sides) + ratio)
    for i, preset in enumerate(PRESETS):
        row = f"{preset:>10s}" + "".join(f"{fps[s][i]:>10.2f}" for s in sides)
        if len(sides) == 2:
            a, b = (np.asarray(rounds[s])[:, i] for s in sides)
            r = a / b
            row += f"  {np.median(r):5.2f}x ({r.min():.2f}-{r.max():.2f})"
        print(row)
    return fps


# --- real data ---------------------------------------------------------------------------------


def crispness(mean_image: np.ndarray, border: int = 10) -> float:
    gy, gx = np.gradient(mean_image.astype(np.float64))
    return float(np.hypot(gy, gx)[border:-border, border:-border].mean())


def correlation(video: np.ndarray, border: int = 10) -> float:
    crop = video[:, border:-border, border:-border].astype(np.float64)
    mean = crop.mean(0).ravel()
    return float(np.mean([np.corrcoef(f.ravel(), mean)[0, 1] for f in crop]))


def bspline_warp(video: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A warp common to all packages: cubic B-spline interpolation (prefiltered), edges nearest."""
    h, wd = video.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:wd].astype(np.float64)
    return np.stack(
        [
            ndi.map_coordinates(
                f.astype(np.float64), [yy + wt[..., 1], xx + wt[..., 0]], order=3, mode="nearest"
            )
            for f, wt in zip(video, w, strict=True)
        ]
    )


def real_data(args, sides: dict[str, str]) -> None:
    import tifffile

    path = Path(args.sima)
    if not path.exists():
        print(f"\n(SIMA clip not found at {path}; real-data section skipped)")
        return
    video = tifffile.imread(path)
    reference = video[1:].astype(np.float64).mean(0)
    print(f"\n## Real data: {path.name} {video.shape}, reference = mean of frames 1..19")
    print(
        "corr = mean frame-to-mean correlation, crisp = mean gradient magnitude of the mean "
        "(10 px border cut)"
    )
    print(f"{'raw':>10s}: corr {correlation(video):.3f}  crisp {crispness(video.mean(0)):.1f}")
    presets = list(PRESETS)
    out = {
        side: run_worker(
            python, "compensate", {"video": video, "reference": reference}, {"presets": presets}
        )
        for side, python in sides.items()
    }
    print(f"{'preset':>10s} {'side':>6s} {'own output':>22s} {'fields, common warp':>26s}")
    for i, preset in enumerate(presets):
        for side in sides:
            reg = out[side]["registered"][i].astype(np.float64)
            common = bspline_warp(video, out[side]["w"][i])
            print(
                f"{preset:>10s} {side:>6s}   corr {correlation(reg):.3f} crisp "
                f"{crispness(reg.mean(0)):6.1f}     corr {correlation(common):.3f} crisp "
                f"{crispness(common.mean(0)):6.1f}"
            )


# --- output kernels ----------------------------------------------------------------------------

KERNELS = ["catmull_rom", "cubic", "bspline", "lanczos3", "linear"]


def kernels(args) -> None:
    """PSNR of registered frames against the clean scene per output kernel (fields estimated at
    ``quality``, and the true fields), and sharpness of the SIMA mean per kernel."""
    from pyflowreg.core import get_displacement

    print(
        "\n## Output kernels: PSNR (dB) of the registered frame against the clean frame "
        "(16 px border cut)"
    )
    print(f"{'case':>18s} {'field':>9s}" + "".join(f"{k:>12s}" for k in KERNELS))
    for motion, snr in itertools.product(["jumps", "smooth"], [np.inf, *args.snrs]):
        case = make_case(motion, snr, 99, 2, args.size)
        est = np.stack([get_displacement(case["clean_ref"], f) for f in case["frames"]])
        for name, fields in (("estimated", est), ("true", case["truth"])):
            row = f"{motion + ' snr ' + format(snr, 'g'):>18s} {name:>9s}"
            for kernel in KERNELS:
                reg = np.stack(
                    [warp(f, w, method=kernel) for f, w in zip(case["raw"], fields, strict=True)]
                )
                row += f"{psnr(reg, case['clean']):>12.2f}"
            print(row)
    path = Path(args.sima)
    if not path.exists():
        return
    import tifffile

    video = tifffile.imread(path)
    reference = video[1:].astype(np.float64).mean(0)
    fields = np.stack([get_displacement(reference, f) for f in video.astype(np.float64)])
    print("SIMA, fields at quality against the mean of frames 1..19: corr / crisp")
    print("".join(f"{k:>16s}" for k in KERNELS))
    row = ""
    for kernel in KERNELS:
        reg = warp(video, fields, method=kernel).astype(np.float64)
        row += f"{correlation(reg):>8.3f} /{crispness(reg.mean(0)):>6.1f}"
    print(row)


# --- alpha="auto" ------------------------------------------------------------------------------


def auto_alpha(args) -> None:
    """EPE with ``alpha="auto"`` against the default 1.5 (this project), and SIMA metrics."""
    levels = [PRESETS[p] for p in args.auto_presets]
    print(
        f"\n## alpha='auto' against alpha=1.5: mean EPE (px), noisy reference, "
        f"{args.auto_frames} frame(s) per case"
    )
    print(
        f"{'case':>18s}"
        + "".join(f"{p + ' 1.5':>14s}{p + ' auto':>14s}" for p in args.auto_presets)
    )
    for motion, snr in itertools.product(args.motions, args.snrs):
        case = make_case(motion, snr, 2024, args.auto_frames, args.size)
        inputs = {"reference": case["noisy_ref"], "frames": case["frames"]}
        row = f"{motion + ' snr ' + format(snr, 'g'):>18s}"
        fixed = run_worker(sys.executable, "flow", inputs, {"min_levels": levels})
        auto = run_worker(sys.executable, "flow", inputs, {"min_levels": levels, "alpha": "auto"})
        for i in range(len(levels)):
            row += f"{epe(fixed['fields'][i], case['truth']).mean():>14.3f}"
            row += f"{epe(auto['fields'][i], case['truth']).mean():>14.3f}"
        print(row, flush=True)
    path = Path(args.sima)
    if not path.exists():
        return
    import tifffile

    video = tifffile.imread(path)
    reference = video[1:].astype(np.float64).mean(0)
    print("SIMA, own output: corr / crisp")
    for alpha in (1.5, "auto"):
        out = run_worker(
            sys.executable,
            "compensate",
            {"video": video, "reference": reference},
            {"presets": list(PRESETS), "options": {"alpha": alpha}},
        )
        row = f"{'alpha ' + str(alpha):>12s}"
        for i, preset in enumerate(PRESETS):
            reg = out["registered"][i].astype(np.float64)
            row += f"   {preset} {correlation(reg):.3f} / {crispness(reg.mean(0)):.1f}"
        print(row, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", help="python interpreter of a peer package (own venv)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 frames, 256 px")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=3, help="frames per case")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--snrs", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--motions", nargs="+", default=["jumps", "smooth", "drift", "shear"])
    parser.add_argument("--min-levels", type=int, nargs="+", default=[0, 2, 4, 6, 8, 10, 14])
    parser.add_argument("--refs", nargs="+", default=["clean", "noisy"])
    parser.add_argument("--speed-frames", type=int, default=8)
    parser.add_argument(
        "--speed-rounds", type=int, default=3, help="alternating rounds of the speed section"
    )
    parser.add_argument("--sima", default=str(SIMA))
    parser.add_argument("--auto-presets", nargs="+", default=["quality", "balanced", "fast"])
    parser.add_argument("--auto-frames", type=int, default=1)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["synthetic", "speed", "real", "kernels", "auto"]
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.frames, args.size = 1, 2, 256
    sides = {"ours": sys.executable}
    if args.peer:
        sides["peer"] = args.peer
    results = fps = None
    if "synthetic" not in args.skip:
        results = synthetic(args, sides)
        report_synthetic(args, results, list(sides))
    if "speed" not in args.skip:
        fps = speed(args, sides)
    if results is not None:
        markdown_table(args, results, list(sides), fps)
    if "real" not in args.skip:
        real_data(args, sides)
    if "kernels" not in args.skip:
        kernels(args)
    if "auto" not in args.skip:
        auto_alpha(args)


if __name__ == "__main__":
    main()
