"""Flow-engine benchmark: frames/s (1 and 2 threads), accuracy and peak memory per preset.

Synthetic 2-photon frames with ground-truth motion (``pyflowreg.datasets``), normalised by the
reference's range and pre-filtered like the pipeline does; the solver is called directly
(``prepare_reference`` once, ``estimate`` per frame, zero initial flow).

    python benchmarks/flow.py                      # 512x512, 1 and 2 channels, all presets
    python benchmarks/flow.py --size 256 --frames 8 --presets fast balanced
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from _memory import PeakRSS  # benchmarks/ is on sys.path when run as a script
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


def prepare_data(size: int, frames: int, channels: int, seed: int):
    rec = make_recording(
        n_frames=frames, shape=(size, size), n_channels=channels, snr=5.0,
        max_rigid=10.0, max_nonrigid=2.0, seed=seed,
    )  # fmt: skip
    low, high = reference_range(rec.reference)
    sigma = np.array([1.0, 1.0, 0.0])
    ref = gaussian_filter_video(normalize(rec.reference[None], low, high), sigma)[0]
    video = gaussian_filter_video(normalize(rec.video, low, high), sigma)
    return ref, video, rec.flow


def run_preset(ref, video, truth, preset: str, threads: int, repeats: int):
    params = FlowParameters.from_quality(preset)
    prepared = prepare_reference(ref, params)
    estimate(prepared, video[0])  # JIT warm-up
    n = len(video)
    fields = np.empty((n, *video.shape[1:3], 2), np.float32)

    def one(t):
        fields[t] = estimate(prepared, video[t])

    def timed(n_threads):
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            if n_threads == 1:
                for t in range(n):
                    one(t)
            else:
                with ThreadPoolExecutor(n_threads) as pool:
                    list(pool.map(one, range(n)))
            best = min(best, time.perf_counter() - t0)
        return n / best

    with PeakRSS(children=False) as mem:
        fps1 = timed(1)
        fps2 = timed(threads) if threads > 1 else fps1
    epe = endpoint_error(fields, truth)
    return fps1, fps2, epe, mem.peak_mib


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=12, help="frames per preset and channel count")
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--presets", nargs="+", default=["quality", "balanced", "fast"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"pyflowreg flow benchmark: {args.size}x{args.size}, {args.frames} frames, "
          f"SNR 5, <=10 px rigid + <=2 px non-rigid motion, {os.cpu_count()} CPUs")  # fmt: skip
    header = (
        f"{'ch':>2} {'preset':>9} {'fps 1 thr':>10} {'fps ' + str(args.threads) + ' thr':>10} "
        f"{'speed-up':>8} {'EPE mean':>9} {'EPE p95':>8} {'peak RSS MiB':>13}"
    )
    print(header)
    print("-" * len(header))
    for channels in args.channels:
        ref, video, truth = prepare_data(args.size, args.frames, channels, args.seed)
        for preset in args.presets:
            frames = video if preset != "quality" else video[: max(2, args.frames // 2)]
            fps1, fps2, epe, peak = run_preset(
                ref, frames, truth[: len(frames)], preset, args.threads, args.repeats
            )
            print(
                f"{channels:>2} {preset:>9} {fps1:>10.1f} {fps2:>10.1f} {fps2 / fps1:>7.2f}x "
                f"{epe.mean:>9.3f} {epe.p95:>8.3f} {peak:>13.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
