"""One end-to-end run as a new user runs it, for ``benchmarks/pipeline.py --e2e``.

    python _e2e_child.py run INPUT OUTPUT PRESET EXECUTOR N_JOBS
    python _e2e_child.py engine INPUT PRESET N_FRAMES

``run``: a fresh interpreter imports ``pyflowreg`` and calls the documented API once,
``compensate_recording(OFOptions(input_file=INPUT, output_path=OUTPUT, output_format="HDF5",
quality_setting=PRESET, save_w=True), config=RegistrationConfig(n_jobs=N_JOBS,
parallelization=EXECUTOR))`` (``EXECUTOR`` ``default``: no executor named), and prints one JSON
line: wall-clock stamps (``time.time()``) when the script started, after the imports and
after the call, and the seconds of the call. Only the documented public API is used, so the
same script runs in a peer interpreter's ``pyflowreg`` (``--peer``) as a black box. With this
project's ``pyflowreg`` the line also holds the phase times of ``run.json``.

``engine`` (this project only): the engine's estimate + warp frames/s on the same frames, one
thread: the frames normalised and pre-filtered as the pipeline does, registered one by one
(``register_frames``, the executors' frame loop) to the pre-filtered mean of the default
reference frames, from zero initial flow, after one untimed frame (kernel loading); the
fastest of three rounds over the frames counts.
"""

import json
import sys
import time

STARTED = time.time()
#: Rounds of the engine measurement; the fastest counts.
ROUNDS = 3


def run(source: str, output: str, preset: str, executor: str, n_jobs: int) -> dict:
    from pyflowreg.motion_correction import OFOptions, compensate_recording
    from pyflowreg.motion_correction.compensate_recording import RegistrationConfig

    imported = time.time()
    options = OFOptions(
        input_file=source,
        output_path=output,
        output_format="HDF5",
        quality_setting=preset,
        save_w=True,
    )
    parallelization = None if executor == "default" else executor
    config = RegistrationConfig(n_jobs=n_jobs, parallelization=parallelization)
    tic = time.perf_counter()
    result = compensate_recording(options, config=config)
    seconds = time.perf_counter() - tic
    row = {
        "started": STARTED,
        "imported": imported,
        "called": time.time(),
        "seconds": seconds,
        "executor": str(getattr(result, "executor", executor)),
    }
    try:  # this project's completion record (a peer may write none)
        from pathlib import Path

        record = json.loads((Path(output) / "run.json").read_text())
        row["record"] = {
            key: record.get(key)
            for key in (
                "seconds",
                "flow_seconds",
                "reference_flow_seconds",
                "phase_seconds",
                "executor",
                "n_workers",
            )
        }
    except (OSError, ValueError):
        pass
    return row


def engine(source: str, preset: str, n_frames: int) -> dict:
    import numpy as np

    from pyflowreg.backends.cpu import FlowregBackend
    from pyflowreg.core import FlowParameters
    from pyflowreg.core.preprocess import prefilter
    from pyflowreg.executors.base import WarpSettings, register_frames
    from pyflowreg.io import open_reader
    from pyflowreg.motion_correction import OFOptions
    from pyflowreg.motion_correction.reference import normalization_range

    options = OFOptions(quality_setting=preset)
    with open_reader(source) as reader:
        total = int(reader.shape[0])
        picks = options.resolved_reference_frames(total)
        ref_raw = np.asarray(reader.read(int(picks[0]), int(picks[-1]) + 1), np.float64)
        ref_raw = ref_raw.mean(axis=0).astype(np.float32)
        n = min(n_frames + 1, total)
        raw = np.asarray(reader.read(0, n))
    sigma = options.sigma_for_channels(raw.shape[-1])
    low, high = normalization_range(ref_raw)
    filtered = prefilter(raw, low, high, sigma)
    spatial = np.array(sigma, dtype=np.float64)
    spatial[:, 2] = 0.0
    reference = prefilter(ref_raw[None], low, high, spatial)[0]
    backend = FlowregBackend(FlowParameters.from_quality(preset), {})
    prepared = backend.prepare_reference(reference)
    uv = np.zeros((*raw.shape[1:3], 2), np.float32)
    settings = WarpSettings("cubic", raw.dtype)
    register_frames(backend, prepared, raw[:1], filtered[:1], uv, settings)  # kernels loaded
    rounds = []
    for _ in range(ROUNDS):
        tic = time.perf_counter()
        for i in range(1, n):
            register_frames(backend, prepared, raw[i : i + 1], filtered[i : i + 1], uv, settings)
        rounds.append(time.perf_counter() - tic)
    seconds = min(rounds)  # the machine is shared: the least disturbed round
    return {"frames": n - 1, "seconds": seconds, "fps": (n - 1) / seconds, "rounds": rounds}


def main() -> None:
    mode = sys.argv[1]
    if mode == "run":
        source, output, preset, executor, n_jobs = sys.argv[2:7]
        row = run(source, output, preset, executor, int(n_jobs))
    elif mode == "engine":
        source, preset, n_frames = sys.argv[2:5]
        row = engine(source, preset, int(n_frames))
    else:
        raise SystemExit(f"unknown mode {mode!r}: run or engine")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
