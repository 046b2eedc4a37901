"""The ``pyflowreg`` command line (also ``python -m pyflowreg``).

::

    pyflowreg demo                                   # synthetic recording -> registration -> report
    pyflowreg compensate rec.tif -o results/ --quality balanced -j 8 --save-w
    pyflowreg compensate red.tif green.tif -o results/       # one file per channel
    pyflowreg compensate --config options.toml --buffer-size 200   # flags override the file
    pyflowreg compensate rec.h5 -o results/ --resume   # continue a killed run
    pyflowreg backends                               # executors and flow backends usable here
    pyflowreg info                                   # versions and backends
    pyflowreg info results/                          # verify a run folder against its run.json
    pyflowreg report results/                        # quality report of a finished run
    pyflowreg bench --size 512 --frames 20           # flow-engine speed and accuracy per preset

:func:`main` returns the exit status: 0 on success, 2 for a usage or option error and for
every input error found before any work (missing, unreadable or malformed input, a video of the
wrong shape or dtype, NaN or inf frames, reference frames outside the video, an output folder
that is a file, not writable or too small), 1 for a runtime error (a failure during the run, the
output folder in use by another live run, a missing optional extra, a run folder that does not
match its run.json), 130 when interrupted. Errors print one line ``pyflowreg: error: ...``
on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PROG = "pyflowreg"
QUALITIES = ("quality", "balanced", "fast")
INTERPOLATIONS = ("cubic", "catmull_rom", "bspline", "lanczos3", "linear", "nearest")  # core.warp


def _alpha_arg(text: str):
    """``--alpha``: "auto", a number, or "AX,AY"."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected a number, "AX,AY" or "auto", got {text!r}'
        ) from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f'expected a number, "AX,AY" or "auto", got {text!r}')
    return values[0] if len(values) == 1 else values


EXECUTORS = ("sequential", "threading", "multiprocessing", "dask")
PLOT_HINT = 'install the plot extra for the report: pip install "pyflowreg[plot]"'


