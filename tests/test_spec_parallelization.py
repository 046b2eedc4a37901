"""The parallelization spec (``shared/spec/parallelization.md``) as tests.

Every ```python block of the spec runs exactly as written, against the real package, in page
order. The only thing the test supplies is what a reader following the page would already have:

- the working directory is ``tmp_path`` (some examples write to the relative ``results/``), and
  every input file an example names (``"large_video.h5"``, ``"video.h5"``,
  ``"large_dataset.h5"``) exists there as a small synthetic recording: 12 uint16 frames of
  24 x 32 pixels from :func:`pyflowreg.datasets.make_recording`, so the default
  ``quality_setting="quality"`` stays fast;
- each ``##`` section runs in one namespace of its own, pre-seeded with the spec's own imports
  (``compensate_recording``, ``OFOptions``, ``RegistrationConfig``) and with ``options``, which
  the spec uses from its first example on without ever defining it: ``OFOptions(input_file=
  "recording.h5", buffer_size=6)``, an options object for the same small recording (two batches,
  so the initial-flow chaining between batches is part of every run);
- the pre-seeded ``compensate_recording`` is the package's function wrapped in a recorder that
  keeps each call's result and a copy of its outputs (``Default Behavior`` calls it twice with
  the same output folder); examples that import ``compensate_recording`` themselves replace it
  with the bare function, and for those the test reads ``results/run.json``.

After each example the test checks what the text around it claims. The ``@dataclass class
RegistrationConfig`` block documents the fields; it runs in a namespace of its own with
``dataclass`` and ``Optional`` imported, and its fields are compared with ours.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import pytest

from _snippets import (
    PageRunner,
    Snippet,
    comment_text,
    input_file_names,
    python_snippets,
    write_recordings,
)

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "parallelization.md"
if not SPEC.is_file():
    pytest.skip(
        f"the parallelization spec is not next to this checkout (looked for {SPEC})",
        allow_module_level=True,
    )

from pyflowreg._runtime import AUTO_ORDER, Runtime, get_runtime  # noqa: E402
from pyflowreg.backends.cpu import FlowregBackend  # noqa: E402
from pyflowreg.core import FlowParameters  # noqa: E402
from pyflowreg.executors import (  # noqa: E402
    MultiprocessingExecutor,
    SequentialExecutor,
    ThreadingExecutor,
    WarpSettings,
)
from pyflowreg.io import open_reader  # noqa: E402
from pyflowreg.motion_correction import OFOptions, compensate_recording  # noqa: E402
from pyflowreg.motion_correction.compensate_recording import RegistrationConfig  # noqa: E402

SNIPPETS: list[Snippet] = python_snippets(SPEC.read_text(encoding="utf-8"))
RECORDING = "recording.h5"
N_FRAMES = 12

#: The fallback warning, as the spec's comment gives it on two lines (joined with a space).
FALLBACK_WARNING = (
    "Backend 'flowreg_cuda' does not support 'multiprocessing' executor. "
    "Supported executors: ['sequential']. Falling back to 'sequential'."
)


def all_cores() -> int:
    """Cores this process may run on (what ``n_jobs=-1`` means)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class RecordedCall(NamedTuple):
    """One call of the pre-seeded ``compensate_recording``."""

    config: Any
    result: Any
    compensated: np.ndarray
    run: dict


def read_video(path: Path) -> np.ndarray:
    with open_reader(path) as reader:
        return reader.read(0, len(reader))


def read_run(folder: str | Path = "results") -> dict:
    """``run.json`` of the last run that wrote to ``folder``."""
    return json.loads((Path(folder) / "run.json").read_text())


