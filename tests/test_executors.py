"""Executors: identical results whatever the executor, errors that say which frame, clean
shared memory, no hang when a worker dies."""

from __future__ import annotations

import errno
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pyflowreg._runtime import get_runtime
from pyflowreg.backends.cpu import FlowregBackend
from pyflowreg.core import FlowParameters, warp
from pyflowreg.executors import (
    MultiprocessingExecutor,
    SequentialExecutor,
    ThreadingExecutor,
    WarpSettings,
    processes,
    register_frame,
    resolve_n_jobs,
    warp_frame,
)
from pyflowreg.executors.base import register_frames, validate_n_jobs
from pyflowreg.executors.shared import PREFIX, ArraySlot, SharedTree, attach_tree

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/_plugins.py, as a plug-in
import _plugins

EXECUTORS = ["sequential", "threading", "multiprocessing"]
PARAMS = FlowParameters(min_level=0, iterations=3)
SHM = Path("/dev/shm")


def our_blocks() -> list[str]:
    """Shared-memory blocks created by this process (Linux: they show up in /dev/shm)."""
    if not SHM.is_dir():
        return []
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(f"{PREFIX}{os.getpid()}_"))


@pytest.fixture
def recording():
    """A seeded, tiny recording: raw uint16 frames, their float32 'filtered' version and two
    references, (T, H, W, C) = (6, 32, 48, 1)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:32, :48]
    base = 0.5 + 0.25 * np.sin(x / 4.0) * np.cos(y / 5.0)
    frames = []
    for t in range(6):
        shifted = 0.5 + 0.25 * np.sin((x + 0.3 * t) / 4.0) * np.cos((y - 0.2 * t) / 5.0)
        frames.append(shifted + 0.01 * rng.standard_normal(base.shape))
    filtered = np.stack(frames)[..., None].astype(np.float32)
    raw = np.round(filtered * 4000).astype(np.uint16)
    refs = [base[..., None].astype(np.float32), filtered[2].copy()]
    return raw, filtered, refs


def run(name, factory, recording, n_jobs=2, backend_params=None, dtype=np.uint16, **kwargs):
    """Two references, three batches of different lengths (incl. a growing one); ``name`` is
    a registered executor or an executor class."""
    raw, filtered, refs = recording
    uv = np.full((32, 48, 2), 0.25, np.float32)
    cls = name if isinstance(name, type) else get_runtime().get_executor_class(name)
    settings = WarpSettings("cubic", np.dtype(dtype))
    outputs = []
    with cls(n_jobs, factory, PARAMS, backend_params or {}, settings, **kwargs) as ex:
        ex.set_reference(refs[0])
        outputs.append(ex.process_batch(raw[:4], filtered[:4], None, 0))
        outputs.append(ex.process_batch(raw[4:], filtered[4:], uv, 4))
        if name == "multiprocessing":
            # reference, inputs and one output block: process_batch never needs a second one
            assert len(our_blocks()) == 3
        ex.set_reference(refs[1])
        outputs.append(ex.process_batch(raw, filtered, uv, 0))
    return outputs


@pytest.mark.parametrize("name", EXECUTORS)
@pytest.mark.parametrize("factory", [FlowregBackend, _plugins.make_shift_backend])
def test_every_executor_equals_sequential(name, factory, recording):
    expected = run("sequential", factory, recording)
    got = run(name, factory, recording)
    for (reg, w), (reg_exp, w_exp) in zip(got, expected, strict=True):
        assert reg.dtype == np.uint16 and w.dtype == np.float32
        assert np.array_equal(reg, reg_exp)
        assert np.array_equal(w, w_exp)
    assert our_blocks() == []


def test_register_frame_is_flow_then_warp(recording):
    raw, filtered, refs = recording
    backend = FlowregBackend(PARAMS, {})
    prepared = backend.prepare_reference(refs[0])
    uv = np.zeros((32, 48, 2), np.float32)
    settings = WarpSettings("linear", np.dtype(np.float32))
    registered, w = register_frame(backend, prepared, raw[3], filtered[3], uv, settings)
    w_expected = backend.estimate(prepared, filtered[3:4], uv)[0]
    assert np.array_equal(w, w_expected)
    assert np.abs(w).max() > 0.05  # the frames move: a real flow, not zeros
    assert registered.dtype == np.float32
    expected = warp(raw[3].astype(np.float32), w_expected, method="linear")
    assert np.array_equal(registered, expected)
    assert not np.array_equal(registered, np.round(registered))  # no integer round trip


class CountingBackend(_plugins.ShiftBackend):
    """Records how many frames each ``estimate`` call gets."""

    def __init__(self, params, backend_params=None):
        super().__init__(params, backend_params)
        self.calls = []

    def estimate(self, prepared, frames, uv=None):
        self.calls.append(len(frames))
        return super().estimate(prepared, frames, uv)


@pytest.mark.parametrize(
    ("cls", "calls"), [(SequentialExecutor, [6]), (ThreadingExecutor, [1] * 6)]
)
def test_sequential_gives_the_backend_whole_batches(recording, cls, calls):
    raw, filtered, refs = recording
    with cls(2, CountingBackend, PARAMS, {}, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        ex.process_batch(raw, filtered, None)
        assert ex.backend.calls == calls


def test_outputs_in_float_from_integer_frames(recording):
    (reg, w), *_ = run("threading", FlowregBackend, recording, dtype=np.float32)
    assert reg.dtype == np.float32 and reg.shape == (4, 32, 48, 1) and w.shape == (4, 32, 48, 2)


def test_warp_frame_rounds_and_clips_to_the_output_dtype():
    values = np.array([-3.2, 0.5, 1.5, 254.6, 300.0], np.float32).reshape(1, 5, 1)
    zero = np.zeros((1, 5, 2), np.float32)
    to_uint8 = warp_frame(values, zero, WarpSettings("cubic", np.dtype(np.uint8)))
    assert to_uint8.ravel().tolist() == [0, 0, 2, 255, 255]
    wide = np.array([70000, -5], np.int32).reshape(1, 2, 1)
    to_uint16 = warp_frame(wide, zero[:, :2], WarpSettings("linear", np.dtype(np.uint16)))
    assert to_uint16.ravel().tolist() == [65535, 0]
    out = np.empty((1, 5, 1), np.float64)
    assert warp_frame(values, zero, WarpSettings("nearest", np.dtype(np.float64)), out) is out
    np.testing.assert_array_equal(out, values)
    with pytest.raises(ValueError, match="NaN or infinite"):
        warp_frame(values, np.full_like(zero, np.nan), WarpSettings("cubic", np.dtype(np.uint8)))


def test_n_jobs():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolve_n_jobs(-1) == cores
    assert resolve_n_jobs(3) == 3
    for bad in (0, -2):
        with pytest.raises(ValueError, match=re.escape(f"n_jobs must be -1 or >= 1, got {bad}")):
            resolve_n_jobs(bad)
    with pytest.raises(TypeError, match="n_jobs must be an int, got bool"):
        resolve_n_jobs(True)
    settings = WarpSettings()
    assert SequentialExecutor(8, FlowregBackend, PARAMS, {}, settings).n_workers == 1
    assert ThreadingExecutor(3, FlowregBackend, PARAMS, {}, settings).n_workers == 3
    with pytest.raises(ValueError, match="n_jobs must be -1 or >= 1, got 0"):
        MultiprocessingExecutor(0, FlowregBackend, PARAMS, {}, settings)


def test_contract_errors(recording):
    raw, filtered, refs = recording
    with pytest.raises(ValueError, match=r"method must be one of \['nearest', 'linear', 'cubic', "):
        WarpSettings("bilinear").validated()
    ex = SequentialExecutor(1, FlowregBackend, PARAMS, {}, WarpSettings())
    with pytest.raises(RuntimeError, match=r"set_reference\(\) must be called"):
        ex.process_batch(raw, filtered, None)
    ex.set_reference(refs[0])
    with pytest.raises(ValueError, match=re.escape("raw must have shape (T, 32, 48, 1)")):
        ex.process_batch(raw[:, :16], filtered[:, :16], None)
    with pytest.raises(ValueError, match=re.escape("uv must have shape (32, 48, 2)")):
        ex.process_batch(raw, filtered, np.zeros((32, 48), np.float32))
    reg, w = ex.process_batch(raw[:0], filtered[:0], None)
    assert reg.shape == (0, 32, 48, 1) and w.shape == (0, 32, 48, 2)
    ex.close()
    with pytest.raises(RuntimeError, match="the sequential executor is closed"):
        ex.set_reference(refs[0])


@pytest.mark.parametrize("name", EXECUTORS)
def test_frame_error_names_the_frame(name, recording):
    raw, filtered, refs = recording
    filtered = filtered.copy()
    filtered[4, 0, 0, 0] = _plugins.POISON
    cls = get_runtime().get_executor_class(name)
    with cls(2, _plugins.ShiftBackend, PARAMS, {}, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        if name == "multiprocessing":
            assert ex.wait_until_started(timeout=30)  # every frame goes to a worker
        # the sequential executor estimates a batch in one call: it names the batch's frames
        frames = "frames 10..15" if name == "sequential" else "frame 14"
        message = re.escape(f"registering {frames} failed ({name} executor)")
        with pytest.raises(RuntimeError, match=message) as info:
            ex.process_batch(raw, filtered, None, first_index=10)
        # the original error (and, from a worker, its traceback text) is chained
        err = info.value
        assert isinstance(err.__cause__, ValueError)
        assert str(err.__cause__) == "poisoned frame"
        if name == "multiprocessing":
            assert 'raise ValueError("poisoned frame")' in str(err.__cause__.__cause__)
    assert our_blocks() == []


@pytest.mark.parametrize("name", EXECUTORS)
def test_submitted_batches_overlap_and_equal_process_batch(name, recording):
    """submit_batch: batch b + 1 runs while batch b is read; the outputs equal
    process_batch's, and views into shared buffers stay intact until released."""
    raw, filtered, refs = recording
    expected = run("sequential", FlowregBackend, recording)
    uv = np.full((32, 48, 2), 0.25, np.float32)
    cls = get_runtime().get_executor_class(name)
    with cls(2, FlowregBackend, PARAMS, {}, WarpSettings("cubic", np.dtype(np.uint16))) as ex:
        ex.set_reference(refs[0])
        first = ex.submit_batch(raw[:4], filtered[:4], None, 0)
        reg0, w0 = first.result()
        second = ex.submit_batch(raw[4:], filtered[4:], uv, 4)  # while batch 0 is still held
        assert np.array_equal(reg0, expected[0][0]) and np.array_equal(w0, expected[0][1])
        first.release()
        reg1, w1 = second.result()
        assert np.array_equal(reg1, expected[1][0]) and np.array_equal(w1, expected[1][1])
        assert second.volatile == (name == "multiprocessing")
        if name == "multiprocessing":
            assert len(our_blocks()) == 4  # reference, inputs, two output blocks
            third = ex.submit_batch(raw[:1], filtered[:1], None, 0)
            with pytest.raises(RuntimeError, match="release the outputs of earlier batches"):
                ex.submit_batch(raw[:1], filtered[:1], None, 0)
            third.release()
        second.release()
        # an unreleased batch in flight is cancelled by close()
        ex.submit_batch(raw, filtered, uv, 0)
    assert our_blocks() == []