class UsageError(Exception):
    """A bad command-line or option value (exit status 2)."""


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyflowreg`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    common.add_argument("--debug", action="store_true", help="debug logging and tracebacks")

    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--executor", choices=EXECUTORS, help="parallel executor (default: auto)")
    run.add_argument("-j", "--n-jobs", type=int, help="workers (-1 = all cores, the default)")
    run.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Motion correction of 2-photon microscopy videos by variational optical flow.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version('pyflowreg')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "compensate",
        parents=[common, run],
        help="register a recording",
        description="Register a recording; outputs go to OUTDIR.",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="recording file (TIFF, HDF5, MAT, NPY, Zarr); several files = one per channel",
    )
    p.add_argument("-o", "--output", metavar="OUTDIR", help="output folder (default: results)")
    p.add_argument("--quality", choices=QUALITIES, help="speed/accuracy preset")
    p.add_argument(
        "--alpha",
        type=_alpha_arg,
        metavar="ALPHA",
        help='smoothness weight: a number, "AX,AY", or "auto" (chosen from the data by '
        "held-out-block cross-validation; best for smooth motion). Default 1.5",
    )
    p.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        help="kernel of the output warp (default cubic; see docs/numerics.md)",
    )
    p.add_argument("--buffer-size", type=int, help="frames per batch (default 400)")
    p.add_argument("--backend", help="flow backend, see `pyflowreg backends` (default flowreg)")
    p.add_argument("--device", help='device of a GPU backend, e.g. "cuda:0"')
    p.add_argument(
        "--reference-frames",
        metavar="FRAMES",
        help='frames averaged into the reference: "START:STOP", "1,2,3", or an image file',
    )
    p.add_argument(
        "--save-w",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write the displacement fields",
    )
    p.add_argument("--output-format", help="HDF5, TIFF, MAT, NPY or ZARR (default HDF5)")
    p.add_argument("--config", metavar="FILE", help="options file (.toml, .yaml, .json)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run in OUTDIR (same input and options) from its last finished "
        "batch (HDF5, NPY and Zarr outputs); without one, start from the beginning",
    )
    p.set_defaults(func=_cmd_compensate)

    p = sub.add_parser(
        "demo",
        parents=[common, run],
        help="register a synthetic recording with known motion",
        description="Generate a synthetic 2-photon recording with known motion, register it, "
        "and report accuracy (endpoint error against the true motion) and speed.",
    )
    p.add_argument("-o", "--output", default="pyflowreg-demo", metavar="OUTDIR")
    p.add_argument("--frames", type=int, default=100, help="number of frames (default 100)")
    p.add_argument("--size", type=int, default=256, help="frame size in px (default 256)")
    p.add_argument("--quality", choices=QUALITIES, default="balanced")
    p.add_argument("--seed", type=int, default=0, help="random seed of the recording")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "info",
        parents=[common],
        help="versions and backends, or verify a run folder",
        description="Without FOLDER: versions, executors and flow backends. With FOLDER: verify "
        "the run in it against its run.json (exit status 1 if it does not match).",
    )
    p.add_argument("folder", nargs="?", metavar="FOLDER", help="output folder of a run")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("backends", parents=[common], help="executors and flow backends")
    p.set_defaults(func=_cmd_backends)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="quality report of a finished run or of a session",
        description="Write OUTDIR/report/report.html for the output folder of a run, or "
        "<final_results>/report/report.html for a session (its config file, output_root or "
        "final_results folder).",
    )
    p.add_argument(
        "outdir", metavar="OUTDIR", help="output folder of the run, or a session config/folder"
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "bench",
        parents=[common],
        help="flow-engine benchmark (frames/s, accuracy)",
        description="Time pyflowreg.core on synthetic frames with known motion, one thread.",
    )
    p.add_argument("--size", type=int, default=512, help="frame size in px (default 512)")
    p.add_argument("--frames", type=int, default=10, help="timed frames per preset (default 10)")
    p.add_argument("--presets", nargs="+", choices=QUALITIES, default=list(QUALITIES))
    p.set_defaults(func=_cmd_bench)

    from .session.cli import add_session_parser  # pyflowreg session run|status|array|...

    add_session_parser(sub, parents=[common])
    return parser


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyflowreg`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 1 runtime error, 2 usage or option error, 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error, already printed
        return exc.code if isinstance(exc.code, int) else 0
    with _cli_logging(args.debug), warnings.catch_warnings(), _InterruptFlag() as ctrl_c:
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        except Exception as exc:
            if ctrl_c.seen or _raised_while_interrupted(exc):
                _error("interrupted")  # an error of the unwinding is not the user's problem
                return 130
            if args.debug:
                traceback.print_exc()
            _error(_describe(exc))
            return 2 if _is_usage_error(exc) else 1


class _InterruptFlag:
    """Remembers a Ctrl-C while a command runs (SIGINT still raises KeyboardInterrupt), so
    that an error raised while the run unwinds from it (a lock left half-released by the
    interrupt, a pool torn down under a waiting thread) still exits 130 as an interruption."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.seen = True
        signal.default_int_handler(signum, frame)

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _raised_while_interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling a KeyboardInterrupt (its context chain)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


@contextlib.contextmanager
def _cli_logging(debug: bool):
    """Log pyflowreg's messages to stderr (DEBUG with ``--debug``); restored afterwards."""
    logger = logging.getLogger("pyflowreg")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    old_level = logger.level
    logger.addHandler(handler)
    if debug:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _is_usage_error(exc: Exception) -> bool:
    from pydantic import ValidationError

    return isinstance(exc, (UsageError, ValidationError))


def _describe(exc: BaseException) -> str:
    """One line for the user: the message, without pydantic's decoration."""
    from pydantic import ValidationError

    from .motion_correction import RegistrationError

    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
            field = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(msg if not field or field in msg else f"{field}: {msg}")
        return "invalid option: " + "; ".join(parts)
    if isinstance(
        exc, ImportError | UsageError | RegistrationError | FileNotFoundError | ValueError
    ):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror or exc}"
    elif isinstance(exc, OSError) and len(exc.args) == 1:  # our own messages name the path
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    return " ".join(message.split()) or type(exc).__name__


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _out(args: argparse.Namespace, text: str = "") -> None:
    if not args.quiet:
        print(text)


# ----------------------------------------------------------------------------- compensate


