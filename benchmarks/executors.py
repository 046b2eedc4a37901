"""Throughput of the executors: frames/s, speed-up and peak memory per executor and n_jobs.

Registers a synthetic recording (``pyflowreg.datasets.make_recording``) with every executor
through ``compensate_arr`` (or, with ``--direct``, by driving the executors themselves on
pre-normalised frames), and measures the start-up cost of the multiprocessing executor (pool,
shared memory, worker imports and Numba cache loading) separately::

    python benchmarks/executors.py                          # 512x512, 200 frames, balanced
    python benchmarks/executors.py --size 128 --frames 40   # a quick check
    python benchmarks/executors.py --n-jobs 1,2,4,8 --direct

Each configuration runs ``--repeat`` times (interleaved) and its best time counts; the first
round is printed too (``first run``): there, multiprocessing starts a new worker pool, while
later rounds take over the pool the previous run of the same configuration left idle (see
``pyflowreg.executors.processes``). Peak RSS is measured in one more round of its own, so that
sampling it (every 20 ms) costs no timed round any CPU; it includes worker processes (pages of
shared memory touched by several processes are counted once per process, so this overstates
multiprocessing slightly).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

from _memory import PeakRSS  # benchmarks/ is on sys.path when run as a script
from pyflowreg._runtime import get_runtime
from pyflowreg.core import FlowParameters
from pyflowreg.datasets import make_recording
from pyflowreg.executors import WarpSettings
from pyflowreg.executors.base import resolve_n_jobs
from pyflowreg.executors.processes import shutdown_idle_pools
from pyflowreg.motion_correction import OFOptions, compensate_arr
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig

EXECUTORS = ("sequential", "threading", "multiprocessing")


def normalised(video: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames and reference scaled to about [0, 1] by the reference's range (float32)."""
    low, high = float(reference.min()), float(reference.max())
    scale = 1.0 / max(high - low, 1e-12)
    return (
        ((video - low) * scale).astype(np.float32),
        ((reference - low) * scale).astype(np.float32),
    )


def run_pipeline(video, reference, options, executor: str, n_jobs: int) -> float:
    config = RegistrationConfig(parallelization=executor, n_jobs=n_jobs)
    start = time.perf_counter()
    compensate_arr(video, reference, options, registration_config=config)
    return time.perf_counter() - start


def make_executor(name: str, n_jobs: int, params: FlowParameters, dtype: np.dtype):
    runtime = get_runtime()
    cls = runtime.get_executor_class(name)
    factory = runtime.get_flow_backend("flowreg").load()
    return cls(n_jobs, factory, params, {}, WarpSettings("cubic", dtype))


def run_direct(video, filtered, reference, params, executor: str, n_jobs: int, buffer: int):
    start = time.perf_counter()
    uv = np.zeros((*video.shape[1:3], 2), np.float32)
    with make_executor(executor, n_jobs, params, video.dtype) as ex:
        ex.set_reference(reference)
        for first in range(0, len(video), buffer):
            stop = first + buffer
            ex.process_batch(video[first:stop], filtered[first:stop], uv, first)
    return time.perf_counter() - start


def startup_cost(video, filtered, reference, params, n_jobs: int) -> tuple[float, float]:
    """Seconds until the workers of a new multiprocessing executor run, and until a first
    batch of one frame per worker is registered (this process: fork server already warm;
    with a new pool unless one is left idle)."""
    n = resolve_n_jobs(n_jobs)
    frames = np.resize(np.arange(len(video)), n)
    uv = np.zeros((*video.shape[1:3], 2), np.float32)
    start = time.perf_counter()
    with make_executor("multiprocessing", n_jobs, params, video.dtype) as ex:
        ex.wait_until_started()
        ready = time.perf_counter() - start
        ex.set_reference(reference)
        ex.process_batch(video[frames], filtered[frames], uv, 0)
        first = time.perf_counter() - start
    return ready, first


def startup_figures(video, filtered, reference, params, quality: str, n_jobs: int) -> list:
    """Start-up seconds: workers running in a new process, with a new pool, with an idle
    pool taken over; first batch with a new pool and with an idle one."""
    shutdown_idle_pools()
    new_ready, new_first = startup_cost(video, filtered, reference, params, n_jobs)
    idle_ready, idle_first = startup_cost(video, filtered, reference, params, n_jobs)
    return [cold_startup(quality, n_jobs), new_ready, idle_ready, new_first, idle_first]


