"""The dask executor against the multiprocessing executor, and the client's memory.

Writes a synthetic recording (``pyflowreg.datasets.make_recording``) to HDF5, registers it with
``compensate_recording`` under the multiprocessing executor and under a LocalCluster of the same
number of worker processes (started once, outside the timing; its start-up is printed
separately), and prints frames/s. Then registers a recording ``--long`` times longer (the same
frames repeated, written chunk by chunk) on the cluster, to HDF5 (results stream back to the
client) and to Zarr (workers write their own regions), sampling the client process's resident
memory every 20 ms: a bounded window of ranges keeps it flat::

    python benchmarks/dask.py                          # 512x512, 400 frames, 2 workers
    python benchmarks/dask.py --size 96 --frames 40    # a quick check

The peak memory is the client's own (this process, which also hosts the LocalCluster's
scheduler), not the workers'. Dask keeps the last 1000 messages under 1 MB of every batched
stream for debugging (``distributed.admin.low-level-log-length``): on small frames those hold a
bounded few tens of MiB of task definitions. The benchmark turns that log off so that the figures
show the registration's own memory; ``--dask-log`` keeps Dask's default.
"""

from __future__ import annotations

import sys
from pathlib import Path

# this file is named dask.py: keep its folder off sys.path so that ``import dask`` finds dask
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pyflowreg.datasets import make_recording  # noqa: E402
from pyflowreg.executors._worker_init import THREAD_LIMITS  # noqa: E402
from pyflowreg.io import open_writer  # noqa: E402
from pyflowreg.motion_correction import OFOptions, compensate_recording  # noqa: E402
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig  # noqa: E402

# the shared memory sampler, loaded by path (this folder is off sys.path, see above)
_spec = importlib.util.spec_from_file_location("_memory", _HERE / "_memory.py")
_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_memory)
PeakRSS = _memory.PeakRSS


def write_recording(path: Path, video: np.ndarray, repeats: int) -> Path:
    """``video`` repeated ``repeats`` times, appended chunk by chunk (bounded memory)."""
    with open_writer(path) as writer:
        for _ in range(repeats):
            writer.write(video)
    return path


def register(source: Path, out: Path, args, config: RegistrationConfig, fmt: str = "HDF5"):
    options = OFOptions(
        input_file=source,
        output_path=out,
        output_format=fmt,
        quality_setting=args.quality,
        buffer_size=args.buffer_size,
        save_meta_info=True,
    )
    return compensate_recording(options, config=config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="frame height and width (px)")
    parser.add_argument("--frames", type=int, default=400, help="frames of the timed recording")
    parser.add_argument("--long", type=int, default=5, help="length factor of the memory run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of both")
    parser.add_argument("--quality", default="fast", choices=["quality", "balanced", "fast"])
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=100,
        help="frames per batch/range (at 20 or less the boundary pass of the initial-flow "
        "chaining re-registers every frame on the client)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dask-log", action="store_true", help="keep Dask's message log")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    import dask

    if not args.dask_log:
        dask.config.set({"distributed.admin.low-level-log-length": 0})

    rec = make_recording(args.frames, (args.size, args.size), seed=args.seed, dtype=np.uint16)
    print(
        f"{args.frames} frames of {args.size}x{args.size} uint16, quality={args.quality!r}, "
        f"buffer_size={args.buffer_size}, {args.workers} workers"
    )
    with tempfile.TemporaryDirectory(prefix="pyflowreg-dask-bench-") as tmp:
        tmp = Path(tmp)
        source = write_recording(tmp / "short.h5", rec.video, 1)

        tic = time.perf_counter()
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            env=dict(THREAD_LIMITS),
        )
        client = Client(cluster)
        startup = time.perf_counter() - tic
        with cluster, client:
            on_dask = RegistrationConfig(parallelization="dask", dask_client=client)
            multi = RegistrationConfig(parallelization="multiprocessing", n_jobs=args.workers)
            # load the Numba kernels in every process once, outside the measurements
            warm = write_recording(tmp / "warm.h5", rec.video[: min(4, args.frames)], 1)
            register(warm, tmp / "warm-dask", args, on_dask)

            rows = []
            for name, config in (("multiprocessing", multi), ("dask", on_dask)):
                result = register(source, tmp / f"out-{name}", args, config)
                rows.append((name, result.n_frames / result.seconds))
            print(f"\nLocalCluster start-up: {startup:.1f} s (not in the figures below; the")
            print("multiprocessing figure includes its pool start-up, which every run pays)")
            print(f"{'executor':<18}{'frames/s':>10}")
            for name, fps in rows:
                print(f"{name:<18}{fps:>10.2f}")

            long_source = write_recording(tmp / "long.h5", rec.video, args.long)
            print(
                f"\nclient peak RSS (MiB), dask executor, {args.frames} vs "
                f"{args.frames * args.long} frames:"
            )
            print(f"{'output':<8}{'frames':>8}{'peak':>10}{'growth':>10}")
            for fmt in ("HDF5", "ZARR"):
                for path, n in ((source, args.frames), (long_source, args.frames * args.long)):
                    with PeakRSS(children=False) as memory:
                        register(path, tmp / f"mem-{fmt}-{n}", args, on_dask, fmt)
                    print(f"{fmt:<8}{n:>8}{memory.peak_mib:>10.0f}{memory.growth_mib:>10.0f}")


if __name__ == "__main__":
    main()