def _cmd_compensate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        options = _build_options(args)
    except ValidationError:
        raise
    except (ValueError, TypeError) as exc:  # bad option values and unparsable option files
        raise UsageError(str(exc)) from exc
    config = _registration_config(args)
    _check_backend_name(options.flow_backend)
    try:
        options.check_input_exists()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    result = _run(options, config, args, input_errors_are_usage_errors=True)
    _print_summary(args, result)
    return 0


def _check_backend_name(name: str) -> None:
    from ._runtime import get_runtime

    names = get_runtime().list_flow_backends()
    if name not in names:
        raise UsageError(f"flow_backend must be one of {names}, got {name!r}")


def _build_options(args: argparse.Namespace):
    """OFOptions from ``--config`` (if any) with the explicit flags on top."""
    from .motion_correction import OFOptions

    fields: dict[str, Any] = {}
    if args.config:
        if not Path(args.config).is_file():
            raise UsageError(f"options file not found: {args.config}")
        loaded = OFOptions.load(args.config)
        fields = {k: getattr(loaded, k) for k in loaded.model_fields_set}
    if args.inputs:
        fields["input_file"] = args.inputs[0] if len(args.inputs) == 1 else list(args.inputs)
    if fields.get("input_file") is None:
        raise UsageError("no input file: give INPUT or set input_file in --config")
    flags = {
        "output_path": args.output,
        "quality_setting": args.quality,
        "alpha": args.alpha,
        "interpolation_method": args.interpolation,
        "buffer_size": args.buffer_size,
        "flow_backend": args.backend,
        "save_w": args.save_w,
        "output_format": args.output_format,
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    if args.reference_frames is not None:
        fields["reference_frames"] = parse_reference_frames(args.reference_frames)
    if args.device is not None:
        if fields.get("flow_backend", "flowreg") == "flowreg":  # it would ignore the device
            raise UsageError(
                "--device applies to the GPU backends (--backend flowreg_torch or flowreg_cuda); "
                "the flowreg backend runs on the CPU"
            )
        fields["backend_params"] = {**fields.get("backend_params", {}), "device": args.device}
    return OFOptions(**fields)


def parse_reference_frames(text: str) -> range | list[int] | Path:
    """``"0:50"`` -> ``range(0, 50)``, ``"1,2,3"`` -> ``[1, 2, 3]``, else an image path."""
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*)?", text)
    if match:
        start, stop, step = (int(g) if g else None for g in match.groups())
        frames = range(start or 0, stop, step or 1)
        if len(frames) == 0:
            raise UsageError(f"--reference-frames {text!r} selects no frames")
        return frames
    if re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*,?\s*", text):
        return [int(x) for x in text.split(",") if x.strip()]
    if Path(text).is_file():
        return Path(text)
    raise UsageError(
        f"--reference-frames must be START:STOP, a comma-separated list of frame indices or "
        f"an existing image file, got {text!r}"
    )


def _registration_config(args: argparse.Namespace):
    from .executors.base import validate_n_jobs
    from .motion_correction.compensate_recording import RegistrationConfig

    kwargs: dict[str, Any] = {}  # not verbose: the CLI draws its own progress bar
    if args.executor is not None:
        kwargs["parallelization"] = args.executor
    if args.n_jobs is not None:
        try:
            kwargs["n_jobs"] = validate_n_jobs(args.n_jobs, "--n-jobs")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.scheduler is not None:
        if args.executor not in (None, "dask"):
            raise UsageError(f"--scheduler needs --executor dask, got --executor {args.executor}")
        kwargs["parallelization"] = "dask"
        kwargs["dask_address"] = args.scheduler
        if "dask_address" not in getattr(RegistrationConfig, "__dataclass_fields__", {}):
            raise UsageError("--scheduler is not supported by this version of pyflowreg")
    return RegistrationConfig(**kwargs)


def _prepare_output_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot create the output folder ({exc.strerror})"
        raise OSError(exc.errno, message, str(path)) from exc
    return path


