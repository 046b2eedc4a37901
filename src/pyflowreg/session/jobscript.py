"""Batch-job scripts of a session: an array job for stage 1 and a dependent job for stages 2-3.

::

    pyflowreg session jobscript --config session.toml --scheduler slurm > stage1.sh
    pyflowreg session jobscript --config session.toml --scheduler slurm --stage 2-3 > stages23.sh
    JOBID=$(sbatch --parsable stage1.sh) && sbatch --dependency=afterok:$JOBID stages23.sh

    pyflowreg session jobscript --config session.toml --scheduler slurm --write jobs/
    # writes jobs/stage1.slurm and jobs/stages23.slurm and prints the two submit commands

The array job has one task per recording (``discover_input_files`` when the script is made),
numbered from 1 as :func:`pyflowreg.session.config.array_task_index` expects
(``#SBATCH --array=1-N``, ``#$ -t 1-N``, ``#PBS -J 1-N``); each task runs
``pyflowreg session array --config <absolute path>``, which reads its task id from
``SLURM_ARRAY_TASK_ID``, ``SGE_TASK_ID`` or ``PBS_ARRAY_INDEX``. The second job runs stages 2
and 3 once every task has succeeded. Both resume: resubmitting them redoes only what does not
verify as done.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["SCHEDULERS", "JobScripts", "make_jobscripts", "write_jobscripts"]

#: Schedulers and the file extension of their scripts.
SCHEDULERS = {"slurm": ".slurm", "sge": ".sge", "pbs": ".pbs"}

_TIME = "02:00:00"
_MEM = "16G"
_CPUS = 4


class JobScripts(NamedTuple):
    """The two scripts of a session and how to submit them.

    ``stage1``: the array job (one task per recording); ``stages23``: the follow-up job;
    ``submit``: shell lines submitting ``stage1`` then ``stages23`` depending on it, for the
    file names ``stage1_file`` and ``stages23_file``; ``n_tasks``: recordings (array size).
    """

    stage1: str
    stages23: str
    submit: str
    n_tasks: int
    scheduler: str


def make_jobscripts(
    config_file: str | Path,
    scheduler: str,
    *,
    time: str = _TIME,
    mem: str = _MEM,
    cpus: int = _CPUS,
    partition: str | None = None,
    max_parallel: int | None = None,
    job_name: str = "pyflowreg-session",
    setup: Sequence[str] = (),
    python: str | None = None,
    log_dir: str | Path | None = None,
    stage1_file: str = "stage1",
    stages23_file: str = "stages23",
) -> JobScripts:
    """The array-job and follow-up scripts of the session in ``config_file``.

    Parameters
    ----------
    config_file : path
        Session config (``.toml``/``.yaml``); the scripts name it by its absolute path.
    scheduler : {"slurm", "sge", "pbs"}
        SLURM (``sbatch``), Sun/Univa/Son of Grid Engine (``qsub -t``) or PBS Pro (``qsub -J``).
    time : str
        Wall-time limit of each job, ``HH:MM:SS``.
    mem : str
        Memory of each task (``16G``; for SGE per slot, as ``h_vmem``).
    cpus : int
        Cores of each task (the stage-1 executor uses ``n_workers`` of the config; ``-1``
        means the cores the scheduler gives the task).
    partition : str, optional
        Partition (SLURM) or queue (SGE, PBS).
    max_parallel : int, optional
        At most this many array tasks at once (SLURM ``%M``, SGE ``-tc``; PBS: not supported).
    job_name : str
        Name of the array job; the follow-up job is ``<job_name>-23``.
    setup : sequence of str
        Shell lines run first in both jobs (``module load ...``, ``source venv/bin/activate``).
    python : str, optional
        Python interpreter running ``-m pyflowreg``; default: this one (``sys.executable``).
    log_dir : path, optional
        Folder of the job logs; default ``<root>/logs`` of the session. Created now: the
        schedulers open the log files before a job starts.
    stage1_file, stages23_file : str
        File names used in ``submit`` (an extension per scheduler is added).

    Returns
    -------
    JobScripts

    Raises
    ------
    ValueError
        Unknown scheduler, bad ``cpus``/``max_parallel``, or a value with a line break.
    FileNotFoundError
        The config file or the session's recordings are missing.
    """
    from .config import SessionConfig, discover_input_files

    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}")
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ValueError(f"cpus must be an int >= 1, got {cpus!r}")
    if max_parallel is not None and (
        isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
    ):
        raise ValueError(f"max_parallel must be an int >= 1, got {max_parallel!r}")
    lines = {"time": time, "mem": mem, "partition": partition, "job_name": job_name}
    for name, value in lines.items():
        if value is not None and (not str(value).strip() or any(c in str(value) for c in "\n\r")):
            raise ValueError(f"{name} must be a non-empty single line, got {value!r}")
    config_path = Path(config_file).expanduser().resolve()
    if not config_path.is_file():
        raise FileNotFoundError(f"session config not found: {config_path}")
    config = SessionConfig.from_file(config_path)
    n_tasks = len(discover_input_files(config))
    logs = Path(log_dir).expanduser().resolve() if log_dir else config.root_path() / "logs"
    command = [python or sys.executable, "-m", "pyflowreg", "session"]
    cfg = shlex.quote(str(config_path))
    py = " ".join(shlex.quote(c) for c in command)
    stage1_cmd = f"{py} array --config {cfg}"
    if scheduler == "pbs" and n_tasks == 1:  # PBS Pro arrays need two or more subjobs
        stage1_cmd = f"{py} array --config {cfg} --task-index 0"
    stages23_cmd = (
        f"{py} run --config {cfg} --stage 2 && {py} run --config {cfg} --stage 3 && "
        f"{py} status --config {cfg}"
    )
    ext = SCHEDULERS[scheduler]
    files = (f"{stage1_file}{ext}", f"{stages23_file}{ext}")
    render = {"slurm": _slurm, "sge": _sge, "pbs": _pbs}[scheduler]
    header1, header23, submit = render(
        job_name, n_tasks, time, mem, cpus, partition, max_parallel, logs, files
    )
    intro = [
        "#",
        f"# pyflowreg session, {n_tasks} recording(s) of {config.root_path()}",
        f"# config: {config_path}",
        "# Submit stage 1 (this array job) and stages 2-3 once it has succeeded:",
        *(f"#   {line}" for line in submit.splitlines()),
        "# Array tasks are numbered from 1 (task 1: the first recording). Regenerate the",
        "# scripts when recordings are added. Resubmitting redoes only unfinished work.",
    ]
    # the scheduler opens the log files before the job starts: the folder must exist now
    logs.mkdir(parents=True, exist_ok=True)
    # no ``set -u``: environment activation scripts (conda's among them) use unset variables
    pre = ["set -eo pipefail", *setup]
    stage1 = "\n".join(["#!/bin/bash", *header1, *intro, "", *pre, stage1_cmd, ""])
    intro23 = [
        "#",
        f"# pyflowreg session, stages 2-3 of {config.root_path()} (after the stage-1 array job:",
        *(f"#   {line}" for line in submit.splitlines()),
        "# )",
    ]
    stages23 = "\n".join(["#!/bin/bash", *header23, *intro23, "", *pre, stages23_cmd, ""])
    return JobScripts(stage1, stages23, submit, n_tasks, scheduler)


def write_jobscripts(scripts: JobScripts, folder: str | Path) -> tuple[Path, Path]:
    """Write ``scripts`` to ``folder/stage1.<ext>`` and ``folder/stages23.<ext>`` (executable);
    return the two paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ext = SCHEDULERS[scripts.scheduler]
    paths = (folder / f"stage1{ext}", folder / f"stages23{ext}")
    for path, text in zip(paths, (scripts.stage1, scripts.stages23), strict=True):
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)
    return paths


