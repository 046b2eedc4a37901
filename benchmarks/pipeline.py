"""Pipeline benchmark: bounded memory, file-to-file overhead, and end-to-end accuracy.

Three measurements of ``compensate_recording`` (synthetic data from
``pyflowreg.datasets.make_recording``):

1. **Peak memory vs recording length**: peak memory of this process and its children
   (sampled every 20 ms, above the level before the run) as proportional set size (PSS:
   each shared-memory page counted once over all processes) and as RSS summed over the
   processes (shared pages once per process), and the peak of NumPy and Python
   allocations (``tracemalloc``, main process only), on a long and a short recording of
   the same frame size; each run in a fresh Python process after a warm-up that loads the
   compiled kernels, ``--memory-runs`` times per length (the median counts: a peak is one
   20 ms sample of a quantity that moves by a batch's buffers). Bounded memory means the
   two peaks are about equal. The short
   recording must hold a few batches (default 200 frames, ``buffer_size`` 50) so that it
   reaches the pipeline's steady state too: a run of two batches never holds a batch read
   ahead, and would look smaller for that reason alone.
2. **Overhead vs flow time**: wall time of a file-to-file run against the time batches
   spent in the executor (flow estimation + warp, ``flow_seconds`` of ``run.json``), for
   HDF5 and TIFF input and output, on the short and the long recording. The rest
   ("other") is what the pipeline adds: reading, pre-filtering, writing, statistics,
   averaging the reference and bookkeeping. The reference pass registers up to 450 frames
   (``reference_frames = range(50, 500)``) whatever the length; its flow time is printed
   on its own, and the overhead is printed both ways: "other %" counts the reference
   pass's flows as flow time, "+ref %" counts them as overhead too (everything but the
   registration's own flows, over those flows). The latter is a fixed cost per run, so it
   falls with the length (``--overhead-frames``).
3. **End-to-end accuracy**: endpoint error against the ground truth of the fields saved by
   the pipeline (``w.h5``; reference = the clean scene) next to the EPE of the engine
   called directly on the same pre-processed frames from zero initial flow.
4. **End to end, as a new user runs it** (``--only e2e``; ``--peer PYTHON`` adds another
   interpreter's ``pyflowreg`` side by side): for each length (``--e2e-frames``, 120 and
   1000), preset (``--e2e-presets``, fast and balanced) and executor (``--e2e-executors``:
   sequential, threading, multiprocessing and ``default``, no executor named) a FRESH Python
   process (``benchmarks/_e2e_child.py``) imports ``pyflowreg`` and calls
   ``compensate_recording`` HDF5 -> HDF5 with ``save_w=True`` and ``n_jobs``
   (``--e2e-n-jobs``, 2) on the same file. Frames/s count the whole child, interpreter start
   included ("run"), and the call alone ("call"). Runs are interleaved (every configuration,
   this project then the peer, once per round; ``--e2e-repeat`` rounds) and the median
   counts. Printed per length and preset: frames/s and speed-up vs sequential of both, the
   ratios multiprocessing/threading and default/threading, default/sequential; the engine's
   estimate + warp frames/s on the same frames (one thread, ``_e2e_child.py engine``) and the
   pipeline's efficiency = run frames/s per worker / engine frames/s (1 - overhead); and this
   project's phase breakdown (``phase_seconds`` of ``run.json``, medians).

    python benchmarks/pipeline.py                                    # 512 px, 2000 vs 200 frames
    python benchmarks/pipeline.py --size 64 --long 60 --short 20     # a quick check
    python benchmarks/pipeline.py --only e2e --peer PEER_PYTHON
    python benchmarks/pipeline.py --only e2e --e2e-frames 120 --e2e-presets fast --e2e-repeat 5

Long recordings are written by repeating a short synthetic clip (with a drift), so making
the input never holds the whole recording in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from _memory import PeakRSS  # benchmarks/ is on sys.path when run as a script
from pyflowreg.core import estimate, gaussian_filter_video, normalize, prepare_reference
from pyflowreg.datasets import make_recording
from pyflowreg.io import open_reader, open_writer
from pyflowreg.metrics import endpoint_error
from pyflowreg.motion_correction import (
    OFOptions,
    RegistrationConfig,
    compensate_arr,
    compensate_recording,
)
from pyflowreg.motion_correction.initialization import N_INIT_FRAMES
from pyflowreg.motion_correction.reference import normalization_range, prepared_reference_image

CLIP_FRAMES = 50


def write_recording(path: Path, n_frames: int, size: int, seed: int = 0) -> Path:
    """A uint16 recording of ``n_frames``: a synthetic clip repeated with a slow drift."""
    clip = make_recording(CLIP_FRAMES, (size, size), seed=seed, dtype=np.uint16).video
    with open_writer(path) as writer:
        for start in range(0, n_frames, CLIP_FRAMES):
            n = min(CLIP_FRAMES, n_frames - start)
            shift = (start // CLIP_FRAMES) % 5  # drift of up to 4 px between repetitions
            writer.write(np.roll(clip[:n], shift, axis=2))
    return path


def options(source: Path, out: Path, args, **kw) -> OFOptions:
    return OFOptions(
        input_file=source,
        output_path=out,
        quality_setting=args.quality,
        buffer_size=args.buffer_size,
        **kw,
    )


def config(args) -> RegistrationConfig:
    return RegistrationConfig(parallelization=args.executor, n_jobs=args.n_jobs)


def warm_up(args) -> None:
    """Load the compiled kernels once, so that no measurement pays for it."""
    clip = make_recording(3, (32, 32), seed=2).video
    opts = OFOptions(quality_setting=args.quality)
    compensate_arr(clip, None, opts, registration_config=config(args))


# ----------------------------------------------------------------------------- 1. memory


def memory_child(args) -> None:
    """Run in a fresh process: one recording, print its peak memory as JSON."""
    work = Path(args.workdir)
    source = write_recording(work / f"memory_{args.child_frames}.h5", args.child_frames, args.size)
    warm_up(args)
    tracemalloc.start()
    with PeakRSS(pss=True) as peak:
        result = compensate_recording(
            options(source, work / "out_memory", args), config=config(args)
        )
    heap = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    row = {
        "frames": result.n_frames,
        "peak_mib": peak.growth_mib,
        "pss_mib": peak.pss_growth_mib,
        "heap_mib": heap,
    }
    print(json.dumps({**row, "seconds": result.seconds}))


def measure_memory(args, work: Path) -> list[list[dict]]:
    """Per length (short, long), the rows of ``--memory-runs`` runs (interleaved)."""
    runs: dict[int, list[dict]] = {args.short: [], args.long: []}
    for _ in range(max(1, args.memory_runs)):
        for n in runs:
            cmd = [sys.executable, __file__, "--child-frames", str(n), "--workdir", str(work)]
            cmd += _forwarded(args)
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs[n].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return list(runs.values())


def _median(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return float(np.median(values)) if values else None


def _spread(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if row[key] is not None]
    if len(values) < 2:
        return ""
    return f"{min(values):.0f}-{max(values):.0f}"


def _forwarded(args) -> list[str]:
    out = ["--size", str(args.size), "--quality", args.quality]
    out += ["--buffer-size", str(args.buffer_size), "--n-jobs", str(args.n_jobs)]
    if args.executor:
        out += ["--executor", args.executor]
    return out


# ----------------------------------------------------------------------------- 2. overhead


def measure_overhead(args, work: Path) -> list[dict]:
    warm_up(args)
    rows = []
    lengths = [int(n) for n in args.overhead_frames.split(",")] if args.overhead_frames else []
    for n in lengths or (args.short, args.long):
        for fmt, ext in (("HDF5", ".h5"), ("TIFF", ".tif")):
            source = write_recording(work / f"overhead_{n}{ext}", n, args.size)
            out = work / f"out_{fmt.lower()}_{n}"
            result = compensate_recording(
                options(source, out, args, output_format=fmt), config=config(args)
            )
            run = json.loads((out / "run.json").read_text())
            rows.append(
                {
                    "format": fmt,
                    "frames": result.n_frames,
                    "seconds": result.seconds,
                    "flow_seconds": run["flow_seconds"],
                    "reference_seconds": run["reference_flow_seconds"],
                    "executor": run["executor"],
                }
            )
            source.unlink()
    return rows


# ----------------------------------------------------------------------------- 3. accuracy


def measure_accuracy(args, work: Path) -> dict:
    rec = make_recording(args.accuracy_frames, (args.size, args.size), seed=1, dtype=np.float32)
    source = work / "accuracy.h5"
    with open_writer(source) as writer:
        writer.write(rec.video)
    opts = options(source, work / "out_accuracy", args, save_w=True)
    result = compensate_recording(opts, rec.reference, config=config(args))
    with open_reader(result.files["w"]) as reader:
        saved = reader.read(0, len(reader))
    low, high = normalization_range(rec.reference, opts.channel_normalization)
    sigma = opts.sigma_for_channels(rec.video.shape[-1])
    filtered = gaussian_filter_video(normalize(rec.video, low, high), sigma)
    prepared = prepare_reference(
        prepared_reference_image(rec.reference, low, high, sigma), opts.flow_parameters()
    )
    direct = np.stack([estimate(prepared, frame, None) for frame in filtered])
    return {
        "frames": len(saved),
        "pipeline": endpoint_error(saved, rec.flow),
        "engine": endpoint_error(direct, rec.flow),
        "no_correction": endpoint_error(np.zeros_like(rec.flow), rec.flow),
    }


# ----------------------------------------------------------------------------- 4. end to end

CHILD = Path(__file__).with_name("_e2e_child.py")
#: Phases of ``run.json``'s ``phase_seconds``, in the order of a run.
PHASES = (
    "preflight",
    "kernels",
    "executor_start",
    "workers_ready",
    "reference",
    "initial_flow",
    "read_wait",
    "submit",
    "batch_wait",
    "write",
)


def _e2e_child(python: str, args: list[str]) -> dict:
    """Run ``_e2e_child.py`` in a fresh ``python``; its JSON line plus the child's wall time."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # a peer interpreter must import its own pyflowreg
    # Output to files, not pipes: worker processes and the fork server inherit the child's
    # stdout and stderr, and reading a pipe to its end would wait for them to exit too. A
    # user's shell waits for the script's process only.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        launched = time.time()
        code = subprocess.run(
            [python, str(CHILD), *args], stdout=out, stderr=err, env=env, cwd=CHILD.parent
        ).returncode
        wall = time.time() - launched
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        raise RuntimeError(f"{python} {CHILD.name} {' '.join(args)} failed:\n{stderr[-3000:]}")
    row = json.loads(stdout.strip().splitlines()[-1])
    row["wall"] = wall
    if "started" in row:
        row["interpreter"] = row["started"] - launched
        row["imports"] = row["imported"] - row["started"]
        row["exit"] = launched + wall - row["called"]
    return row