def test_frames_registered_while_the_pool_starts(recording, monkeypatch):
    """Until the workers run, the calling process registers frames itself (from the last):
    same outputs, and its errors name the frame and chain the original exception."""
    raw, filtered, refs = recording
    expected = run("sequential", FlowregBackend, recording)[0]
    monkeypatch.setattr(MultiprocessingExecutor, "_start_pool", lambda self: None)
    with MultiprocessingExecutor(
        2, FlowregBackend, PARAMS, {}, WarpSettings("cubic", np.uint16)
    ) as ex:
        ex.set_reference(refs[0])
        reg, w = ex.process_batch(raw[:4], filtered[:4], None, 0)  # never started: all here
        assert np.array_equal(reg, expected[0]) and np.array_equal(w, expected[1])
    poisoned = filtered.copy()
    poisoned[1, 0, 0, 0] = _plugins.POISON
    with MultiprocessingExecutor(2, _plugins.ShiftBackend, PARAMS, {}, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        with pytest.raises(RuntimeError, match=r"registering frame 11 failed") as info:
            ex.process_batch(raw, poisoned, None, first_index=10)
        assert str(info.value.__cause__) == "poisoned frame"
    assert our_blocks() == []


def test_error_inside_with_block_releases_shared_memory(recording):
    raw, filtered, refs = recording
    with pytest.raises(KeyboardInterrupt):
        with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, WarpSettings()) as ex:
            ex.set_reference(refs[0])
            ex.process_batch(raw[:2], filtered[:2], None)
            assert len(our_blocks()) == 3
            raise KeyboardInterrupt
    assert our_blocks() == []


