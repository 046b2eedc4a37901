"""One side of ``benchmarks/accuracy.py``: runs in whichever interpreter is given, imports *its*
``pyflowreg`` (this project's, or a peer's installed in a venv of its own) and answers one task.

    python _accuracy_worker.py TASK IN.npz OUT.npz

Tasks (inputs and outputs are arrays in .npz files, parameters in ``IN["params"]`` as JSON):

- ``flow``: ``get_displacement`` of every ``frames[t]`` against ``reference`` for each
  ``min_level``; writes ``fields`` (L, T, H, W, 2) and ``seconds`` (L,) per frame.
- ``speed``: frames/s of ``get_displacement`` per preset after a full-size warm-up, best of
  ``repeats``; writes ``fps`` (P,).
- ``compensate``: ``compensate_arr(video, reference, OFOptions(quality_setting=preset, ...))`` per
  preset; writes ``registered`` (P, T, H, W) and ``w`` (P, T, H, W, 2).

Only documented, public entry points are called, so the same file serves both packages.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _get_displacement():
    try:  # the published PyFlowReg keeps it here
        from pyflowreg.core.optical_flow import get_displacement
    except ImportError:
        from pyflowreg.core import get_displacement
    return get_displacement


def _alpha(value):
    return value if isinstance(value, str) else (float(value), float(value))


def flow(inputs, params):
    get_displacement = _get_displacement()
    ref, frames = inputs["reference"], inputs["frames"]
    levels = params["min_levels"]
    fields = np.empty((len(levels), *frames.shape[:3], 2), np.float32)
    seconds = np.empty(len(levels))
    kwargs = {"alpha": _alpha(params.get("alpha", 1.5)), "levels": 100}
    get_displacement(ref, frames[0], min_level=max(levels), **kwargs)  # compile
    for i, level in enumerate(levels):
        t0 = time.perf_counter()
        for t in range(len(frames)):
            fields[i, t] = get_displacement(ref, frames[t], min_level=level, **kwargs)
        seconds[i] = (time.perf_counter() - t0) / len(frames)
    return {"fields": fields, "seconds": seconds}


def speed(inputs, params):
    get_displacement = _get_displacement()
    ref, frames = inputs["reference"], inputs["frames"]
    levels = params["min_levels"]
    fps = np.empty(len(levels))
    for i, level in enumerate(levels):
        get_displacement(ref, frames[0], min_level=level, levels=100)  # full-size warm-up
        best = np.inf
        for _ in range(params.get("repeats", 2)):
            t0 = time.perf_counter()
            for t in range(len(frames)):
                get_displacement(ref, frames[t], min_level=level, levels=100)
            best = min(best, (time.perf_counter() - t0) / len(frames))
        fps[i] = 1.0 / best
    return {"fps": fps}


def compensate(inputs, params):
    from pyflowreg.motion_correction import OFOptions, compensate_arr

    video, reference = inputs["video"], inputs["reference"]
    registered, fields = [], []
    for preset in params["presets"]:
        options = OFOptions(quality_setting=preset, **params.get("options", {}))
        reg, w = compensate_arr(video, reference, options)
        registered.append(np.asarray(reg).reshape(video.shape))
        fields.append(np.asarray(w, dtype=np.float32).reshape(*video.shape[:3], 2))
    return {"registered": np.stack(registered), "w": np.stack(fields)}


TASKS = {"flow": flow, "speed": speed, "compensate": compensate}


def main(argv: list[str]) -> None:
    task, src, dst = argv
    with np.load(src) as data:
        inputs = {k: data[k] for k in data.files}
    params = json.loads(str(inputs.pop("params")))
    np.savez(dst, **TASKS[task](inputs, params))


if __name__ == "__main__":
    main(sys.argv[1:])