def measure_e2e(args, work: Path) -> dict:
    """``{(frames, preset, executor, who): [rows]}`` of interleaved fresh-process runs, and
    ``{(frames, preset): engine row}``."""
    lengths = [int(n) for n in args.e2e_frames.split(",")]
    presets = args.e2e_presets.split(",")
    executors = args.e2e_executors.split(",")
    who = [("this", sys.executable)] + ([("peer", args.peer)] if args.peer else [])
    sources = {n: write_recording(work / f"e2e_{n}.h5", n, args.size) for n in lengths}
    runs: dict = {}
    engine: dict = {}
    for n in lengths:
        for preset in presets:
            engine[n, preset] = _e2e_child(
                sys.executable, ["engine", str(sources[n]), preset, str(min(n, args.engine_frames))]
            )
    for r in range(max(1, args.e2e_repeat)):
        for n in lengths:
            for preset in presets:
                for executor in executors:
                    for label, python in who:
                        if label == "peer" and n not in _peer_lengths(args, lengths):
                            continue
                        out = work / f"out_{label}"
                        shutil.rmtree(out, ignore_errors=True)
                        cmd = ["run", str(sources[n]), str(out), preset, executor]
                        row = _e2e_child(python, [*cmd, str(args.e2e_n_jobs)])
                        shutil.rmtree(out, ignore_errors=True)
                        runs.setdefault((n, preset, executor, label), []).append(row)
                        print(
                            f"   round {r + 1}: {n} frames {preset} {executor:<16} {label}: "
                            f"{row['wall']:.1f} s (call {row['seconds']:.1f} s, ran "
                            f"{row['executor']})",
                            flush=True,
                        )
    return {"runs": runs, "engine": engine, "lengths": lengths, "presets": presets}