@pytest.mark.timeout(60)
def test_killed_worker_raises_instead_of_hanging(recording):
    raw, filtered, refs = recording
    settings = WarpSettings()
    params = {"die_in_worker": True}
    with MultiprocessingExecutor(2, _plugins.ShiftBackend, PARAMS, params, settings) as ex:
        ex.set_reference(refs[0])
        assert ex.wait_until_started(timeout=30)  # the frames go to the (dying) workers
        with pytest.raises(RuntimeError, match="a multiprocessing worker died unexpectedly"):
            ex.process_batch(raw, filtered, None, first_index=100)
        with pytest.raises(RuntimeError, match="a worker died earlier"):
            ex.process_batch(raw, filtered, None)
    assert our_blocks() == []


def test_workers_limit_their_threads(recording):
    raw, filtered, refs = recording
    params = {"probe_threads": True}
    with MultiprocessingExecutor(2, _plugins.ShiftBackend, PARAMS, params, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        assert ex.wait_until_started(timeout=30)  # the frames go to the workers
        _, w = ex.process_batch(raw[:2], filtered[:2], None)
    assert np.all(w[..., 0] == 1)  # NUMBA_NUM_THREADS was set before numba was imported
    assert np.all(w[..., 1] == 1)


def test_unpicklable_factory_is_refused_for_processes():
    def local_factory(params, backend_params):
        return FlowregBackend(params, backend_params)

    with pytest.raises(TypeError, match="must be picklable to reach multiprocessing workers"):
        MultiprocessingExecutor(2, local_factory, PARAMS, {}, WarpSettings())


def test_shared_tree_round_trip():
    rng = np.random.default_rng(0)
    tree = _plugins.ShiftPrepared(
        rng.random((5, 7, 2), dtype=np.float32),
        0.25,
        [np.arange(6, dtype=np.int64).reshape(2, 3), {"k": (np.ones(3, np.uint8), "text")}],
        np.empty((0, 4)),
    )
    owner = SharedTree(tree)
    try:
        assert owner.name.startswith(f"{PREFIX}{os.getpid()}_")
        attached = attach_tree(owner.name)
        got = attached.tree
        assert type(got) is _plugins.ShiftPrepared
        assert np.array_equal(got.reference, tree.reference)
        assert got.mean == 0.25
        assert np.array_equal(got.levels[0], tree.levels[0]) and type(got.levels) is list
        assert got.levels[1]["k"][1] == "text"
        assert np.array_equal(got.levels[1]["k"][0], np.ones(3, np.uint8))
        assert got.empty.shape == (0, 4)
        assert not got.reference.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            got.reference[0, 0, 0] = 1.0
        del got
        attached.close()
        slots = SharedTree({"out": ArraySlot((3, 4), np.dtype(np.float64))})
        slots.views()["out"][...] = 2.0
        reader = attach_tree(slots.name)
        assert reader.tree["out"].sum() == 24.0
        reader.close()
        slots.close()
    finally:
        owner.close()
    assert our_blocks() == []
    with pytest.raises(TypeError, match="arrays of Python objects"):
        SharedTree([np.array([object()])])


def test_shared_tree_is_laid_out_again_in_place():
    """A block of slots takes another layout while it fits; attached trees follow it."""
    block = SharedTree({"a": ArraySlot((4, 8), np.dtype(np.uint16))}, min_nbytes=512)
    try:
        first = block.key
        assert block.relayout({"a": ArraySlot((4, 8), np.dtype(np.uint16))})
        assert block.key == first  # same layout: nothing changes
        reader = attach_tree(block.key)
        assert block.relayout({"a": ArraySlot((2, 8), np.float64), "b": ArraySlot((3,), np.int8)})
        assert block.key != first and block.key.startswith(block.name)
        views = block.views()
        views["a"][...] = 1.5
        views["b"][...] = -2
        del views
        assert reader.tree["a"].shape == (4, 8)  # the old layout until refreshed
        reader.refresh()
        assert reader.tree["a"].shape == (2, 8) and reader.tree["a"].sum() == 24.0
        assert reader.tree["b"].tolist() == [-2, -2, -2]
        reader.close()
        before = block.key
        assert not block.relayout({"a": ArraySlot((100, 8), np.float64)})  # 6400 > 512 bytes
        assert block.key == before
        with pytest.raises(TypeError, match="ArraySlot leaves only"):
            block.relayout({"a": np.zeros(3)})
    finally:
        block.close()
    with pytest.raises(RuntimeError, match="is closed"):
        block.relayout({"a": ArraySlot((1,), np.uint8)})
    assert our_blocks() == []


def test_reserve_keeps_blocks_when_shorter_batches_come_first(recording):
    """After ``reserve(n)``, shorter batches and another output dtype reuse the same blocks
    (laid out again in place), and the results still equal the sequential executor's."""
    raw, filtered, refs = recording
    expected = run("sequential", FlowregBackend, recording)
    settings = WarpSettings("cubic", np.dtype(np.uint16))
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, settings) as ex:
        ex.reserve(6)
        ex.set_reference(refs[0])
        short = ex.submit_batch(raw[:2], filtered[:2], None, 0)
        short.result()
        blocks = our_blocks()
        short.release()
        ex.reconfigure(warp_settings=WarpSettings("cubic", np.dtype(np.float32)))
        ex.set_reference(refs[0])  # a new reference block; inputs and outputs stay
        ex.process_batch(raw[:2], filtered[:2], None, 0)
        reg, w = ex.process_batch(raw[:4], filtered[:4], None, 0)
        assert np.array_equal(w, expected[0][1])
        assert np.array_equal(reg, warp_frame_all(raw[:4], w, np.float32))
        ex.reconfigure(warp_settings=settings)
        ex.set_reference(refs[1])
        reg, w = ex.process_batch(raw, filtered, np.full((32, 48, 2), 0.25, np.float32), 0)
        assert np.array_equal(reg, expected[2][0]) and np.array_equal(w, expected[2][1])
        kept = set(blocks) & set(our_blocks())
        assert len(kept) == 2  # the input block and the first output block
    assert our_blocks() == []


