"""Command line of sessions: ``pyflowreg session ...`` and the ``pyflowreg-session`` command.

::

    pyflowreg session run --config session.toml              # stages 1, 2 and 3
    pyflowreg session run --config session.toml --stage 1    # one stage
    pyflowreg session run --config session.toml --stage 1 --index 2   # one recording (0-based)
    pyflowreg session run --config session.toml --stage 1 --of-params quality_setting=fast
    pyflowreg session run --config session.toml --no-resume  # redo everything
    pyflowreg session status --config session.toml           # a table of what is done
    pyflowreg session array --config session.toml            # stage 1 of this array-job task
    pyflowreg session array --config session.toml --task-index 4      # 0-based

``pyflowreg-session`` takes the same commands (``pyflowreg-session run --config ...``) and
PyFlowReg's short form ``pyflowreg-session session.toml [--stage N] [--array-job]
[--no-resume]``. Exit status as for ``pyflowreg`` (see :mod:`pyflowreg.cli`): 0 success, 1
runtime error, 2 usage or config error, 130 interrupted.

Further subcommands (the Dask runner, job scripts) come from the modules listed in
:data:`EXTENSION_MODULES`: each defines ``add_session_command(subparsers, parents)``, which adds
its parser with ``subparsers.add_parser(name, parents=parents, ...)`` and sets ``func`` (a
handler ``func(args) -> int``) with ``set_defaults``; :func:`load_config` and :func:`out` are
there for them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["EXTENSION_MODULES", "add_session_parser", "load_config", "main", "out"]

#: Modules adding ``pyflowreg session`` subcommands (see the module docstring).
EXTENSION_MODULES: list[str] = ["pyflowreg.session.cluster_cli"]

#: The commands defined here.
COMMANDS = ("run", "status", "array")

STAGE_REMINDER = (
    "when every array task has finished, run stages 2 and 3: pyflowreg session run --config "
    "{config} --stage 2 && pyflowreg session run --config {config} --stage 3"
)


def add_session_parser(subparsers, parents: Sequence[argparse.ArgumentParser] = ()):
    """Add the ``session`` command (and its subcommands) to ``subparsers``.

    ``parents`` hold the options common to every command (``-q``, ``--debug``); they are given
    to each subcommand.
    """
    parents = list(parents)
    parser = subparsers.add_parser(
        "session",
        help="multi-session registration: stages 1-3, status, array jobs",
        description="Register many recordings of one field of view and align them to each "
        "other (also installed as the pyflowreg-session command).",
        epilog="pyflowreg-session also takes PyFlowReg's short form: pyflowreg-session "
        "session.toml [--stage N] [--array-job] [--no-resume].",
    )
    commands = parser.add_subparsers(dest="session_command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "run",
        parents=parents,
        help="run stages 1, 2 and 3 (or one of them)",
        description="Run the session's stages here; what verified outputs show done is skipped.",
    )
    _config_arg(p)
    p.add_argument("--stage", "-s", type=int, choices=(1, 2, 3), help="run only this stage")
    p.add_argument("--no-resume", action="store_true", help="redo everything (resume = false)")
    p.add_argument(
        "--index",
        "-i",
        type=int,
        metavar="N",
        help="stage 1 of one recording only (0-based index)",
    )
    p.add_argument(
        "--array",
        action="store_true",
        help="stage 1 of this array-job task's recording (task id from SLURM_ARRAY_TASK_ID, "
        "SGE_TASK_ID or PBS_ARRAY_INDEX, 1-based)",
    )
    _of_params_arg(p)
    p.set_defaults(func=_cmd_run)

    p = commands.add_parser(
        "status",
        parents=parents,
        help="what is done, per recording and stage",
        description="A table of the recordings and the state of each stage: done (outputs "
        "verify), changed (made with other settings), stale (stage 3 made from results no "
        "longer current), damaged (outputs missing or altered), running, interrupted (its "
        "process is gone), failed, pending.",
    )
    _config_arg(p)
    p.add_argument("--json", action="store_true", help="print the states as JSON")
    p.set_defaults(func=_cmd_status)

    p = commands.add_parser(
        "array",
        parents=parents,
        help="stage 1 of one array-job task",
        description="Stage 1 of the recording of this array-job task: --task-index (0-based), "
        "else the 1-based task id of SLURM_ARRAY_TASK_ID, SGE_TASK_ID or PBS_ARRAY_INDEX.",
    )
    _config_arg(p)
    p.add_argument("--task-index", type=int, metavar="N", help="0-based recording index")
    p.add_argument("--no-resume", action="store_true", help="redo the recording")
    _of_params_arg(p)
    p.set_defaults(func=_cmd_array)

    for name in EXTENSION_MODULES:
        importlib.import_module(name).add_session_command(commands, parents)
    return parser


def _of_params_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--of-params",
        nargs="+",
        metavar="KEY=VALUE",
        default=[],
        help="stage-1 OFOptions overrides (values read as JSON, else as text)",
    )


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", required=True, metavar="FILE", help="session config (.toml, .yaml)"
    )


# ---------------------------------------------------------------------- helpers for commands


def load_config(args: argparse.Namespace):
    """The ``SessionConfig`` of ``--config``, with ``--no-resume`` applied."""
    from .config import SessionConfig, SessionConfigError

    try:
        config = SessionConfig.from_file(args.config)
    except (SessionConfigError, FileNotFoundError) as exc:
        raise _usage_error(str(exc)) from exc
    if getattr(args, "no_resume", False):
        config = config.model_copy(update={"resume": False})
    return config


def out(args: argparse.Namespace, text: str = "") -> None:
    """Print ``text`` unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(text)