def _peer_lengths(args, lengths: list[int]) -> list[int]:
    return [int(n) for n in args.peer_frames.split(",")] if args.peer_frames else lengths


def _med(rows: list[dict], get) -> float:
    return float(np.median([get(row) for row in rows]))


def print_e2e(args, measured: dict) -> None:
    runs, engine = measured["runs"], measured["engine"]
    executors = args.e2e_executors.split(",")
    jobs = args.e2e_n_jobs
    for n in measured["lengths"]:
        for preset in measured["presets"]:
            print(
                f"\n   {n} frames, {preset}, n_jobs {jobs} (median of {args.e2e_repeat}; run: "
                "the whole fresh process, call: compensate_recording alone)"
            )
            header = f"{'executor':<16} {'ran':<16} {'run f/s':>8} {'call f/s':>8} {'x seq':>6}"
            if args.peer:
                header += f" | {'peer f/s':>8} {'call f/s':>8} {'x seq':>6} {'ours/peer':>9}"
            print(header)
            fps = {}
            for who in ("this", "peer"):
                for executor in executors:
                    rows = runs.get((n, preset, executor, who))
                    if rows:
                        fps[who, executor] = (
                            n / _med(rows, lambda row: row["wall"]),
                            n / _med(rows, lambda row: row["seconds"]),
                        )
            for executor in executors:
                rows = runs.get((n, preset, executor, "this"))
                if not rows:
                    continue
                line = f"{executor:<16} {rows[0]['executor']:<16}"
                for who in ("this", "peer") if args.peer else ("this",):
                    if (who, executor) not in fps:
                        line += f" | {'-':>8} {'-':>8} {'-':>6} {'-':>9}"
                        continue
                    run_fps, call_fps = fps[who, executor]
                    seq = fps.get((who, "sequential"))
                    speed = f"{run_fps / seq[0]:.2f}" if seq else "-"
                    line += (" | " if who == "peer" else " ") + (
                        f"{run_fps:>8.2f} {call_fps:>8.2f} {speed:>6}"
                    )
                    if who == "peer":
                        line += f" {fps['this', executor][0] / run_fps:>9.2f}"
                print(line)
            ours = {e: fps[("this", e)][0] for e in executors if ("this", e) in fps}
            ratios = []
            for a, b in (
                ("multiprocessing", "sequential"),
                ("multiprocessing", "threading"),
                ("default", "threading"),
                ("default", "sequential"),
            ):
                if a in ours and b in ours:
                    ratios.append(f"{a}/{b} {ours[a] / ours[b]:.2f}")
            if ratios:
                print("   ratios (run f/s): " + ", ".join(ratios))
            eng = engine.get((n, preset))
            if eng:
                cells = []
                for executor, value in ours.items():
                    workers = 1 if executor == "sequential" else jobs
                    cells.append(f"{executor} {value / workers / eng['fps']:.2f}")
                print(
                    f"   engine estimate+warp: {eng['fps']:.2f} f/s (one thread, {eng['frames']} "
                    "frames); efficiency = run f/s per worker / engine: " + ", ".join(cells)
                )
                ref = len(OFOptions().resolved_reference_frames(n))
                flows = n + ref + min(N_INIT_FRAMES, n)
                print(
                    f"   bound of the efficiency: {n / flows:.2f} ({flows} flow estimates for {n} "
                    f"frames: {ref} reference frames and the first batch's {min(N_INIT_FRAMES, n)}"
                    "-frame initial window are registered too)"
                )
            print_phases(runs, n, preset, executors)


