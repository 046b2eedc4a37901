"""The dask executor on a two-worker LocalCluster (loopback, processes, one thread each).

Recordings are tiny (12 frames of 32x40, buffer_size 4, the fast preset with few iterations);
the cluster is started once for the module. The backends and task functions defined here are
imported by the worker processes by reference, like a plug-in package.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed",
    reason='the dask executor needs dask[distributed] (pip install "pyflowreg[dask]")',
)

from pyflowreg import _runtime  # noqa: E402
from pyflowreg._runtime import Runtime, _register_builtins  # noqa: E402
from pyflowreg.backends.cpu import FlowregBackend  # noqa: E402
from pyflowreg.core import FlowParameters  # noqa: E402
from pyflowreg.datasets import make_recording  # noqa: E402
from pyflowreg.executors import WarpSettings  # noqa: E402
from pyflowreg.executors._worker_init import THREAD_LIMITS  # noqa: E402
from pyflowreg.executors.dask import (  # noqa: E402
    DaskExecutor,
    dask_client,
    import_distributed,
    is_scheduler_address,
)
from pyflowreg.io import open_reader, open_writer  # noqa: E402
from pyflowreg.motion_correction import (  # noqa: E402
    OFOptions,
    RegistrationConfig,
    RegistrationError,
    compensate_arr,
    compensate_recording,
)
from pyflowreg.motion_correction import distributed as runner_module  # noqa: E402
from pyflowreg.motion_correction.distributed import zarr_chunk_frames  # noqa: E402

#: The module (the package re-exports a function of the same name).
recording_module = sys.modules["pyflowreg.motion_correction.compensate_recording"]

T, H, W, BUFFER = 12, 32, 40, 4
CLUSTER_TEST = pytest.mark.timeout(90)


# -- plug-ins the workers import -----------------------------------------------------------------


def _in_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


class FlatFrameFails(FlowregBackend):
    """The CPU backend, except that on a dask worker a flat (constant) frame raises."""

    def estimate(self, prepared, frames, uv=None):
        flat = np.ptp(np.asarray(frames).reshape(len(frames), -1), axis=1) == 0
        if _in_worker() and flat.any():
            raise ValueError("synthetic failure on a flat frame")
        return super().estimate(prepared, frames, uv)


class SlowOnWorkers(FlowregBackend):
    """The CPU backend, 0.15 s slower per frame on a dask worker (keeps ranges in flight)."""

    def estimate(self, prepared, frames, uv=None):
        if _in_worker():
            time.sleep(0.15 * len(frames))
        return super().estimate(prepared, frames, uv)


def _open_readers() -> int:
    return len(runner_module._READERS)


def _echo(backend, prepared, warp_settings, job, data):
    return job, None if data is None else float(np.sum(data))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        env=dict(THREAD_LIMITS),
    )
    with cluster, distributed.Client(cluster) as made:
        yield made


@pytest.fixture(scope="module")
def video():
    rec = make_recording(T, (H, W), seed=3, max_rigid=2.0, max_nonrigid=0.6, dtype=np.uint16)
    return rec.video


def write(path, video):
    with open_writer(path) as writer:
        writer.write(video)
    return path


def read(path):
    with open_reader(path) as reader:
        return reader.read(0, len(reader))


def options_for(tmp_path, source, name, **kw) -> OFOptions:
    kw.setdefault("quality_setting", "fast")
    kw.setdefault("iterations", 5)
    kw.setdefault("buffer_size", BUFFER)
    kw.setdefault("save_w", True)
    return OFOptions(input_file=source, output_path=tmp_path / name, **kw)


def run_pair(tmp_path, source, config, **kw):
    """Results of the sequential and the dask executor on the same input and options."""
    seq = compensate_recording(
        options_for(tmp_path, source, "sequential", **kw),
        config=RegistrationConfig(parallelization="sequential"),
    )
    dsk = compensate_recording(options_for(tmp_path, source, "dask", **kw), config=config)
    return seq, dsk


def assert_same_outputs(seq, dsk):
    assert dsk.executor == "dask"
    for key in ("compensated", "w"):
        if seq.registered is None:
            assert np.array_equal(read(seq.files[key]), read(dsk.files[key]))
    if seq.registered is not None:
        assert np.array_equal(seq.registered, dsk.registered)
        assert np.array_equal(seq.w, dsk.w)
    assert seq.statistics.keys() == dsk.statistics.keys()
    for key, value in seq.statistics.items():
        assert np.array_equal(value, dsk.statistics[key], equal_nan=True), key


def using_backend(monkeypatch, name, factory):
    """Make ``compensate_recording`` see a runtime with one extra flow backend."""
    runtime = Runtime()
    _register_builtins(runtime)
    runtime.register_flow_backend(name, factory, supported_executors=None)
    monkeypatch.setattr(recording_module, "get_runtime", lambda: runtime)


# -- equality with the sequential executor -------------------------------------------------------


@CLUSTER_TEST
@pytest.mark.parametrize("ext", [".h5", ".tif"])
def test_file_input_equals_sequential_and_workers_read_it(tmp_path, client, video, ext):
    source = write(tmp_path / f"input{ext}", video)
    readers = []

    def callback(batch):
        readers.append(sum(client.run(_open_readers).values()))

    seq = compensate_recording(
        options_for(tmp_path, source, "sequential"),
        config=RegistrationConfig(parallelization="sequential"),
    )
    dsk = compensate_recording(
        options_for(tmp_path, source, "dask"),
        config=RegistrationConfig(parallelization="dask", dask_client=client),
        batch_callback=callback,
    )
    assert_same_outputs(seq, dsk)
    assert len(readers) == T // BUFFER and max(readers) >= 1  # the workers opened the file
    assert sum(client.run(_open_readers).values()) == 0  # and closed it at the end


@CLUSTER_TEST
def test_zarr_input_and_output_equal_sequential(tmp_path, client, video):
    zarr = pytest.importorskip("zarr")
    source = write(tmp_path / "input.zarr", video)
    seq, dsk = run_pair(
        tmp_path,
        source,
        RegistrationConfig(parallelization="dask", dask_client=client),
        output_format="ZARR",
        save_valid_mask=True,
    )
    assert_same_outputs(seq, dsk)
    assert np.array_equal(read(seq.files["valid_mask"]), read(dsk.files["valid_mask"]))
    chunks = zarr.open(str(dsk.files["compensated"]), mode="r").chunks[0]
    assert BUFFER % chunks == 0  # every chunk lies inside one worker's range


@CLUSTER_TEST
def test_in_memory_input_is_scattered_and_equals_sequential(tmp_path, client, video):
    seq, dsk = run_pair(
        tmp_path,
        video,
        RegistrationConfig(parallelization="dask", dask_client=client),
        output_format="ARRAY",
    )
    assert seq.registered.shape == (T, H, W, 1)
    assert_same_outputs(seq, dsk)


@CLUSTER_TEST
def test_compensate_arr_on_the_cluster_equals_sequential(client, video):
    options = OFOptions(quality_setting="fast", iterations=5, buffer_size=BUFFER)
    seq = compensate_arr(
        video, options=options, registration_config=RegistrationConfig(parallelization="sequential")
    )
    dsk = compensate_arr(
        video,
        options=options,
        registration_config=RegistrationConfig(parallelization="dask", dask_client=client),
    )
    assert np.array_equal(seq[0], dsk[0]) and np.array_equal(seq[1], dsk[1])


@CLUSTER_TEST
def test_update_reference_runs_batches_in_order_and_equals_sequential(tmp_path, client, video):
    source = write(tmp_path / "input.h5", video)
    seq, dsk = run_pair(
        tmp_path,
        source,
        RegistrationConfig(parallelization="dask", dask_address=client.scheduler.address),
        update_reference=True,
    )
    assert_same_outputs(seq, dsk)


@CLUSTER_TEST
def test_batches_longer_than_the_initial_flow_window_equal_sequential(tmp_path, client):
    """buffer_size >= 20: the sequential loop takes each batch's initial field from the tail
    of the batch before, the cluster runner from the boundary pass; both give the same."""
    rec = make_recording(46, (H, W), seed=8, max_rigid=2.0, max_nonrigid=0.6, dtype=np.uint16)
    source = write(tmp_path / "input.h5", rec.video)
    seq, dsk = run_pair(
        tmp_path,
        source,
        RegistrationConfig(parallelization="dask", dask_client=client),
        buffer_size=22,
        iterations=3,
    )
    assert_same_outputs(seq, dsk)


@CLUSTER_TEST
def test_scheduler_file_connects(tmp_path, client, video):
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": client.scheduler.address}))
    source = write(tmp_path / "input.h5", video[:4])
    result = compensate_recording(
        options_for(tmp_path, source, "out"),
        config=RegistrationConfig(parallelization="dask", dask_address=str(scheduler_file)),
    )
    assert result.executor == "dask" and read(result.files["compensated"]).shape == (4, H, W, 1)


# -- faults --------------------------------------------------------------------------------------


@CLUSTER_TEST
@pytest.mark.parametrize("where", ["file", "memory"])
def test_killed_worker_ranges_are_recomputed(tmp_path, client, video, monkeypatch, where):
    """A worker SIGKILLed while it registers a range: Dask recomputes the range elsewhere
    (an in-memory input's block, lost with the worker, is scattered again)."""
    using_backend(monkeypatch, "slow_on_workers", SlowOnWorkers)
    source = write(tmp_path / "input.h5", video) if where == "file" else video
    fmt = {"output_format": "ARRAY"} if where == "memory" else {}
    killed = []

    def kill_a_busy_worker(batch):
        if killed:
            return
        pids = client.run(os.getpid)
        busy = [addr for addr, keys in client.processing().items() if keys]
        target = (busy or sorted(pids))[0]
        os.kill(pids[target], signal.SIGKILL)
        killed.append(target)

    seq = compensate_recording(
        options_for(tmp_path, source, "sequential", buffer_size=2, **fmt),
        config=RegistrationConfig(parallelization="sequential"),
    )
    try:
        dsk = compensate_recording(
            options_for(
                tmp_path, source, "dask", buffer_size=2, flow_backend="slow_on_workers", **fmt
            ),
            config=RegistrationConfig(parallelization="dask", dask_client=client),
            batch_callback=kill_a_busy_worker,
        )
    finally:
        client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    assert killed
    assert dsk.n_frames == T
    assert_same_outputs(seq, dsk)


@CLUSTER_TEST
@pytest.mark.parametrize("fmt", ["HDF5", "ZARR"])
def test_repeated_failure_names_the_range_and_leaves_no_output(
    tmp_path, client, video, monkeypatch, fmt
):
    """Batch 1 fails on every try (retries=2); with Zarr the workers had written batches 0
    and 2 themselves. The error names the frames and the output folder is left empty."""
    if fmt == "ZARR":
        pytest.importorskip("zarr")
    using_backend(monkeypatch, "flat_frame_fails", FlatFrameFails)
    bad = video.copy()
    bad[5] = 1000  # a flat frame in batch 1 (frames 4..7)
    source = write(tmp_path / "input.h5", bad)
    options = options_for(
        tmp_path,
        source,
        "out",
        flow_backend="flat_frame_fails",
        reference_frames=video[0],  # no reference or boundary pass on the workers
        update_initialization_w=False,
        output_format=fmt,
        save_valid_mask=True,
    )
    with pytest.raises(RegistrationError, match=r"registering frames 4\.\.7 failed \(dask"):
        compensate_recording(
            options, config=RegistrationConfig(parallelization="dask", dask_client=client)
        )
    assert list((tmp_path / "out").iterdir()) == []


# -- the executor itself -------------------------------------------------------------------------


class CountingClient:
    """A client proxy that counts submitted tasks."""

    def __init__(self, client) -> None:
        self._client = client
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return self._client.submit(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


@CLUSTER_TEST
def test_map_ordered_bounds_work_in_flight_and_keeps_order(client):
    counting = CountingClient(client)
    settings = WarpSettings("cubic", np.dtype(np.float32))
    with DaskExecutor(2, FlowregBackend, FlowParameters(), {}, settings, client=counting) as ex:
        assert ex.n_workers == 2
        with pytest.raises(RuntimeError, match="set_reference"):
            next(ex.map_ordered(_echo, [0], [(0, 1)]))
        ex.set_reference(np.zeros((8, 8, 1), np.float32))
        jobs = list(range(10))
        seen = []
        for i, (job, total) in ex.map_ordered(
            _echo, jobs, [(j, j + 1) for j in jobs], data=lambda i: np.full(3, i)
        ):
            seen.append(job)
            assert total == 3 * job
            assert counting.submitted <= i + 1 + 2 * ex.n_workers  # window: 2 x workers
        assert seen == jobs
    assert client.status == "running"  # a client passed in stays open


@CLUSTER_TEST
def test_embedded_local_cluster_is_closed(tmp_path, video):
    settings = WarpSettings("cubic", np.dtype(np.float32))
    ex = DaskExecutor(1, FlowregBackend, FlowParameters(iterations=3), {}, settings)
    with ex:
        cluster_client = ex.client
        assert ex.n_workers == 1
        assert set(cluster_client.run(lambda: os.environ["NUMBA_NUM_THREADS"]).values()) == {"1"}
        ex.set_reference(video[0].astype(np.float32) / 4000)
        frames = video[:3].astype(np.float32) / 4000
        registered, w = ex.process_batch(video[:3], frames, None, first_index=0)
    assert registered.shape == (3, H, W, 1) and w.shape == (3, H, W, 2)
    assert cluster_client.status == "closed"


# -- configuration and the missing extra ---------------------------------------------------------


def test_missing_distributed_gives_the_install_hint(tmp_path, video, monkeypatch):
    monkeypatch.setattr(_runtime, "_has_module", lambda name: name != "distributed")
    assert "dask" not in _runtime.get_runtime().list_parallelization_executors()
    with pytest.raises(ImportError, match=r'pip install "pyflowreg\[dask\]"'):
        compensate_recording(
            options_for(tmp_path, video, "out"),
            config=RegistrationConfig(parallelization="dask"),
        )
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "pyflowreg\[dask\]"'):
        import_distributed()


def test_config_validates_the_dask_fields(tmp_path):
    with pytest.raises(TypeError, match=r"dask_client must be a distributed\.Client"):
        RegistrationConfig(dask_client="tcp://127.0.0.1:8786")
    with pytest.raises(TypeError, match="dask_address must be a str"):
        RegistrationConfig(dask_address=8786)
    with pytest.raises(ValueError, match="not both"):
        RegistrationConfig(dask_client=SimpleNamespace(submit=None), dask_address="x:1")
    config = RegistrationConfig(parallelization="dask", dask_address="tcp://10.0.0.1:8786")
    assert config.executor_kwargs("dask") == {"client": None, "address": "tcp://10.0.0.1:8786"}
    assert config.executor_kwargs("threading") == {}
    missing = tmp_path / "scheduler.json"
    with (
        pytest.raises(FileNotFoundError, match="neither a scheduler address"),
        dask_client(1, address=str(missing)),
    ):
        pass


def test_scheduler_address_and_chunk_rules(tmp_path):
    assert is_scheduler_address("tcp://10.0.0.1:8786")
    assert is_scheduler_address("node01:8786")
    assert not is_scheduler_address(str(tmp_path / "scheduler.json"))
    assert not is_scheduler_address(tmp_path / "scheduler.json")
    assert zarr_chunk_frames(512 * 512 * 2, 400) == 8  # 0.5 MiB frames: 8 divides 400
    assert zarr_chunk_frames(512 * 512 * 8, 400) == 2
    assert zarr_chunk_frames(32 * 40 * 8, 4) == 4
    assert zarr_chunk_frames(32 * 40 * 8, 7) == 7
    assert zarr_chunk_frames(10 << 20, 400) == 1
