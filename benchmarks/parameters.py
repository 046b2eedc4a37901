"""Accuracy of model parameters on synthetic data: EPE per (alpha, sigma, preset).

The model's defaults (alpha = 1.5, sigma = 1) are kept in the package; this script measures the
alternatives documented in docs/accuracy.md.

    python benchmarks/parameters.py --alphas 1.5 4 10 20 40 --sigmas 1 1.5 --presets quality
"""

from __future__ import annotations

import argparse

import numpy as np

from pyflowreg.core import (
    FlowParameters,
    estimate,
    gaussian_filter_video,
    normalize,
    prepare_reference,
    reference_range,
)
from pyflowreg.datasets import make_recording
from pyflowreg.metrics import endpoint_error


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--snr", type=float, default=5.0)
    ap.add_argument("--alphas", type=float, nargs="+", default=[1.5, 4.0, 10.0, 20.0, 40.0])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 1.5])
    ap.add_argument("--presets", nargs="+", default=["quality", "balanced", "fast"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rec = make_recording(
        n_frames=args.frames, shape=(args.size, args.size), snr=args.snr,
        max_rigid=10.0, max_nonrigid=2.0, seed=args.seed,
    )  # fmt: skip
    low, high = reference_range(rec.reference)
    print(f"{args.size}x{args.size}, {args.frames} frames, SNR {args.snr}: EPE mean / p95 (px)")
    print(f"{'sigma':>6} {'alpha':>6} " + " ".join(f"{p:>16}" for p in args.presets))
    for s in args.sigmas:
        sigma = np.array([s, s, 0.0])
        ref = gaussian_filter_video(normalize(rec.reference[None], low, high), sigma)[0]
        video = gaussian_filter_video(normalize(rec.video, low, high), sigma)
        for alpha in args.alphas:
            cells = []
            for preset in args.presets:
                prepared = prepare_reference(ref, FlowParameters.from_quality(preset, alpha=alpha))
                w = np.stack([estimate(prepared, f) for f in video])
                epe = endpoint_error(w, rec.flow)
                cells.append(f"{epe.mean:7.3f} / {epe.p95:6.3f}")
            print(f"{s:>6.2f} {alpha:>6.1f} " + " ".join(f"{c:>16}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