def print_phases(runs: dict, n: int, preset: str, executors: list[str]) -> None:
    """Median seconds per phase of this project's runs (``phase_seconds`` of ``run.json``)."""
    rows = {e: runs.get((n, preset, e, "this")) for e in executors}
    rows = {e: r for e, r in rows.items() if r and r[0].get("record", {}).get("phase_seconds")}
    if not rows:
        return
    print(f"   phases, s (this project; median){''.join(f'{e[:15]:>16}' for e in rows)}")

    def line(label: str, get) -> None:
        cells = []
        for runs_of in rows.values():
            try:
                cells.append(f"{_med(runs_of, get):>16.2f}")
            except (KeyError, TypeError):
                cells.append(f"{'-':>16}")
        print(f"     {label:<31}{''.join(cells)}")

    line("interpreter start", lambda row: row["interpreter"])
    line("imports", lambda row: row["imports"])
    line("call (compensate_recording)", lambda row: row["seconds"])
    for phase in PHASES:
        line(f"  {phase}", lambda row, p=phase: row["record"]["phase_seconds"].get(p, 0.0))
    line(
        "  meta + commit (call - run)",
        lambda row: (
            row["seconds"]
            - row["record"]["seconds"]
            - row["record"]["phase_seconds"].get("preflight", 0.0)
        ),
    )
    line("  flow (executor, all)", lambda row: row["record"]["flow_seconds"])
    line("  flow (reference pass)", lambda row: row["record"]["reference_flow_seconds"])
    line("exit (after the call)", lambda row: row["exit"])
    line("whole process", lambda row: row["wall"])