def _run(options, config, args: argparse.Namespace, input_errors_are_usage_errors=False):
    """compensate_recording with a progress bar (frames, frames/s, ETA) on a terminal.

    With ``input_errors_are_usage_errors``, an error raised before any work (an input error:
    ``ValueError``, ``TypeError``, ``OSError``, not a ``RegistrationError``) exits with status 2;
    a live run holding the output folder stays a runtime error (status 1).
    """
    from tqdm import tqdm

    from .motion_correction import RegistrationError, compensate_recording
    from .motion_correction._run_folder import OutputFolderInUseError

    # disable=None: draw the bar only when stderr is a terminal, keeping batch-job logs clean
    bar = tqdm(unit="frame", desc="registering", disable=True if args.quiet else None)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        return compensate_recording(
            options,
            config=config,
            progress_callback=progress,
            resume=bool(getattr(args, "resume", False)),
        )
    except (ValueError, TypeError, OSError, KeyError) as exc:
        bar.leave = False  # erase the bar: the error line follows
        if not input_errors_are_usage_errors or isinstance(
            exc, RegistrationError | OutputFolderInUseError
        ):
            raise
        raise UsageError(_describe(exc)) from exc
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()


def _print_summary(args: argparse.Namespace, result) -> None:
    if args.quiet:
        return
    seconds = float(result.seconds)
    rate = result.n_frames / seconds if seconds > 0 else float("nan")
    _out(
        args,
        f"Registered {result.n_frames} frames in {seconds:.1f} s "
        f"({rate:.1f} frames/s, executor {result.executor})",
    )
    _out(args, f"  {'output folder:':<20} {result.output_path}")
    for name in ("compensated", "w", "valid_mask"):
        if name in result.files:
            _out(args, f"  {name + ':':<20} {result.files[name]}")
    stats = result.statistics
    if "mean_displacement" in stats and len(stats["mean_displacement"]):
        _out(
            args,
            f"  {'displacement:':<20} mean {np.nanmean(stats['mean_displacement']):.2f} px, "
            f"max {np.nanmax(stats['max_displacement']):.2f} px",
        )
    if "correlation" in stats and len(stats["correlation"]):
        before = np.nanmean(stats.get("correlation_before", [np.nan]))
        after = np.nanmean(stats["correlation"])
        _out(
            args,
            f"  {'correlation:':<20} before {before:.3f} -> after {after:.3f} "
            "(frame vs reference, mean over frames)",
        )


# ----------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from .evaluation import accuracy_against_truth, warm_up, write_demo_recording
    from .io import open_reader
    from .motion_correction import OFOptions

    if args.frames < 2 or args.size < 16:
        raise UsageError(
            f"demo needs --frames >= 2 and --size >= 16, got {args.frames}, {args.size}"
        )
    config = _registration_config(args)
    outdir = _prepare_output_dir(Path(args.output)).resolve()
    _out(
        args,
        f"Synthetic 2-photon recording: {args.frames} frames of {args.size}x{args.size} px "
        "with known motion",
    )
    input_path = outdir / "demo_input.h5"
    rec = write_demo_recording(input_path, args.frames, args.size, seed=args.seed)
    options = OFOptions(
        input_file=input_path,
        output_path=outdir,
        quality_setting=args.quality,
        save_w=True,
        buffer_size=min(400, args.frames),
    )
    # compile and start the workers on a crop first: the timed run measures registration
    seconds = warm_up(rec.video, args.quality, config)
    if seconds > 2.0:
        _out(args, f"Compiled the kernels in {seconds:.0f} s (once; cached for later runs)")
    result = _run(options, config, args)
    _print_summary(args, result)

    with open_reader(result.files["w"]) as reader:
        w = np.asarray(reader.read(0, len(reader)), dtype=np.float32)
    accuracy = accuracy_against_truth(w, rec.flow, result.reference, rec.reference)
    epe = accuracy.epe
    rate = result.n_frames / float(result.seconds) if result.seconds else float("nan")
    print("Accuracy against the true motion (inner 80% of the frame):")
    print(f"  {'endpoint error:':<20} mean {epe.mean:.3f} px, 95th percentile {epe.p95:.3f} px")
    print(
        f"  (in the coordinates of the reference, {accuracy.reference_shift:.2f} px from the "
        "motion-free scene)"
    )
    print(f"{'Speed:':<22} {rate:.1f} frames/s ({args.size}x{args.size} px, {args.quality} preset)")
    try:
        from .report import make_report

        page = make_report(outdir)
    except ImportError:
        print(f"No report: matplotlib is missing; {PLOT_HINT}")
    else:
        print(f"Report: {page}")
    return 0


