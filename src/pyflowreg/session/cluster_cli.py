"""``pyflowreg session dask`` and ``pyflowreg session jobscript`` (registered through
:data:`pyflowreg.session.cli.EXTENSION_MODULES`; the work is in
:mod:`pyflowreg.session.dask_runner` and :mod:`pyflowreg.session.jobscript`, loaded when a
command runs, so that building the parser stays light)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_session_command"]

JOBQUEUE_CHOICES = ("pbs", "sge", "slurm")
SCHEDULER_CHOICES = ("pbs", "sge", "slurm")


def add_session_command(subparsers, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add ``dask`` and ``jobscript`` to the ``pyflowreg session`` subcommands."""
    _add_dask(subparsers, list(parents))
    _add_jobscript(subparsers, list(parents))


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-c", required=True, metavar="FILE", help="session config (.toml, .yaml)"
    )


# ---------------------------------------------------------------------- dask


def _add_dask(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "dask",
        parents=parents,
        help="stage 1 on a Dask cluster (one task per recording), stages 2-3 here",
        description="Run stage 1 of every recording not yet done as one Dask task each (a "
        "LocalCluster by default, or --address / --scheduler-file / --jobqueue), then stages "
        "2 and 3 on this machine.",
    )
    _config_arg(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--address", metavar="ADDR", help="scheduler address, tcp://host:8786")
    where.add_argument("--scheduler-file", metavar="FILE", help="scheduler file of a running one")
    where.add_argument(
        "--jobqueue",
        choices=JOBQUEUE_CHOICES,
        help="start a dask-jobqueue cluster (pip install dask-jobqueue)",
    )
    p.add_argument(
        "--n-workers",
        type=int,
        metavar="N",
        help="LocalCluster worker processes (default: one per recording to do, at most one per "
        "core), or jobqueue jobs (default 1)",
    )
    p.add_argument(
        "--threads-per-task",
        type=int,
        default=1,
        metavar="N",
        help="threads each recording uses on its worker (default 1)",
    )
    p.add_argument("--cores", type=int, metavar="N", help="jobqueue: cores per job")
    p.add_argument("--memory", metavar="SIZE", help="jobqueue: memory per job, e.g. 16GB")
    p.add_argument("--walltime", metavar="TIME", help="jobqueue: time limit, e.g. 02:00:00")
    p.add_argument("--queue", metavar="NAME", help="jobqueue: queue or partition")
    p.add_argument(
        "--job-extra",
        action="append",
        default=[],
        metavar="DIRECTIVE",
        help="jobqueue: extra scheduler directive (repeatable), e.g. --job-extra=--gres=gpu:1",
    )
    p.add_argument(
        "--stage", type=int, choices=(1, 2, 3), help="run only this stage (2 and 3: on the client)"
    )
    p.add_argument("--no-resume", action="store_true", help="redo everything (resume = false)")
    p.add_argument("--retries", type=int, default=2, help="reruns of a failed task (default 2)")
    p.set_defaults(func=_cmd_dask)


def _cmd_dask(args: argparse.Namespace) -> int:
    import numpy as np

    from .cli import _usage_error, load_config, out
    from .dask_runner import run_session_dask

    if args.n_workers is not None and args.n_workers < 1:
        raise _usage_error(f"--n-workers must be >= 1, got {args.n_workers}")
    if args.threads_per_task < 1:
        raise _usage_error(f"--threads-per-task must be >= 1, got {args.threads_per_task}")
    if args.retries < 0:
        raise _usage_error(f"--retries must be >= 0, got {args.retries}")
    jobqueue_kwargs: dict[str, Any] = {
        key: value
        for key, value in (
            ("cores", args.cores),
            ("memory", args.memory),
            ("walltime", args.walltime),
            ("queue", args.queue),
        )
        if value is not None
    }
    if args.job_extra:
        jobqueue_kwargs["job_extra_directives"] = list(args.job_extra)
    if jobqueue_kwargs and args.jobqueue is None:
        raise _usage_error("--cores, --memory, --walltime, --queue and --job-extra need --jobqueue")
    config = load_config(args)
    stages = (args.stage,) if args.stage else (1, 2, 3)
    cluster: dict[str, Any] = {}
    if 1 in stages:
        cluster = {
            "address": args.address,
            "scheduler_file": args.scheduler_file,
            "jobqueue": args.jobqueue,
            "jobqueue_kwargs": jobqueue_kwargs or None,
            "n_workers": args.n_workers,
            "threads_per_task": args.threads_per_task,
            "retries": args.retries,
            "progress": not args.quiet,
        }
    result = run_session_dask(config, stages=stages, **cluster)
    if 1 in stages:
        out(
            args,
            f"stage 1 on dask: {len(result.processed)} recording(s) processed, "
            f"{len(result.skipped)} verified done before",
        )
    if result.displacement_fields is not None and 2 in stages:
        out(
            args,
            f"stage 2: {len(result.displacement_fields)} field(s), centre "
            f"{Path(result.center_file).name} (index {result.middle_idx})",
        )
    if result.final_mask is not None:
        mask = np.asarray(result.final_mask)
        out(
            args,
            f"stage 3: final mask {int(mask.sum())}/{mask.size} valid pixels in "
            f"{config.resolve_output_paths().final_results}",
        )
    return 0


# ---------------------------------------------------------------------- jobscript


def _add_jobscript(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "jobscript",
        parents=parents,
        help="print a batch script: stage-1 array job, or the stages 2-3 job",
        description="Print the stage-1 array job (one task per recording) or, with --stage 2-3, "
        "the job running stages 2 and 3 after it; --write DIR writes both and prints the two "
        "commands that submit them.",
    )
    _config_arg(p)
    p.add_argument("--scheduler", required=True, choices=SCHEDULER_CHOICES)
    p.add_argument(
        "--stage", choices=("1", "2-3"), default="1", help="which script to print (default 1)"
    )
    p.add_argument("--write", metavar="DIR", help="write both scripts into DIR instead")
    p.add_argument("--time", default="02:00:00", help="wall time per job (default 02:00:00)")
    p.add_argument("--mem", default="16G", help="memory per task (default 16G)")
    p.add_argument("--cpus", type=int, default=4, help="cores per task (default 4)")
    p.add_argument("--partition", "--queue", dest="partition", help="partition or queue")
    p.add_argument("--max-parallel", type=int, metavar="N", help="array tasks running at once")
    p.add_argument("--job-name", default="pyflowreg-session", help="name of the array job")
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="shell line run first, e.g. --setup 'module load python' (repeatable)",
    )
    p.add_argument("--python", metavar="PATH", help="interpreter on the nodes (default: this one)")
    p.set_defaults(func=_cmd_jobscript)


def _cmd_jobscript(args: argparse.Namespace) -> int:
    from .cli import _usage_error
    from .config import SessionConfigError
    from .jobscript import make_jobscripts, write_jobscripts

    try:
        scripts = make_jobscripts(
            args.config,
            args.scheduler,
            time=args.time,
            mem=args.mem,
            cpus=args.cpus,
            partition=args.partition,
            max_parallel=args.max_parallel,
            job_name=args.job_name,
            setup=args.setup,
            python=args.python,
        )
    except (SessionConfigError, FileNotFoundError, ValueError) as exc:
        raise _usage_error(str(exc)) from exc
    if args.write:
        stage1, stages23 = write_jobscripts(scripts, args.write)
        print(f"wrote {stage1} ({scripts.n_tasks} array tasks) and {stages23}; submit with:")
        print(f"cd {Path(args.write).resolve()}")
        print(scripts.submit)
        return 0
    print(scripts.stage1 if args.stage == "1" else scripts.stages23, end="")
    return 0
