"""Stage 1 of a session on a Dask cluster, one task per recording; stages 2 and 3 on the client.

::

    pyflowreg session dask --config session.toml                      # a LocalCluster here
    pyflowreg session dask --config session.toml --n-workers 8
    pyflowreg session dask --config session.toml --address tcp://head:8786
    pyflowreg session dask --config session.toml --scheduler-file ~/scheduler.json
    pyflowreg session dask --config session.toml --jobqueue slurm --n-workers 10 \\
        --cores 4 --memory 16GB --walltime 02:00:00 --queue normal

Where the cluster comes from (:func:`session_client`): a ``distributed.Client`` passed in
(used as is), a scheduler address or scheduler file (through
:func:`pyflowreg.executors.dask.dask_client`), a ``dask_jobqueue`` cluster
(``pip install dask-jobqueue``) scaled to ``n_workers`` jobs, or by default a ``LocalCluster``
of ``n_workers`` single-threaded processes (BLAS/Numba limited to one thread each).

Every recording whose stage 1 does not verify as done is submitted as one task; the task runs
:func:`pyflowreg.session.run_stage1` for that recording (``task_index``) on the worker, with the
``sequential`` executor, or ``threading`` with ``threads_per_task > 1`` (Dask workers are
daemonic processes: they cannot start process pools). Two workers never process one recording
at once: the task holds the recording's claim (:func:`pyflowreg.session._status.claim`) and a
claim held by another live process (an array task, a second Dask run) makes the task wait for
it, up to ``claim_wait`` seconds. A task whose worker dies is rerun by Dask elsewhere; its
claim is then stale (owner gone) and taken over, and the recording continues from its last
committed batch with outputs identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._status import STALE_AFTER, RecordingClaimedError, stage_done
from .config import SessionConfig, discover_input_files, recording_name

logger = logging.getLogger(__name__)

__all__ = [
    "JOBQUEUE_CLUSTERS",
    "DaskSessionResult",
    "pending_recordings",
    "run_session_dask",
    "run_stage1_dask",
    "session_client",
]

#: ``--jobqueue`` choices and their ``dask_jobqueue`` cluster classes.
JOBQUEUE_CLUSTERS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster"}
JOBQUEUE_HINT = "pip install dask-jobqueue"
#: Executors a task may use on a Dask worker (daemonic processes cannot start process pools).
TASK_EXECUTORS = ("sequential", "threading")
#: Seconds a task waits for a recording another live process holds (a dead host's claim turns
#: stale after ``STALE_AFTER`` seconds without heartbeat).
CLAIM_WAIT = STALE_AFTER + 60.0


class DaskSessionResult(NamedTuple):
    """What :func:`run_session_dask` did.

    ``folders``: every recording's output folder (discovery order); ``processed``: the names of
    the recordings stage 1 ran for here; ``skipped``: those verified done before; then the
    results of stages 2 and 3 (None when not run).
    """

    folders: list[Path]
    processed: list[str]
    skipped: list[str]
    middle_idx: int | None
    center_file: Path | None
    displacement_fields: list[np.ndarray] | None
    final_mask: np.ndarray | None


# ---------------------------------------------------------------------- cluster


@contextlib.contextmanager
def session_client(
    n_workers: int | None = None,
    *,
    client: Any = None,
    address: str | None = None,
    scheduler_file: str | Path | None = None,
    jobqueue: str | None = None,
    jobqueue_kwargs: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """The ``distributed.Client`` stage 1 runs on (closed at exit unless passed in).

    Parameters
    ----------
    n_workers : int, optional
        Worker processes of the ``LocalCluster``, or jobs of the ``dask_jobqueue`` cluster
        (default: all cores, one job).
    client : distributed.Client, optional
        Used as is and left open.
    address : str, optional
        A running scheduler (``"tcp://host:8786"``).
    scheduler_file : path, optional
        The scheduler file of a running scheduler (``dask scheduler --scheduler-file``).
    jobqueue : {"slurm", "pbs", "sge"}, optional
        Start a ``dask_jobqueue`` cluster of this kind with ``jobqueue_kwargs`` (``cores``,
        ``memory``, ``walltime``, ``queue``, ...) and scale it to ``n_workers`` jobs.

    Raises
    ------
    ValueError
        More than one cluster given, or an unknown ``jobqueue``.
    ImportError
        ``distributed`` or ``dask_jobqueue`` is missing (the message has the install command).
    """
    from ..executors.dask import dask_client, import_distributed

    given = [
        name
        for name, value in (
            ("client", client),
            ("address", address),
            ("scheduler_file", scheduler_file),
            ("jobqueue", jobqueue),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give one of client, address, scheduler_file and jobqueue, got {given}")
    if n_workers is not None and (isinstance(n_workers, bool) or int(n_workers) < 1):
        raise ValueError(f"n_workers must be >= 1, got {n_workers!r}")
    if jobqueue is not None:
        cluster_cls = _jobqueue_cluster(jobqueue)
        distributed = import_distributed()
        kwargs = {"processes": 1, **dict(jobqueue_kwargs or {})}
        kwargs.setdefault("cores", 1)
        kwargs.setdefault("memory", "4GB")
        with cluster_cls(**kwargs) as cluster:
            cluster.scale(jobs=int(n_workers or 1))
            with distributed.Client(cluster) as made:
                yield made
        return
    if scheduler_file is not None:
        path = Path(scheduler_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"dask scheduler file not found: {path}")
        address = str(path)
    workers = int(n_workers) if n_workers is not None else _all_cores()
    with dask_client(workers, client=client, address=address) as made:
        yield made


def _jobqueue_cluster(kind: str) -> type:
    if kind not in JOBQUEUE_CLUSTERS:
        raise ValueError(f"jobqueue must be one of {sorted(JOBQUEUE_CLUSTERS)}, got {kind!r}")
    try:
        module = importlib.import_module("dask_jobqueue")
    except ImportError as exc:
        raise ImportError(
            f"--jobqueue {kind} needs dask-jobqueue, which is not installed: {JOBQUEUE_HINT}"
        ) from exc
    return getattr(module, JOBQUEUE_CLUSTERS[kind])


def _all_cores() -> int:
    import os

    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------- worker side


def _stage1_task(
    config: SessionConfig,
    index: int,
    name: str,
    overrides: dict[str, Any] | None,
    claim_wait: float,
) -> str:
    """Dask task: stage 1 of recording ``index`` (named ``name``) on this worker."""
    from .stage1_compensate import run_stage1

    files = discover_input_files(config)
    if index >= len(files) or files[index].name != name:
        raise RuntimeError(
            f"the recordings under {config.root} changed since the run started: task {index} "
            f"was {name!r}; start the run again"
        )
    deadline = time.monotonic() + claim_wait
    while True:
        try:
            run_stage1(config, of_options_override=overrides, task_index=index)
            return name
        except RecordingClaimedError as exc:
            if time.monotonic() >= deadline:
                raise RecordingClaimedError(
                    f"{exc} (waited {claim_wait:.0f} s); run again when it has finished",
                    exc.holder,
                ) from None
            logger.info("stage 1: %s is held elsewhere, waiting: %s", name, exc)
            time.sleep(min(5.0, max(0.1, claim_wait / 20)))


# ---------------------------------------------------------------------- client side


def _task_config(config: SessionConfig, threads_per_task: int) -> SessionConfig:
    executor = config.stage1_executor
    if executor not in (None, *TASK_EXECUTORS):
        warnings.warn(
            f"stage1_executor {executor!r} cannot run inside a Dask task (one task per "
            f"recording); using {'threading' if threads_per_task > 1 else 'sequential'}",
            UserWarning,
            stacklevel=4,
        )
        executor = None
    if executor is None:
        executor = "threading" if threads_per_task > 1 else "sequential"
    n_jobs = threads_per_task if executor == "threading" else 1
    return config.model_copy(
        update={"stage1_executor": executor, "n_workers": n_jobs, "scheduler": "dask"}
    )


def pending_recordings(
    config: SessionConfig, of_options_override: Mapping[str, Any] | None = None
) -> tuple[list[Path], list[int]]:
    """Every recording of ``config`` and the indices of those whose stage 1 is not verified done
    (all of them with ``resume=False``)."""
    from .stage1_compensate import recording_options, stage1_options_hash

    files = discover_input_files(config)
    if not config.resume:
        return files, list(range(len(files)))
    base = config.stage1_options(of_options_override)
    output_root = config.resolve_output_paths().output_root
    pending = []
    for i, path in enumerate(files):
        folder = output_root / recording_name(path)
        digest = stage1_options_hash(recording_options(base, path, folder))
        if not stage_done(folder, "stage1", digest):
            pending.append(i)
    return files, pending


def run_stage1_dask(
    config: SessionConfig,
    of_options_override: Mapping[str, Any] | None = None,
    *,
    client: Any = None,
    address: str | None = None,
    scheduler_file: str | Path | None = None,
    jobqueue: str | None = None,
    jobqueue_kwargs: Mapping[str, Any] | None = None,
    n_workers: int | None = None,
    threads_per_task: int = 1,
    retries: int = 2,
    claim_wait: float = CLAIM_WAIT,
    progress: bool | Callable[[str, int, int], None] = False,
) -> tuple[list[Path], list[str], list[str]]:
    """Stage 1 of every recording not yet done, one Dask task per recording.

    Parameters
    ----------
    config : SessionConfig
    of_options_override : mapping, optional
        Stage-1 ``OFOptions`` values (as for :func:`pyflowreg.session.run_stage1`).
    client, address, scheduler_file, jobqueue, jobqueue_kwargs, n_workers
        The cluster (see :func:`session_client`). The default ``LocalCluster`` has one worker
        per recording to do, at most one per core.
    threads_per_task : int, default 1
        Threads each recording uses on its worker (``threading`` executor when > 1).
    retries : int, default 2
        Dask reruns a task this many times when it fails or its worker dies.
    claim_wait : float
        Seconds a task waits for a recording another live process holds.
    progress : bool or callable
        True: a progress bar of the recordings (tqdm, on stderr). A callable is called as
        ``progress(name, done, total)`` after every finished recording.

    Returns
    -------
    folders : list of Path
        Every recording's output folder, in discovery order.
    processed, skipped : list of str
        Names of the recordings processed by this call, and of those verified done before.

    Raises
    ------
    RuntimeError
        A recording failed on the cluster (the message names it); the others are complete.
    """
    if not isinstance(config, SessionConfig):
        raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
    if isinstance(threads_per_task, bool) or int(threads_per_task) < 1:
        raise ValueError(f"threads_per_task must be >= 1, got {threads_per_task!r}")
    if isinstance(retries, bool) or int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    if not claim_wait >= 0:
        raise ValueError(f"claim_wait must be >= 0 seconds, got {claim_wait!r}")
    overrides = dict(of_options_override) if of_options_override else None
    files, todo = pending_recordings(config, overrides)
    folders = [config.output_folder(p) for p in files]
    skipped = [recording_name(files[i]) for i in range(len(files)) if i not in todo]
    if skipped:
        logger.info("stage 1: %d recording(s) verified done: %s", len(skipped), ", ".join(skipped))
    if not todo:
        return folders, [], skipped
    task_config = _task_config(config, int(threads_per_task))
    if n_workers is None and client is None and address is None and scheduler_file is None:
        if jobqueue is None:
            n_workers = max(1, min(len(todo), _all_cores() // int(threads_per_task)))
    with session_client(
        n_workers,
        client=client,
        address=address,
        scheduler_file=scheduler_file,
        jobqueue=jobqueue,
        jobqueue_kwargs=jobqueue_kwargs,
    ) as made:
        from ..executors.dask import import_distributed

        distributed = import_distributed()
        futures = {
            made.submit(
                _stage1_task,
                task_config,
                i,
                files[i].name,
                overrides,
                float(claim_wait),
                key=f"pyflowreg-session-stage1-{recording_name(files[i])}-{time.time_ns()}",
                retries=int(retries),
                pure=False,
            ): files[i].name
            for i in todo
        }
        failed: list[str] = []
        processed: list[str] = []
        bar = None
        if progress is True:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="recording", desc="stage 1 on dask")
        for future in distributed.as_completed(list(futures)):
            name = futures[future]
            try:
                future.result()
            except Exception as exc:  # one recording failed: the others go on
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
                logger.error("stage 1 failed for %s: %s", name, exc)
            else:
                processed.append(recording_name(Path(name)))
                logger.info("stage 1: %s done (%d/%d)", name, len(processed), len(todo))
                if callable(progress):
                    progress(name, len(processed), len(todo))
            finally:
                future.release()
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    if failed:
        raise RuntimeError(
            f"stage 1 failed on the cluster for {len(failed)} of {len(todo)} recording(s) "
            f"(the others are done; run again to retry): " + "; ".join(failed)
        )
    order = {recording_name(p): i for i, p in enumerate(files)}
    processed.sort(key=order.__getitem__)
    return folders, processed, skipped


def run_session_dask(
    config: SessionConfig,
    of_options_override: Mapping[str, Any] | None = None,
    *,
    stages: Sequence[int] = (1, 2, 3),
    **cluster: Any,
) -> DaskSessionResult:
    """Stage 1 on a Dask cluster (:func:`run_stage1_dask`, keywords ``cluster``), then stages 2
    and 3 here on the client.

    Parameters
    ----------
    config : SessionConfig
    of_options_override : mapping, optional
        Stage-1 ``OFOptions`` values.
    stages : sequence of {1, 2, 3}
        Stages to run (stage 3 runs stage 2 first, which skips verified fields).
    **cluster
        Keywords of :func:`run_stage1_dask` (``client``, ``address``, ``n_workers``, ...).

    Returns
    -------
    DaskSessionResult
    """
    from .stage2_between_avgs import run_stage2
    from .stage3_valid_mask import run_stage3

    stages = tuple(sorted(set(stages)))
    if not stages or any(s not in (1, 2, 3) for s in stages):
        raise ValueError(f"stages must be a non-empty selection of 1, 2 and 3, got {stages}")
    files = discover_input_files(config)
    folders = [config.output_folder(p) for p in files]
    processed: list[str] = []
    skipped: list[str] = []
    if 1 in stages:
        folders, processed, skipped = run_stage1_dask(config, of_options_override, **cluster)
    middle_idx = center_file = fields = final = None
    if 2 in stages or 3 in stages:
        middle_idx, center_file, fields = run_stage2(config)
    if 3 in stages:
        final = run_stage3(config, middle_idx, fields)
    return DaskSessionResult(folders, processed, skipped, middle_idx, center_file, fields, final)