# ----------------------------------------------------------------------------- info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    if args.folder is not None:
        return _cmd_info_run(args)
    print(f"pyflowreg {_version('pyflowreg')}")
    print(f"python    {platform.python_version()} ({sys.executable})")
    for dist in ("numpy", "scipy", "numba", "h5py", "tifffile", "pydantic"):
        print(f"{dist:<10}{_version(dist) or 'missing'}")
    print(f"kernels   {_kernels_line()}")
    optional = {
        "torch": "torch",
        "numba-cuda": "cuda",
        "dask": "dask",
        "zarr": "zarr",
        "matplotlib": "plot",
    }
    print("optional:")
    for dist, extra in optional.items():
        version = _version(dist)
        shown = version or f'not installed (pip install "pyflowreg[{extra}]")'
        print(f"  {dist:<12}{shown}")
    print()
    return _cmd_backends(args)


def _kernels_line() -> str:
    """Whether Numba's cache holds the compiled kernels of this environment."""
    from ._kernels import kernel_status

    status = kernel_status()
    if status.compiled:
        took = status.compile_seconds
        took = f"; compiling them took {took:.0f} s" if took else ""
        return f"compiled ({status.n_kernels} kernels cached in {status.cache_dir}{took})"
    return (
        f"not compiled: {status.reason} (the first run compiles them, about a minute; "
        f"cache: {status.cache_dir})"
    )


def _cmd_info_run(args: argparse.Namespace) -> int:
    """Verify a run folder against its run.json and describe the run."""
    from .motion_correction.runs import load_run

    run = load_run(args.folder)
    record = run.record
    shape = "x".join(str(s) for s in record.get("input_shape", [])) or "?"
    print(
        f"run {run.run_id} in {run.folder}: verified, {len(run.files) - 1} outputs match run.json"
    )
    print(f"  {'input:':<14}{record.get('input', '?')} ({shape})")
    seconds = record.get("seconds")
    timing = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    print(
        f"  {'frames:':<14}{run.n_frames}{timing}, executor {record.get('executor', '?')}, "
        f"finished {record.get('end_time', '?')}"
    )
    for key, entry in record["outputs"].items():
        print(f"  {key + ':':<14}{entry['file']} ({entry['bytes']} bytes)")
    return 0


def _cmd_backends(args: argparse.Namespace) -> int:
    from ._runtime import get_runtime

    runtime = get_runtime()
    print("executors (auto-selection order):")
    for entry in runtime.executor_info():
        print(_availability_line(entry))
    print("flow backends:")
    for entry in runtime.flow_backend_info():
        supported = _field(entry, "supported_executors")
        executors = ", ".join(supported) if supported else "all"
        print(f"{_availability_line(entry)}  [executors: {executors}]")
    return 0


def _field(entry: Any, name: str) -> Any:
    return entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)


def _availability_line(entry: Any) -> str:
    name, available = _field(entry, "name"), _field(entry, "available")
    if available:
        description = _field(entry, "description")
        return f"  {name:<18}available" + (f" - {description}" if description else "")
    return f"  {name:<18}unavailable: {_field(entry, 'reason') or 'unknown reason'}"


# ----------------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report
    from .session_report import is_session_source, make_session_report

    make = make_session_report if is_session_source(args.outdir) else make_report
    try:
        page = make(args.outdir)
    except ImportError:
        raise ImportError(f"matplotlib is missing; {PLOT_HINT}") from None
    _out(args, f"Report: {page}")
    return 0


# ----------------------------------------------------------------------------- bench


def _cmd_bench(args: argparse.Namespace) -> int:
    from .evaluation import engine_benchmark

    if args.size < 16 or args.frames < 1:
        raise UsageError(
            f"bench needs --size >= 16 and --frames >= 1, got {args.size}, {args.frames}"
        )
    rows = engine_benchmark(args.size, args.frames, args.presets)
    print(
        f"flow engine (pyflowreg.core, one thread): {args.frames} frames of "
        f"{args.size}x{args.size} px"
    )
    print(f"{'preset':<10}{'frames/s':>10}{'ms/frame':>10}{'EPE mean':>10}{'EPE p95':>10}")
    for row in rows:
        print(
            f"{row.preset:<10}{row.frames_per_second:>10.2f}{row.ms_per_frame:>10.1f}"
            f"{row.epe.mean:>10.3f}{row.epe.p95:>10.3f}"
        )
    return 0