def recorder(calls: list[RecordedCall]):
    """``compensate_recording`` that also appends a :class:`RecordedCall` to ``calls``."""

    @functools.wraps(compensate_recording)
    def recorded(options, *args, **kwargs):
        result = compensate_recording(options, *args, **kwargs)
        calls.append(
            RecordedCall(
                kwargs.get("config"),
                result,
                read_video(result.files["compensated"]),
                json.loads(result.files["run"].read_text()),
            )
        )
        return result

    return recorded


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """A folder with every recording the spec names, plus ``recording.h5``."""
    folder = tmp_path_factory.mktemp("spec_recordings")
    names = {RECORDING}
    for snippet in SNIPPETS:
        names.update(input_file_names(snippet.code))
    write_recordings(folder, sorted(names), n_frames=N_FRAMES)
    return folder


class Section(NamedTuple):
    runner: PageRunner
    calls: list[RecordedCall]

    def run(self, heading: str, **kwargs):
        """Run the next example with an empty ``results/`` folder."""
        shutil.rmtree("results", ignore_errors=True)
        return self.runner.run_next(heading, **kwargs)

    def finish(self) -> None:
        left = [f"{SPEC.name}:{s.line}" for s in self.runner.remaining]
        assert not left, f"examples of the section not run: {left}"


@pytest.fixture
def section(recordings, tmp_path, monkeypatch):
    """``section(name)``: a :class:`Section` running the spec's examples under ``## name``."""
    for path in recordings.iterdir():
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.chdir(tmp_path)

    def open_section(name: str) -> Section:
        snippets = [s for s in SNIPPETS if s.section == name]
        assert snippets, f"the spec has no section {name!r} with examples"
        calls: list[RecordedCall] = []
        namespace = {
            "__name__": "spec_parallelization",
            "compensate_recording": recorder(calls),
            "OFOptions": OFOptions,
            "RegistrationConfig": RegistrationConfig,
            "options": OFOptions(input_file=RECORDING, buffer_size=6),
        }
        return Section(PageRunner(snippets, namespace, SPEC.name), calls)

    return open_section


SECTIONS = (
    "Parallelization Backends",
    "Choosing a Backend",
    "Backend Compatibility",
    "Configuration",
    "Default Behavior",
    "Performance Tips",
    "Examples",
    "Backend Registration",
    "Troubleshooting",
)


def test_every_example_of_the_spec_belongs_to_a_tested_section():
    assert len(SNIPPETS) == SPEC.read_text(encoding="utf-8").count("```python")
    assert {s.section for s in SNIPPETS} == set(SECTIONS)


def test_parallelization_backends(section):
    page = section("Parallelization Backends")

    ns = page.run("Sequential").namespace
    assert ns["config"] == RegistrationConfig(parallelization="sequential")
    run = read_run()
    assert (run["executor"], run["n_workers"]) == ("sequential", 1)  # ignores n_jobs=-1
    sequential = read_video("results/compensated.HDF5")
    assert sequential.shape == (N_FRAMES, 24, 32, 1)

    ns = page.run("Threading").namespace
    assert (ns["config"].parallelization, ns["config"].n_jobs) == ("threading", 8)
    ns["compensate_recording"](ns["options"], config=ns["config"])
    run = read_run()
    assert (run["executor"], run["n_workers"]) == ("threading", 8)
    np.testing.assert_array_equal(read_video("results/compensated.HDF5"), sequential)

    ns = page.run("Multiprocessing").namespace
    assert (ns["config"].parallelization, ns["config"].n_jobs) == ("multiprocessing", -1)
    page.finish()


def test_choosing_a_backend(section):
    page = section("Choosing a Backend")
    runtime = get_runtime()
    assert runtime.list_parallelization_executors()[:3] == list(AUTO_ORDER)

    page.run("Choosing a Backend")
    (auto,) = page.calls
    assert auto.config is None
    assert auto.result.executor == "multiprocessing"  # available here, hence chosen
    assert auto.run["n_workers"] == all_cores()

    ns = page.run("Choosing a Backend").namespace
    assert ns["config"].parallelization == "threading"
    ns["compensate_recording"](ns["options"], config=ns["config"])
    forced = page.calls[-1]
    assert forced.result.executor == "threading"
    np.testing.assert_array_equal(forced.compensated, auto.compensated)
    page.finish()