def warp_frame_all(raw, w, dtype):
    settings = WarpSettings("cubic", np.dtype(dtype))
    return np.stack([warp_frame(r, f, settings) for r, f in zip(raw, w, strict=True)])


def worker_pids(ex) -> set[int]:
    return set(ex._pool._processes)


LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@LINUX
def test_idle_pool_is_taken_over_by_the_next_executor(recording):
    """A pool outlives a sound run for ``keep_alive`` s; only an executor with the same workers,
    backend and backend options takes it; idle workers hold no shared memory."""
    raw, filtered, refs = recording
    processes.shutdown_idle_pools()
    settings = WarpSettings("cubic", np.dtype(np.uint16))
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, settings, keep_alive=30) as ex:
        ex.set_reference(refs[0])
        assert ex.wait_until_started(timeout=30)
        first = ex.process_batch(raw, filtered, None, 0)
        pool, pids = ex._pool, worker_pids(ex)
    assert our_blocks() == []
    deadline = time.monotonic() + 10
    while any(mapped_blocks(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(mapped_blocks(pid) for pid in pids)  # idle workers let go of the blocks
    params = FlowParameters(min_level=0, iterations=2)  # other flow parameters: same pool
    with MultiprocessingExecutor(2, FlowregBackend, params, {}, settings, keep_alive=30) as ex:
        assert ex._pool is pool and ex.wait_until_started(timeout=0)
        ex.set_reference(refs[0])
        other = ex.process_batch(raw, filtered, None, 0)
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, settings, keep_alive=30) as ex:
        assert ex._pool is pool
        ex.set_reference(refs[0])
        again = ex.process_batch(raw, filtered, None, 0)
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])
    assert not np.array_equal(other[1], first[1])
    with MultiprocessingExecutor(1, FlowregBackend, PARAMS, {}, settings, keep_alive=30) as ex:
        assert ex._pool is not pool  # other workers
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {"x": 1}, settings) as ex:
        assert ex._pool is not pool  # other backend options
    assert processes.shutdown_idle_pools() == 2  # at most two are kept: the last two
    assert all(not process_alive(pid) for pid in pids)


