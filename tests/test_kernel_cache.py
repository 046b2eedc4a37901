"""First run: kernels compiled once per environment, said once, reported by ``pyflowreg info``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from pyflowreg import _kernels
from pyflowreg.cli import main
from pyflowreg.motion_correction import OFOptions, compensate_arr
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig

ANNOUNCEMENT = "compiling kernels, first run only"


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    """The manifest goes to a temporary file; ensure_compiled forgets earlier calls."""
    path = tmp_path / "manifest.json"
    monkeypatch.setattr(_kernels, "_manifest_path", lambda dispatchers: path)
    _kernels._compiled_once.cache_clear()
    yield path
    _kernels._compiled_once.cache_clear()


def test_status_follows_the_manifest(manifest):
    status = _kernels.kernel_status()
    assert not status.compiled and status.reason == "not compiled yet in this environment"
    _kernels.ensure_compiled()  # the test environment's cache is warm: loads, writes manifest
    status = _kernels.kernel_status()
    assert status.compiled and status.n_kernels >= 3 and status.reason is None
    record = json.loads(manifest.read_text())
    name, entry = next(iter(record["kernels"].items()))
    assert name.startswith("pyflowreg.core.") and os.path.isfile(entry["source"])
    entry["stamp"][0] -= 10  # the source changed since: Numba recompiles, so do we
    manifest.write_text(json.dumps(record))
    status = _kernels.kernel_status()
    assert (
        not status.compiled
        and status.reason == f"the source of {name} changed since it was compiled"
    )
    record["versions"]["numba"] = "0.1"
    manifest.write_text(json.dumps(record))
    assert _kernels.kernel_status().reason.startswith("compiled for {")


def test_a_cold_cache_is_announced_once(manifest, monkeypatch, caplog, tmp_path):
    cold = _kernels.KernelStatus(False, 0, str(tmp_path), "not compiled yet in this environment")
    monkeypatch.setattr(_kernels, "kernel_status", lambda: cold)
    misses = iter([0, 44])  # before and after the warm-up: it compiled
    monkeypatch.setattr(_kernels, "_cache_misses", lambda dispatchers: next(misses))
    video = np.random.default_rng(0).random((4, 24, 24)).astype(np.float32)
    config = RegistrationConfig(parallelization="multiprocessing", n_jobs=2)
    with caplog.at_level(logging.INFO, logger="pyflowreg"):
        for _ in range(2):
            compensate_arr(
                video, video[0], OFOptions(quality_setting="fast"), registration_config=config
            )
    said = [r for r in caplog.records if r.getMessage().startswith(ANNOUNCEMENT)]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "(not compiled yet in this environment; later runs load them" in said[0].getMessage()
    assert sum("kernels compiled in" in r.getMessage() for r in caplog.records) == 1
    assert json.loads(manifest.read_text())["kernels"]


def test_info_says_whether_the_kernels_are_compiled(manifest, capsys):
    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("kernels"))
    assert line.startswith("kernels   not compiled: not compiled yet in this environment")
    _kernels.ensure_compiled()
    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("kernels"))
    assert line.startswith("kernels   compiled (") and "kernels cached in" in line


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_first_run_in_a_fresh_environment(tmp_path):
    """A cold Numba cache (a new NUMBA_CACHE_DIR): info says so, the first multiprocessing run
    compiles in the caller only and says so once, the second says nothing, info agrees."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    video = np.random.default_rng(0).random((6, 32, 32)).astype(np.float32)
    np.save(tmp_path / "video.npy", video)

    def pyflowreg(*args):
        done = subprocess.run(
            [sys.executable, "-m", "pyflowreg", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return done

    assert "kernels   not compiled" in pyflowreg("info").stdout
    run = ["compensate", "video.npy", "--executor", "multiprocessing", "-j", "2", "--quality"]
    first = pyflowreg(*run, "fast", "-o", "first", "-q")
    assert first.stderr.count(ANNOUNCEMENT) == 1, first.stderr
    assert first.stderr.count("kernels compiled in") == 1, first.stderr
    second = pyflowreg(*run, "fast", "-o", "second", "-q")
    assert ANNOUNCEMENT not in second.stderr and "compiled in" not in second.stderr
    assert "kernels   compiled (" in pyflowreg("info").stdout