class _Switch:
    """Availability check that can be turned off: ``() -> (on, reason)``."""

    def __init__(self) -> None:
        self.on = True

    def __call__(self) -> tuple[bool, str]:
        return self.on, "switched off by the test"


def test_auto_selection_order_is_multiprocessing_threading_sequential():
    assert AUTO_ORDER == ("multiprocessing", "threading", "sequential")
    runtime = Runtime()
    switches = {name: _Switch() for name in AUTO_ORDER}
    classes = {
        "sequential": "SequentialExecutor",
        "threading": "ThreadingExecutor",
        "multiprocessing": "MultiprocessingExecutor",
    }
    for name, cls in classes.items():  # registered in reverse order: the order is fixed
        runtime.register_executor(name, f"pyflowreg.executors:{cls}", available=switches[name])
    runtime.register_flow_backend(
        "flowreg", "pyflowreg.backends.cpu:FlowregBackend", supported_executors=None
    )
    runtime.register_flow_backend(
        "gpu", "pyflowreg.backends.cpu:FlowregBackend", supported_executors=["sequential"]
    )
    assert runtime.select_executor(None, "flowreg") == "multiprocessing"
    switches["multiprocessing"].on = False
    assert runtime.select_executor(None, "flowreg") == "threading"
    switches["threading"].on = False
    assert runtime.select_executor(None, "flowreg") == "sequential"
    switches["multiprocessing"].on = switches["threading"].on = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto-selection for a GPU backend never warns
        assert runtime.select_executor(None, "gpu") == "sequential"
    assert get_runtime().select_executor(None, "flowreg") == "multiprocessing"


@pytest.mark.parametrize("backend", ["flowreg_cuda", "flowreg_torch"])
@pytest.mark.parametrize("requested", ["multiprocessing", "threading"])
def test_gpu_backends_fall_back_to_sequential_with_the_spec_warning(backend, requested):
    expected = FALLBACK_WARNING.replace("flowreg_cuda", backend).replace(
        "'multiprocessing' executor", f"'{requested}' executor"
    )
    with pytest.warns(UserWarning) as caught:
        assert get_runtime().select_executor(requested, backend) == "sequential"
    assert [str(w.message) for w in caught] == [expected]