def _usage_error(message: str) -> Exception:
    from ..cli import UsageError

    return UsageError(message)


def _of_params(items: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise _usage_error(f"--of-params expects KEY=VALUE, got {item!r}")
        try:
            values[key.strip()] = json.loads(text)
        except ValueError:
            values[key.strip()] = text
    return values


# ---------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace) -> int:
    from ._status import release_claims_on_sigterm

    with release_claims_on_sigterm():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    stage1_only = args.index is not None or args.array
    if stage1_only and args.stage not in (None, 1):
        raise _usage_error("--index and --array belong to stage 1 (--stage 1)")
    if args.of_params and args.stage not in (None, 1):  # PyFlowReg accepts them there too
        warnings.warn(
            f"--of-params only changes stage 1; ignored with --stage {args.stage}",
            UserWarning,
            stacklevel=2,
        )
        args.of_params = []
    if args.index is not None and args.array:
        raise _usage_error("give --index or --array, not both")
    config = load_config(args)
    stages = (
        (args.stage,)
        if args.stage
        else ((1,) if args.index is not None or args.array else (1, 2, 3))
    )
    if 1 in stages:
        if args.array:
            _stage1_array(args, config, None)
            return 0
        from .stage1_compensate import run_stage1

        overrides = _of_params(args.of_params)
        folders = run_stage1(
            config,
            of_options_override=overrides or None,
            task_index=args.index,
            verbose=not args.quiet,
        )
        out(args, f"stage 1: {len(folders)} recording(s) in {_common_parent(folders)}")
        if len(stages) > 1:
            _check_none_busy(folders)
    if 2 in stages or 3 in stages:
        from .stage2_between_avgs import run_stage2

        middle_idx, center_file, displacements = run_stage2(config)
        if 2 in stages:
            out(
                args,
                f"stage 2: {len(displacements)} field(s), centre {Path(center_file).name} "
                f"(index {middle_idx})",
            )
    if 3 in stages:
        import numpy as np

        from .stage3_valid_mask import run_stage3

        final_mask = np.asarray(run_stage3(config, middle_idx, displacements))
        out(
            args,
            f"stage 3: final mask {int(final_mask.sum())}/{final_mask.size} valid pixels in "
            f"{config.resolve_output_paths().final_results}",
        )
    return 0


def _check_none_busy(folders: Sequence[Path]) -> None:
    """Stop before stage 2 while other processes are still in stage 1 of some recordings."""
    from ._status import claim_holder, stage_record

    busy = []
    for folder in folders:
        record = stage_record(folder, "stage1") or {}
        holder = claim_holder(folder) if record.get("state") != "done" else None
        if holder:
            where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            busy.append(f"{folder.name} ({where})")
    if busy:
        raise RuntimeError(
            f"stage 1 of {', '.join(busy)} is still running in another process; run stages 2 "
            "and 3 when it has finished"
        )


def _cmd_array(args: argparse.Namespace) -> int:
    from ._status import release_claims_on_sigterm

    config = load_config(args)
    with release_claims_on_sigterm():
        _stage1_array(args, config, args.task_index)
    return 0


def _stage1_array(args: argparse.Namespace, config, task_index: int | None) -> None:
    from .config import array_task_index
    from .stage1_compensate import run_stage1_array

    if task_index is not None and task_index < 0:
        raise _usage_error(f"--task-index must be >= 0, got {task_index}")
    if task_index is None:
        try:
            task_index = array_task_index()
        except ValueError as exc:
            raise _usage_error(str(exc)) from None
        if task_index is None:
            raise _usage_error(
                "no array task id: run inside an array job (SLURM_ARRAY_TASK_ID, SGE_TASK_ID or "
                "PBS_ARRAY_INDEX set) or give --task-index"
            )
    overrides = _of_params(getattr(args, "of_params", []))
    folders = run_stage1_array(config, task_index=task_index, of_options_override=overrides or None)
    for folder in folders:
        out(args, f"stage 1: {folder}")
    out(args, STAGE_REMINDER.format(config=args.config))


def _cmd_status(args: argparse.Namespace) -> int:
    from .progress import session_progress

    config = load_config(args)
    progress = session_progress(config)
    if args.json:
        print(json.dumps([rec.to_dict() for rec in progress], indent=2))
        return 0
    rows = [("recording", "stage 1", "stage 2", "stage 3", "frames")]
    for rec in progress:
        name = rec.name + (" (centre)" if rec.center else "")
        frames = "-" if rec.frames is None else str(rec.frames)
        rows.append((name, rec.stage1, rec.stage2, rec.stage3, frames))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    paths = config.resolve_output_paths()
    print(f"outputs: {paths.output_root}; final results: {paths.final_results}")
    return 0


def _common_parent(folders: Sequence[Path]) -> str:
    parents = {str(Path(f).parent) for f in folders}
    return parents.pop() if len(parents) == 1 else ", ".join(sorted(parents))


# ---------------------------------------------------------------------- pyflowreg-session


def _command_names() -> set[str]:
    parser = argparse.ArgumentParser(add_help=False)
    sub = parser.add_subparsers(dest="command")
    add_session_parser(sub)
    session = sub.choices["session"]
    for action in session._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set(COMMANDS)


def translate_argv(argv: Sequence[str]) -> list[str]:
    """``pyflowreg-session`` arguments as ``pyflowreg session`` arguments: PyFlowReg's short
    form ``CONFIG [--stage N] [--array-job] [--no-resume]`` becomes ``run --config CONFIG ...``
    (``--array-job`` is ``--array``)."""
    argv = list(argv)
    commands = _command_names()
    if any(a in commands for a in argv):
        return argv
    takes_value = {"--stage", "-s", "--index", "-i", "--config", "-c", "--task-index"}
    for i, arg in enumerate(argv):  # the first positional argument: the config file
        if not arg.startswith("-") and (i == 0 or argv[i - 1] not in takes_value):
            rest = ["--array" if a == "--array-job" else a for a in argv[:i] + argv[i + 1 :]]
            return ["run", "--config", arg, *rest]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pyflowreg-session`` command: ``pyflowreg session`` with PyFlowReg's short form.

    Returns
    -------
    int
        Exit status (see :mod:`pyflowreg.cli`).
    """
    from ..cli import main as pyflowreg_main

    argv = sys.argv[1:] if argv is None else argv
    return pyflowreg_main(["session", *translate_argv(argv)])


if __name__ == "__main__":
    sys.exit(main())