@LINUX
def test_idle_pool_is_stopped_after_its_time_and_never_kept_after_errors(recording, monkeypatch):
    raw, filtered, refs = recording
    processes.shutdown_idle_pools()
    with MultiprocessingExecutor(
        2, FlowregBackend, PARAMS, {}, WarpSettings(), keep_alive=0.2
    ) as ex:
        assert ex.wait_until_started(timeout=30)
        pids = worker_pids(ex)
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(process_alive(pid) for pid in pids)
    assert processes.shutdown_idle_pools() == 0
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, WarpSettings(), keep_alive=0) as ex:
        assert ex.wait_until_started(timeout=30)
    assert processes.shutdown_idle_pools() == 0  # keep_alive=0: stopped at close
    with pytest.raises(KeyboardInterrupt):
        with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, WarpSettings()) as ex:
            ex.set_reference(refs[0])
            ex.process_batch(raw[:2], filtered[:2], None)
            raise KeyboardInterrupt
    assert processes.shutdown_idle_pools() == 0  # interrupted: terminated, not kept
    monkeypatch.setenv(processes.KEEP_ALIVE_ENV, "0")
    assert processes.keep_alive_seconds() == 0.0
    monkeypatch.setenv(processes.KEEP_ALIVE_ENV, "soon")
    with pytest.raises(ValueError, match="PYFLOWREG_POOL_KEEP_ALIVE must be a number of seconds"):
        MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, WarpSettings())
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"keep_alive must be a finite number of seconds >= 0"):
            processes.keep_alive_seconds(bad)
    with pytest.raises(TypeError, match="keep_alive must be a number of seconds, got str"):
        processes.keep_alive_seconds("5")