def test_backend_compatibility(section):
    page = section("Backend Compatibility")
    runtime = get_runtime()

    ns = page.run("CPU Backend (`flowreg`)").namespace
    assert ns["options"].flow_backend == "flowreg"
    assert ns["config"].parallelization == "multiprocessing"  # the last of the three
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "all of these work": no fallback
        for name in AUTO_ORDER:
            assert runtime.select_executor(name, "flowreg") == name

    gpu = "GPU Backends (`flowreg_torch`, `flowreg_cuda`)"
    ns = page.run(gpu).namespace
    torch_options, torch_config = ns["options"], ns["config"]
    assert torch_options.flow_backend == "flowreg_torch"
    assert torch_options.backend_params == {"device": "cuda"}
    assert torch_config.parallelization == "sequential"

    # The fallback example: the spec's comment is the warning, word for word.
    comment = comment_text(page.runner.remaining[0].code, "Warning:")
    assert comment == f"Warning: {FALLBACK_WARNING}"
    cuda = next(row for row in runtime.flow_backend_info() if row.name == "flowreg_cuda")
    # Without a CUDA device flowreg_cuda is unavailable: the run warns and falls back to
    # sequential first, then stops with an ImportError that gives the reason and the fix. With
    # a device it would run, but the example's options name no input file, which is the error
    # then (the run with an input file is checked below).
    run = page.run(gpu, expect=ValueError if cuda.available else ImportError)
    assert run.namespace["config"].parallelization == "multiprocessing"
    assert run.warning_messages(UserWarning)[0] == FALLBACK_WARNING
    if cuda.available:
        assert "input_file" in str(run.error)
    else:
        message = str(run.error)
        assert "flowreg_cuda" in message and "not available" in message
        assert cuda.reason in message and 'pip install "pyflowreg[cuda]"' in message
    page.finish()

    cuda_options = run.namespace["options"]
    cuda_options.input_file = RECORDING
    with pytest.warns(UserWarning) as caught:
        if cuda.available:
            result = compensate_recording(cuda_options, config=run.namespace["config"])
            assert result.executor == "sequential"
            assert read_run()["executor"] == "sequential"
        else:
            with pytest.raises(ImportError, match=r"flowreg_cuda.*pyflowreg\[cuda\]"):
                compensate_recording(cuda_options, config=run.namespace["config"])
    assert str(caught[0].message) == FALLBACK_WARNING

    # The torch example, run on the small recording: without CUDA it warns and uses the CPU.
    torch = pytest.importorskip("torch", reason="flowreg_torch needs torch")
    torch_options.input_file = RECORDING
    shutil.rmtree("results", ignore_errors=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compensate_recording(torch_options, config=torch_config)
    cpu_warning = "CUDA is not available; flowreg_torch runs on the CPU instead of 'cuda'"
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert (cpu_warning in messages) is not torch.cuda.is_available()
    assert result.executor == "sequential"
    assert read_run()["flow_backend"] == "flowreg_torch"
    assert read_video(result.files["compensated"]).shape == (N_FRAMES, 24, 32, 1)


def _executor_workers(cls, n_jobs: int) -> int:
    with cls(n_jobs, FlowregBackend, FlowParameters(), {}, WarpSettings()) as executor:
        return executor.n_workers


def test_configuration(section):
    page = section("Configuration")

    # The documented dataclass, defined on its own, has our fields and defaults.
    documented = {"dataclass": dataclasses.dataclass, "Optional": Optional}
    page.run("RegistrationConfig Parameters", namespace=documented)
    spec_fields = {f.name: f.default for f in dataclasses.fields(documented["RegistrationConfig"])}
    assert spec_fields == {"n_jobs": -1, "verbose": False, "parallelization": None}
    ours = {f.name: f.default for f in dataclasses.fields(RegistrationConfig)}
    assert {name: ours.get(name, "missing") for name in spec_fields} == spec_fields
    default = RegistrationConfig()
    assert (default.n_jobs, default.verbose, default.parallelization) == (-1, False, None)

    ns = page.run("Number of Workers").namespace
    assert ns["config"].n_jobs == 4  # the second assignment
    # n_jobs=-1 is every core; N is N workers; sequential ignores n_jobs (always 1).
    assert _executor_workers(ThreadingExecutor, -1) == all_cores()
    assert _executor_workers(MultiprocessingExecutor, -1) == all_cores()
    assert _executor_workers(ThreadingExecutor, 4) == 4
    assert _executor_workers(SequentialExecutor, -1) == 1
    assert _executor_workers(SequentialExecutor, 4) == 1

    ns = page.run("Buffer Size").namespace
    assert ns["options"].buffer_size == 400
    assert OFOptions().buffer_size == 400  # the default

    ns = page.run("Complete Configuration").namespace
    assert str(ns["options"].input_file) == "large_video.h5"
    run = read_run()
    assert (run["executor"], run["n_workers"], run["frames"]) == (
        "multiprocessing",
        all_cores(),
        N_FRAMES,
    )
    saved = json.loads(Path("results/options.json").read_text())
    assert (saved["quality_setting"], saved["buffer_size"]) == ("balanced", 400)
    page.finish()


def test_default_behavior(section):
    page = section("Default Behavior")
    page.run("Default Behavior")
    implicit, explicit = page.calls
    assert implicit.config is None and explicit.config == RegistrationConfig()
    assert implicit.result.executor == explicit.result.executor == "multiprocessing"
    assert implicit.run["n_workers"] == explicit.run["n_workers"] == all_cores()
    np.testing.assert_array_equal(implicit.compensated, explicit.compensated)
    np.testing.assert_array_equal(implicit.result.reference, explicit.result.reference)
    page.finish()


def test_performance_tips(section, monkeypatch):
    page = section("Performance Tips")

    ns = page.run("Memory Management").namespace
    assert (ns["config"].parallelization, ns["config"].n_jobs) == ("threading", 4)
    assert ns["options"].buffer_size == 50
    ns = page.run("Memory Management").namespace
    assert (ns["config"].parallelization, ns["config"].n_jobs) == ("multiprocessing", -1)
    assert ns["options"].buffer_size == 500

    # "Leave 2 cores free": on a machine with 2 cores or fewer that leaves no worker, which
    # RegistrationConfig refuses with a message naming n_jobs.
    cores = os.cpu_count()
    snippet = page.runner.remaining[0]
    if cores > 2:
        ns = page.run("CPU Utilization").namespace
        assert ns["config"].n_jobs == cores - 2
    else:
        run = page.run("CPU Utilization", expect=ValueError)
        assert str(run.error) == f"n_jobs must be -1 or >= 1, got {cores - 2}"
    with monkeypatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: 8)
        scope = {"RegistrationConfig": RegistrationConfig}
        exec(compile(snippet.code, f"{SPEC.name}:{snippet.line}", "exec"), scope)
    assert scope["config"].n_jobs == 6

    ns = page.run("I/O Optimization").namespace
    assert ns["config"].parallelization == "multiprocessing"
    assert ns["options"].buffer_size == 500
    ns = page.run("I/O Optimization").namespace
    assert ns["config"].parallelization == "threading"
    assert ns["options"].buffer_size == 100
    page.finish()


