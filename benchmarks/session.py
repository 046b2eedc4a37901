"""A session end to end: time per stage and peak memory, stage 1 sequential, multiprocessing
and on Dask (one task per recording).

Writes ``--sessions`` synthetic recordings of one field of view
(:func:`pyflowreg.datasets.make_sessions`: known inter-session deformation, different activity per
session) as uint16 TIFF, ``--frames`` frames of ``--size`` x ``--size`` each, then runs

* stage 1 once per ``--modes`` entry, each into its own output folder: ``sequential`` (the
  sequential executor, one recording after the other), ``multiprocessing`` (one recording after
  the other, frames on ``--workers`` processes) and ``dask`` (``pyflowreg session dask``'s
  runner: a LocalCluster of ``--workers`` single-threaded processes, one task per recording);
* stages 2 and 3 on the outputs of the first mode (they do not depend on how stage 1 ran; the
  other modes' temporal means are checked equal to the first's).

Peak memory is the resident set of this process and its children (worker processes, the Dask
cluster) above what it was before the stage, sampled every 20 ms (``_memory.PeakRSS``). Numba's
kernels are compiled (or loaded from the cache) before any timing. To keep generation time and
memory bounded, ``make_sessions`` draws at most ``--generated`` frames per session (default
50); longer recordings repeat them (the registration costs the same per frame)::

    python benchmarks/session.py                                   # 4 x 500 frames of 512x512
    python benchmarks/session.py --sessions 3 --frames 40 --size 128   # a quick check
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/dask.py is in this folder: keep the folder off sys.path so ``import dask`` finds dask
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pyflowreg.datasets import make_sessions  # noqa: E402
from pyflowreg.session import SessionConfig, run_stage1, run_stage2, run_stage3  # noqa: E402
from pyflowreg.session.dask_runner import run_stage1_dask  # noqa: E402

_spec = importlib.util.spec_from_file_location("_memory", _HERE / "_memory.py")
_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_memory)
PeakRSS = _memory.PeakRSS

MODES = ("sequential", "multiprocessing", "dask")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def write_sessions(folder: Path, args) -> float:
    """The recordings as ``session_<i>.tif``; returns the seconds taken."""
    import tifffile

    tic = time.perf_counter()
    generated = min(args.frames, args.generated)
    sessions = make_sessions(
        args.sessions, generated, (args.size, args.size), seed=0, dtype=np.uint16
    )
    folder.mkdir(parents=True, exist_ok=True)
    for i, video in enumerate(sessions.videos):
        frames = video[..., 0]
        with tifffile.TiffWriter(folder / f"session_{i:02d}.tif", bigtiff=True) as tif:
            written = 0
            while written < args.frames:  # repeat the generated frames up to --frames
                block = frames[: args.frames - written]
                tif.write(block, contiguous=True, photometric="minisblack")
                written += len(block)
    return time.perf_counter() - tic


def warm_up(args) -> float:
    """Compile (or load) the kernels of the preset and of stage 2 on a tiny session."""
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "warm"
        small = argparse.Namespace(sessions=2, frames=4, generated=4, size=48)
        write_sessions(root, small)
        config = SessionConfig(
            root=root,
            pattern="session_*.tif",
            stage1_executor="sequential",
            iterations_between=5,
            flow_options={"quality_setting": args.quality, "save_meta_info": False},
        )
        run_stage1(config)
        run_stage3(config, *run_stage2(config)[::2])
    return time.perf_counter() - tic


def session_config(root: Path, mode: str, args) -> SessionConfig:
    executor = {"sequential": "sequential", "multiprocessing": "multiprocessing"}.get(mode)
    return SessionConfig(
        root=root,
        pattern="session_*.tif",
        output_root=f"out_{mode}",
        final_results=f"final_{mode}",
        stage1_executor=executor,
        n_workers=args.workers,
        flow_options={
            "quality_setting": args.quality,
            "buffer_size": args.buffer_size,
            "save_meta_info": False,
        },
    )


def timed(function, *fargs, **kwargs):
    with PeakRSS(children=True) as memory:
        tic = time.perf_counter()
        result = function(*fargs, **kwargs)
        seconds = time.perf_counter() - tic
    return result, seconds, memory.growth_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--frames", type=int, default=500, help="frames per session")
    parser.add_argument("--size", type=int, default=512, help="frame height and width")
    parser.add_argument("--generated", type=int, default=50, help="frames drawn per session")
    parser.add_argument("--quality", default="fast", choices=("fast", "balanced", "quality"))
    parser.add_argument("--buffer-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=CORES, help="processes")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: temporary)")
    args = parser.parse_args()

    tmp = None if args.workdir else tempfile.mkdtemp(prefix="pyflowreg-session-bench-")
    root = (args.workdir or Path(tmp)) / "data"
    total_frames = args.sessions * args.frames
    try:
        print(
            f"session benchmark: {args.sessions} sessions x {args.frames} frames of "
            f"{args.size}x{args.size} (uint16 TIFF), preset {args.quality!r}, "
            f"buffer_size {args.buffer_size}, {args.workers} worker(s), "
            f"{CORES} core(s)"
        )
        print(f"writing the recordings: {write_sessions(root, args):.1f} s")
        print(f"warm-up (kernels compiled or loaded): {warm_up(args):.1f} s")
        print()
        print(f"{'stage':<28}{'seconds':>10}{'frames/s':>10}{'peak MiB':>10}")
        first_means = None
        first_config = None
        differ = []
        for mode in args.modes:
            config = session_config(root, mode, args)
            if mode == "dask":
                _, seconds, peak = timed(run_stage1_dask, config, n_workers=args.workers)
            else:
                _, seconds, peak = timed(run_stage1, config)
            label = f"stage 1, {mode}"
            print(f"{label:<28}{seconds:>10.1f}{total_frames / seconds:>10.2f}{peak:>10.0f}")
            outputs = config.resolve_output_paths().output_root
            means = [np.load(f / "temporal_average.npy") for f in sorted(outputs.iterdir())]
            if first_means is None:
                first_means, first_config = means, config
            else:
                same = all(np.array_equal(a, b) for a, b in zip(means, first_means, strict=True))
                if not same:
                    differ.append(mode)
        (middle, _, fields), seconds, peak = timed(run_stage2, first_config)
        print(f"{'stage 2 (client)':<28}{seconds:>10.1f}{'':>10}{peak:>10.0f}")
        final, seconds, peak = timed(run_stage3, first_config, middle, fields)
        print(
            f"{'stage 3 (client)':<28}{seconds:>10.1f}{total_frames / seconds:>10.0f}{peak:>10.0f}"
        )
        print(f"final mask: {int(final.sum())} of {final.size} pixels valid")
        if len(args.modes) > 1:
            verdict = f"differ in {differ}" if differ else "are identical"
            print(f"temporal means of every stage-1 mode against {args.modes[0]}'s: {verdict}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