def _slurm(name, n, time, mem, cpus, partition, max_parallel, logs, files):
    array = f"1-{n}" + (f"%{max_parallel}" if max_parallel else "")
    common = [f"#SBATCH --time={time}", f"#SBATCH --mem={mem}", f"#SBATCH --cpus-per-task={cpus}"]
    if partition:
        common.append(f"#SBATCH --partition={partition}")
    header1 = [
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array={array}",
        *common,
        f"#SBATCH --output={logs}/%x_%A_%a.out",
    ]
    header23 = [f"#SBATCH --job-name={name}-23", *common, f"#SBATCH --output={logs}/%x_%j.out"]
    submit = f"JOBID=$(sbatch --parsable {files[0]})\nsbatch --dependency=afterok:$JOBID {files[1]}"
    return header1, header23, submit


def _sge(name, n, time, mem, cpus, partition, max_parallel, logs, files):
    common = [
        "#$ -S /bin/bash",
        "#$ -cwd",
        f"#$ -l h_rt={time}",
        f"#$ -l h_vmem={mem}",
        "#$ -j y",
        f"#$ -o {logs}/",
    ]
    if cpus > 1:
        common.append(f"#$ -pe smp {cpus}")
    if partition:
        common.append(f"#$ -q {partition}")
    header1 = [f"#$ -N {name}", f"#$ -t 1-{n}", *common]
    if max_parallel:
        header1.insert(2, f"#$ -tc {max_parallel}")
    header23 = [f"#$ -N {name}-23", *common]
    submit = f"JOBID=$(qsub -terse {files[0]} | cut -d. -f1)\nqsub -hold_jid $JOBID {files[1]}"
    return header1, header23, submit


def _pbs(name, n, time, mem, cpus, partition, max_parallel, logs, files):
    common = [f"#PBS -l walltime={time}", f"#PBS -l select=1:ncpus={cpus}:mem={mem}", "#PBS -j oe"]
    if partition:
        common.append(f"#PBS -q {partition}")
    header1 = [f"#PBS -N {name}", *common, f"#PBS -o {logs}/"]
    if n > 1:
        header1.insert(1, f"#PBS -J 1-{n}")
    if max_parallel:
        header1.append(f"# (max_parallel={max_parallel} is not a PBS Pro directive: all run)")
    header23 = [f"#PBS -N {name}-23", *common, f"#PBS -o {logs}/"]
    header1.append('cd "${PBS_O_WORKDIR:-.}"')
    header23.append('cd "${PBS_O_WORKDIR:-.}"')
    submit = f"JOBID=$(qsub {files[0]})\nqsub -W depend=afterok:$JOBID {files[1]}"
    return header1, header23, submit