def test_examples(section):
    page = section("Examples")
    expected = {
        "Fast Preview Processing": ("video.h5", "fast", 50, "sequential", 1),
        "Production Processing": ("large_dataset.h5", "balanced", 500, "multiprocessing", None),
        "Memory-Constrained System": ("video.h5", "balanced", 100, "threading", 4),
    }
    for heading, (file, quality, buffer_size, executor, workers) in expected.items():
        ns = page.run(heading).namespace
        assert str(ns["options"].input_file) == file
        run = read_run()
        assert (run["executor"], run["frames"]) == (executor, N_FRAMES)
        assert run["n_workers"] == (workers or all_cores())
        saved = json.loads(Path("results/options.json").read_text())
        assert (saved["quality_setting"], saved["buffer_size"]) == (quality, buffer_size)
        assert read_video("results/compensated.HDF5").shape == (N_FRAMES, 24, 32, 1)
    page.finish()


def test_backend_registration(section, capsys):
    page = section("Backend Registration")
    ns = page.run("Backend Registration").namespace
    available = ns["available"]
    assert {"sequential", "threading", "multiprocessing"} <= set(available)
    assert available[:3] == list(AUTO_ORDER)
    assert capsys.readouterr().out == f"Available backends: {available}\n"
    page.finish()


def test_troubleshooting(section):
    page = section("Troubleshooting")
    ns = page.run("High Memory Usage").namespace
    assert (ns["config"].parallelization, ns["config"].n_jobs) == ("sequential", 1)
    assert ns["options"].buffer_size == 50
    ns = page.run("Slow Processing").namespace
    assert (ns["config"].parallelization, ns["config"].n_jobs) == ("multiprocessing", -1)
    assert (ns["options"].quality_setting, ns["options"].buffer_size) == ("fast", 500)
    ns = page.run("Process Hangs or Crashes").namespace
    assert ns["config"] == RegistrationConfig(parallelization="sequential")
    page.finish()