COLD_START = """
import time, numpy as np
from pyflowreg.core import FlowParameters
from pyflowreg.executors import WarpSettings, register_frame
from pyflowreg.backends.cpu import FlowregBackend
from pyflowreg.executors.processes import MultiprocessingExecutor
if __name__ == "__main__":
    params = FlowParameters.from_quality({quality!r})
    backend = FlowregBackend(params, {{}})  # load the kernels here first, as a run would
    ref = np.random.default_rng(0).random((64, 64, 1), dtype=np.float32)
    register_frame(backend, backend.prepare_reference(ref), ref, ref,
                   np.zeros((64, 64, 2), np.float32), WarpSettings())
    start = time.perf_counter()
    with MultiprocessingExecutor({n_jobs}, FlowregBackend, params, {{}}, WarpSettings()) as ex:
        ex.wait_until_started()
        print(time.perf_counter() - start)
"""


def cold_startup(quality: str, n_jobs: int) -> float:
    """Seconds until the workers run in a new Python process (starts the fork server)."""
    code = COLD_START.format(quality=quality, n_jobs=n_jobs)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="frame height and width (px)")
    parser.add_argument("--frames", type=int, default=200, help="number of frames")
    parser.add_argument("--quality", default="balanced", choices=["quality", "balanced", "fast"])
    parser.add_argument("--buffer-size", type=int, default=50, help="frames per batch")
    parser.add_argument("--n-jobs", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--executors", default=",".join(EXECUTORS), help="comma-separated names")
    parser.add_argument("--direct", action="store_true", help="drive the executors directly")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best time counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_jobs_list = [int(n) for n in args.n_jobs.split(",")]
    executors = [e for e in args.executors.split(",") if e]

    rec = make_recording(args.frames, (args.size, args.size), seed=args.seed, dtype=np.uint16)
    video, reference = rec.video, rec.reference
    options = OFOptions(quality_setting=args.quality, buffer_size=args.buffer_size)
    params = FlowParameters.from_quality(args.quality)
    filtered, reference_n = normalised(video, reference)
    mode = "executors only" if args.direct else "compensate_arr"
    print(
        f"{args.frames} frames of {args.size}x{args.size} uint16, quality={args.quality!r}, "
        f"buffer_size={args.buffer_size}, {mode}; {resolve_n_jobs(-1)} cores available"
    )

    def measure(executor: str, n_jobs: int) -> float:
        if args.direct:
            return run_direct(
                video, filtered, reference_n, params, executor, n_jobs, args.buffer_size
            )
        return run_pipeline(video, reference, options, executor, n_jobs)

    # compile or load the Numba kernels once, outside the measurements
    warm_up = RegistrationConfig(parallelization="sequential")
    compensate_arr(video[:2], reference, options, registration_config=warm_up)

    # Rounds over all configurations, best time of each: this machine's speed drifts by 10-20 %
    # over minutes (shared host), which would otherwise decide the ratios.
    configs = [(e, n) for e in executors for n in ([1] if e == "sequential" else n_jobs_list)]
    best = {config: float("inf") for config in configs}
    first_round: dict = {}
    shutdown_idle_pools()  # the first round starts new pools
    for _ in range(max(1, args.repeat)):
        for config in configs:
            seconds = measure(*config)
            first_round.setdefault(config, seconds)
            best[config] = min(best[config], seconds)
    peak = {}
    for config in configs:
        with PeakRSS() as memory:
            measure(*config)
        peak[config] = memory.peak_mib
    rows = [
        (e, n, args.frames / best[(e, n)], args.frames / first_round[(e, n)], peak[(e, n)])
        for e, n in configs
    ]
    base = next((row for row in rows if row[0] == "sequential"), None)

    print(
        f"\n{'executor':<16}{'n_jobs':>7}{'frames/s':>11}{'speed-up':>10}"
        f"{'first run':>11}{'speed-up':>10}{'peak RSS MiB':>14}"
    )
    for executor, n_jobs, fps, first_fps, mib in rows:
        speedup = f"{fps / base[2]:.2f}x" if base else "-"
        first_speedup = f"{first_fps / base[3]:.2f}x" if base else "-"
        print(
            f"{executor:<16}{n_jobs:>7}{fps:>11.2f}{speedup:>10}"
            f"{first_fps:>11.2f}{first_speedup:>10}{mib:>14.0f}"
        )
    print("  frames/s: best of the rounds; first run: the first round (new worker pools)")

    if "multiprocessing" in executors:
        figures = [
            startup_figures(video, filtered, reference_n, params, args.quality, n)
            for n in n_jobs_list
        ]
        print(
            "\nmultiprocessing start-up, s" + "".join(f"{f'n_jobs={n}':>11}" for n in n_jobs_list)
        )
        labels = (
            "workers running, new process",
            "workers running, new pool",
            "workers running, idle pool",
            "first batch, new pool",
            "first batch, idle pool",
        )
        for k, label in enumerate(labels):
            print(f"  {label:<29}" + "".join(f"{row[k]:>11.2f}" for row in figures))
        print(
            "  (a new process starts the fork server once; until the workers run, the caller "
            "registers frames itself; 'first batch' is one frame per worker)"
        )


if __name__ == "__main__":
    main()