def mapped_blocks(pid: int) -> list[str]:
    """pyflowreg shared-memory blocks mapped by process ``pid`` (unlinked ones included)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return [line for line in maps if PREFIX in line]
    except (FileNotFoundError, ProcessLookupError):  # reaped between open and read
        return []


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped between open and read
        return False


def test_executor_settings_pickle():
    settings = WarpSettings("nearest", np.dtype(np.int16), 0.0)
    assert pickle.loads(pickle.dumps(settings)) == settings


def test_flow_seconds_counts_each_batch_until_its_outputs_are_ready(recording):
    """``Executor.flow_seconds`` sums submission-to-result time, also for asynchronous pools."""
    video, filtered, refs = recording
    for cls in (SequentialExecutor, ThreadingExecutor):
        with cls(2, FlowregBackend, PARAMS, {}, WarpSettings()) as ex:
            ex.set_reference(refs[0])
            assert ex.flow_seconds == 0.0
            tic = time.perf_counter()
            pending = ex.submit_batch(video, filtered, None, 0)
            time.sleep(0.05)  # the caller's own work meanwhile
            pending.result()
            after_one = ex.flow_seconds
            assert 0 < after_one <= time.perf_counter() - tic
            pending.release()
            ex.process_batch(video, filtered, None, 0)
            assert ex.flow_seconds > after_one


@LINUX
@pytest.mark.timeout(120)
def test_dead_idle_pool_is_replaced_once(recording, monkeypatch):
    """Workers of an idle pool killed while it waits: the next executor notices (the pool
    answers no ping) and starts a new pool instead of failing the run."""
    import signal

    raw, filtered, refs = recording
    processes.shutdown_idle_pools()
    settings = WarpSettings("cubic", np.dtype(np.uint16))
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, settings, keep_alive=30) as ex:
        assert ex.wait_until_started(timeout=30)
        ex.set_reference(refs[0])
        expected = ex.process_batch(raw, filtered, None, 0)
        pool, pids = ex._pool, worker_pids(ex)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    pings = []
    answers = processes._answers
    monkeypatch.setattr(processes, "_answers", lambda *a: pings.append(a) or answers(*a))
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, settings, keep_alive=30) as ex:
        assert ex._pool is not pool  # replaced ...
        assert ex.wait_until_started(timeout=30)
        ex.set_reference(refs[0])
        got = ex.process_batch(raw, filtered, None, 0)
        new_pids = worker_pids(ex)
    assert len(pings) == 1  # ... once: the new pool is not pinged
    assert new_pids and not new_pids & pids
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    # the replacement is sound and is kept idle in its turn
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, settings, keep_alive=30) as ex:
        assert worker_pids(ex) == new_pids
    assert len(pings) == 2
    assert processes.shutdown_idle_pools() == 1


def _blocks_in_files() -> list[str]:
    import tempfile

    folder = Path(tempfile.gettempdir())
    return sorted(p.name for p in folder.glob(f"{PREFIX}{os.getpid()}_*"))


def _run_batches(recording, n_jobs=2):
    raw, filtered, refs = recording
    with MultiprocessingExecutor(n_jobs, FlowregBackend, PARAMS, {}, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        first = ex.process_batch(raw[:4], filtered[:4], None, 0)
        second = ex.process_batch(raw, filtered, None, 0)
    return [tuple(np.array(a) for a in first), tuple(np.array(a) for a in second)]


@LINUX
def test_shared_memory_free_space_counts_blocks_not_yet_written():
    from pyflowreg.executors import shared

    before = shared._shm_available()
    assert 0 < before <= shared.free_bytes(shared.SHM_DIR)
    block = SharedTree({"x": ArraySlot((16, 1024, 1024), np.float32)})  # 64 MiB, untouched
    try:
        # others use /dev/shm too: a few MiB of slack
        assert before - shared._shm_available() >= 56 * 2**20  # counted although not written
        block.views()["x"][:8] = 1  # half written: still 64 MiB taken in all
        assert 56 * 2**20 <= before - shared._shm_available() <= 72 * 2**20
    finally:
        block.close()
    assert abs(before - shared._shm_available()) < 16 * 2**20  # released (others may write)


def test_full_shared_memory_falls_back_to_files(recording, monkeypatch):
    from pyflowreg.executors import shared

    monkeypatch.setattr(shared, "_shm_available", lambda: 1000)  # a /dev/shm almost full
    message = r"/dev/shm has 1000 bytes free but a shared block .* needs \d+: .* in a file under"
    with pytest.warns(shared.SharedMemoryFallbackWarning, match=message):
        got = _run_batches(recording)
    raw, filtered, refs = recording
    with SequentialExecutor(1, FlowregBackend, PARAMS, {}, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        expected = [ex.process_batch(raw[:4], filtered[:4], None, 0)]
        expected.append(ex.process_batch(raw, filtered, None, 0))
    for (reg, w), (reg_exp, w_exp) in zip(got, expected, strict=True):
        assert np.array_equal(reg, reg_exp) and np.array_equal(w, w_exp)
    assert our_blocks() == [] and _blocks_in_files() == []


def test_no_room_for_shared_blocks_is_an_error_naming_the_bytes(recording, monkeypatch):
    from pyflowreg.executors import shared

    monkeypatch.setattr(shared, "_shm_available", lambda: 1000)
    monkeypatch.setattr(shared, "free_bytes", lambda path: 2000)  # and a full disk
    refs = recording[2]
    message = r"needs \d+ bytes, /dev/shm has 1000 bytes free and .* 2000; use a smaller buffer"
    with MultiprocessingExecutor(2, FlowregBackend, PARAMS, {}, WarpSettings()) as ex:
        with pytest.raises(OSError, match=message) as caught:
            ex.set_reference(refs[0])
    assert caught.value.errno == errno.ENOSPC
    assert our_blocks() == [] and _blocks_in_files() == []


def test_ctrl_c_inside_a_kernel_stays_an_interrupt():
    """Numba returns a SystemError caused by the KeyboardInterrupt when Ctrl-C lands during a
    compiled kernel: the executors re-raise the interrupt, not a frame error."""
    ex = SequentialExecutor(1, FlowregBackend, PARAMS, {}, WarpSettings())
    try:
        raise SystemError("CPUDispatcher returned a result with an exception set") from (
            KeyboardInterrupt()
        )
    except SystemError as exc:
        assert isinstance(ex._frame_error(3, exc), KeyboardInterrupt)
    error = ex._frame_error(3, ValueError("bad"))
    assert isinstance(error, RuntimeError) and str(error).startswith("registering frame 3 failed")
    ex.close()


# -- the frame loop, written once ------------------------------------------------------------------


class NaNFieldBackend(_plugins.ShiftBackend):
    """A field with NaN for every frame whose first pixel is 0.5 (its warp fails)."""

    def estimate(self, prepared, frames, uv=None):
        out = super().estimate(prepared, frames, uv)
        out[np.asarray(frames)[:, 0, 0, 0] == 0.5] = np.nan
        return out


@pytest.mark.parametrize("factory", [FlowregBackend, _plugins.make_shift_backend])
def test_a_third_party_executor_gets_the_frame_loop_from_the_base_class(factory, recording):
    """An Executor subclass that only names itself registers like the sequential executor: one
    estimate call per batch, the same outputs bit for bit, errors naming its frames."""
    expected = run("sequential", factory, recording)
    got = run(_plugins.BareExecutor, factory, recording, n_jobs=1)
    for (reg, w), (reg_exp, w_exp) in zip(got, expected, strict=True):
        assert np.array_equal(reg, reg_exp) and np.array_equal(w, w_exp)
    raw, filtered, refs = recording
    with _plugins.BareExecutor(1, CountingBackend, PARAMS, {}, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        ex.process_batch(raw, filtered, None)
        assert ex.backend.calls == [6]
        poisoned = filtered.copy()
        poisoned[3, 0, 0, 0] = _plugins.POISON  # the estimate of the batch fails
        with pytest.raises(RuntimeError, match=re.escape("frames 10..15 failed (bare executor)")):
            ex.process_batch(raw, poisoned, None, first_index=10)
    with _plugins.BareExecutor(1, NaNFieldBackend, PARAMS, {}, WarpSettings()) as ex:
        ex.set_reference(refs[0])
        bad_field = filtered.copy()
        bad_field[4, 0, 0, 0] = 0.5  # the warp of frame 4 fails
        with pytest.raises(
            RuntimeError, match=re.escape("frame 14 failed (bare executor)")
        ) as info:
            ex.process_batch(raw, bad_field, None, first_index=10)
        assert "NaN or infinite" in str(info.value.__cause__)


def test_register_frames_is_one_estimate_then_one_warp_per_frame(recording):
    raw, filtered, refs = recording
    backend = CountingBackend(PARAMS, {})
    prepared = backend.prepare_reference(refs[0])
    uv = np.full((32, 48, 2), 0.25, np.float32)
    settings = WarpSettings("cubic", np.dtype(np.uint16))
    registered, w = register_frames(backend, prepared, raw, filtered, uv, settings)
    assert backend.calls == [6]
    assert np.array_equal(w, backend.estimate(prepared, filtered, uv))
    assert np.array_equal(registered, warp_frame_all(raw, w, np.uint16))
    out = (np.empty_like(registered), np.empty_like(w))
    assert register_frames(backend, prepared, raw, filtered, uv, settings, out)[0] is out[0]
    assert np.array_equal(out[0], registered) and np.array_equal(out[1], w)
    # one frame at a time (the parallel executors' workers): the same values
    for i in range(raw.shape[0]):
        reg_i, w_i = register_frame(backend, prepared, raw[i], filtered[i], uv, settings)
        assert np.array_equal(reg_i, registered[i]) and np.array_equal(w_i, w[i])


def test_validate_n_jobs_is_the_one_check():
    assert validate_n_jobs(-1) == -1 and validate_n_jobs(np.int64(4)) == 4
    assert type(validate_n_jobs(np.int64(4))) is int
    with pytest.raises(ValueError, match=re.escape("--n-jobs must be -1 or >= 1, got -5")):
        validate_n_jobs(-5, "--n-jobs")
    with pytest.raises(TypeError, match="n_jobs must be an int, got float"):
        validate_n_jobs(2.0)
    with pytest.raises(ValueError, match="n_jobs must be -1 or >= 1, got 0"):
        _plugins.BareExecutor(0, FlowregBackend, PARAMS, {}, WarpSettings())


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="lists /dev/shm")
def test_blocks_left_by_an_interrupted_creation_go_at_exit():
    """A block whose creation an interrupt cut short (made, but never handed to its owner) is
    unlinked when the process exits, without a resource-tracker warning; a block of the same
    process id that the process did not make is left alone, and so are a parent's blocks when a
    forked child exits."""
    script = (
        "import os, sys\n"
        "from multiprocessing import resource_tracker, shared_memory\n"
        "from pyflowreg.executors import shared\n"
        "orphan = shared._create_block(4096)\n"
        "other = f'{shared.PREFIX}{os.getpid()}_other'\n"
        "foreign = shared_memory.SharedMemory(name=other, create=True, size=4096)\n"
        "resource_tracker.unregister(foreign._name, 'shared_memory')  # another owner's\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    sys.exit(0)  # the child's exit hooks run: they must not touch the parent's block\n"
        "os.waitpid(pid, 0)\n"
        "assert os.path.exists('/dev/shm/' + orphan.name), 'unlinked by the forked child'\n"
        "print(orphan.name, other, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "leaked" not in done.stderr, done.stderr
    orphan, other = done.stdout.split()
    try:
        assert not Path("/dev/shm", orphan).exists()
        assert Path("/dev/shm", other).exists()  # not made by pyflowreg's block factory
    finally:
        Path("/dev/shm", other).unlink(missing_ok=True)