# ----------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="frame side in px (512)")
    parser.add_argument("--long", type=int, default=2000, help="frames of the long recording")
    parser.add_argument("--short", type=int, default=200, help="frames of the short recording")
    parser.add_argument("--accuracy-frames", type=int, default=40)
    parser.add_argument("--memory-runs", type=int, default=3, help="runs per length (median)")
    parser.add_argument(
        "--overhead-frames",
        default=None,
        help="comma-separated recording lengths of the overhead runs (default: short,long)",
    )
    parser.add_argument("--quality", default="fast", help="quality_setting (fast)")
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=50,
        help="frames per batch (50: the short recording then holds 4 batches, enough for the "
        "pipeline's steady state of one batch read ahead, one registered, one written)",
    )
    parser.add_argument("--executor", default=None, help="parallelization (auto)")
    parser.add_argument("--n-jobs", type=int, default=-1)
    sections = ["memory", "overhead", "accuracy", "e2e"]
    parser.add_argument("--skip", nargs="*", default=[], choices=sections)
    parser.add_argument("--only", nargs="*", default=None, choices=sections, help="run only these")
    parser.add_argument("--e2e-frames", default="120,1000", help="lengths of the e2e runs")
    parser.add_argument("--e2e-presets", default="fast,balanced")
    parser.add_argument("--e2e-executors", default="sequential,threading,multiprocessing,default")
    parser.add_argument("--e2e-n-jobs", type=int, default=2)
    parser.add_argument("--e2e-repeat", type=int, default=3, help="rounds (median counts)")
    parser.add_argument("--engine-frames", type=int, default=30, help="frames the engine times")
    parser.add_argument("--peer", default=None, help="python of a peer pyflowreg, side by side")
    parser.add_argument(
        "--peer-frames", default=None, help="lengths the peer runs (default: --e2e-frames)"
    )
    parser.add_argument("--child-frames", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only is not None:
        args.skip = [name for name in sections if name not in args.only]
    elif args.peer is None:
        args.skip.append("e2e")  # long: only when asked for (--only e2e, or --peer)
    if args.child_frames is not None:
        memory_child(args)
        return

    print(
        f"pipeline benchmark: {args.size}x{args.size} px, quality {args.quality}, "
        f"buffer_size {args.buffer_size}, executor {args.executor or 'auto'}, n_jobs {args.n_jobs}"
    )
    with tempfile.TemporaryDirectory(prefix="pyflowreg_bench_") as tmp:
        work = Path(tmp)
        if "memory" not in args.skip:
            print("\n1. peak memory vs recording length, above the start, workers included")
            print("   (PSS: shared pages counted once; RSS: summed per process, shared pages")
            print("   once per process that maps them; heap: NumPy/Python allocations of the")
            print("   main process, tracemalloc)")
            print(f"   (median of {max(1, args.memory_runs)} runs per length; range: of PSS)")
            print(
                f"{'frames':>8} {'PSS MiB':>9} {'range':>11} {'RSS MiB':>9} {'heap MiB':>9} "
                f"{'seconds':>9}"
            )
            runs = measure_memory(args, work)
            for rows in runs:
                pss = _median(rows, "pss_mib")
                print(
                    f"{rows[0]['frames']:>8} {'n/a' if pss is None else f'{pss:.1f}':>9} "
                    f"{_spread(rows, 'pss_mib'):>11} {_median(rows, 'peak_mib'):>9.1f} "
                    f"{_median(rows, 'heap_mib'):>9.1f} {_median(rows, 'seconds'):>9.1f}"
                )
            short, long = runs
            for key, label in (("pss_mib", "PSS"), ("peak_mib", "RSS"), ("heap_mib", "heap")):
                a, b = _median(short, key), _median(long, key)
                if a and b is not None:
                    frames = f"{long[0]['frames']} frames vs {short[0]['frames']}"
                    print(f"   {label}: {frames}: {100 * (b / a - 1):+.1f}%")
        if "overhead" not in args.skip:
            print("\n2. file-to-file overhead vs flow time (flow: time in the executor, the")
            print("   reference pass included; ref: the reference pass's part of it;")
            print("   other = total - flow; other % = other / flow; +ref % = (other + ref) /")
            print("   (flow - ref), i.e. the reference pass counted as overhead too)")
            print(
                f"{'format':>6} {'frames':>7} {'total s':>8} {'flow s':>8} {'ref s':>7} "
                f"{'other s':>8} {'other %':>8} {'+ref %':>7}"
            )
            for row in measure_overhead(args, work):
                other = row["seconds"] - row["flow_seconds"]
                ref = row["reference_seconds"]
                registration = row["flow_seconds"] - ref
                print(
                    f"{row['format']:>6} {row['frames']:>7} {row['seconds']:>8.2f} "
                    f"{row['flow_seconds']:>8.2f} {ref:>7.2f} {other:>8.2f} "
                    f"{100 * other / row['flow_seconds']:>7.1f}% "
                    f"{100 * (other + ref) / registration:>6.1f}%"
                )
        if "accuracy" not in args.skip:
            acc = measure_accuracy(args, work)
            print(f"\n3. endpoint error vs ground truth ({acc['frames']} frames, px)")
            print(f"{'':>14} {'mean':>7} {'p95':>7} {'max':>7}")
            for name in ("no_correction", "engine", "pipeline"):
                epe = acc[name]
                print(f"{name:>14} {epe.mean:>7.3f} {epe.p95:>7.3f} {epe.max:>7.3f}")
        if "e2e" not in args.skip:
            print(
                f"\n4. end to end, HDF5 -> HDF5 with save_w, a fresh process per run "
                f"({os.cpu_count()} cores; load {os.getloadavg()[0]:.1f} at the start)"
            )
            print_e2e(args, measure_e2e(args, work))
            print(f"   (load {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
