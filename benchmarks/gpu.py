"""Throughput and accuracy of the batched flow backends (torch on CPU/CUDA, numba CUDA).

Prints frames/s per quality preset and device batch size at ``--size`` x ``--size`` pixels, one
channel, for every available backend/device, next to the per-frame Numba CPU backend
(``flowreg``), and the accuracy of each on a few synthetic pairs: mean endpoint error against
the ground truth and mean endpoint difference to the CPU backend.

Usage::

    python benchmarks/gpu.py                          # everything available here
    python benchmarks/gpu.py --backend torch --device cpu --batch-sizes 1 4
    python benchmarks/gpu.py --backend cuda --presets fast

Timing: each configuration is warmed up with one batch, then ``estimate`` (host frames in,
host fields out, so transfers are included and the device is synchronised) is timed over
enough batches to last about ``--seconds``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from pyflowreg._runtime import get_runtime
from pyflowreg.core import FlowParameters
from pyflowreg.datasets import make_pair
from pyflowreg.metrics import endpoint_error

#: ``--backend`` choices: registry name of each batched flow backend.
BACKENDS = {"torch": "flowreg_torch", "cuda": "flowreg_cuda"}
PRESETS = ("quality", "balanced", "fast")


def _torch_devices(requested: list[str] | None) -> list[str]:
    import torch

    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    return [d for d in devices if requested is None or d in requested]


def targets(
    backends: list[str], devices: list[str] | None, graphs: bool = False
) -> list[tuple[str, str, dict]]:
    """``(label, registry name, backend_params)`` of every backend/device to benchmark here.

    ``graphs`` adds torch on CUDA with ``cuda_graphs=True`` as a further target.
    """
    runtime = get_runtime()
    out = []
    for key in backends:
        name = BACKENDS[key]
        try:
            runtime.get_flow_backend(name)
        except ImportError as err:
            print(f"# skipping {name}: {err}")
            continue
        if key == "torch":
            for d in _torch_devices(devices):
                out.append((f"torch-{d}", name, {"device": d}))
                if graphs and d == "cuda":
                    out.append(("torch-cuda+gr", name, {"device": d, "cuda_graphs": True}))
        elif devices is None or "cuda" in devices:
            out.append(("numba-cuda", name, {}))
    return out


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
        return f"{platform.processor() or platform.machine()} CPU (torch {torch.__version__})"
    except ImportError:
        return f"{platform.processor() or platform.machine()} CPU"


def frames_per_second(backend, prepared, mov: np.ndarray, batch: int, seconds: float) -> float:
    """Frames/s of ``backend.estimate`` on batches of ``batch`` copies of ``mov`` (H, W, C)."""
    frames = np.ascontiguousarray(np.broadcast_to(mov, (batch, *mov.shape)))
    backend.estimate(prepared, frames)  # warm-up: kernels, caches, allocator
    start = time.perf_counter()
    backend.estimate(prepared, frames)
    once = time.perf_counter() - start
    reps = max(1, min(20, math.ceil(seconds / max(once, 1e-9)) - 1))
    start = time.perf_counter()
    for _ in range(reps):
        backend.estimate(prepared, frames)
    return (reps + 1) * batch / (time.perf_counter() - start + once)


def cpu_baseline(params: FlowParameters, ref, mov, seconds: float) -> float:
    """Frames/s of the per-frame Numba CPU backend (one frame at a time, one thread)."""
    backend = get_runtime().get_flow_backend("flowreg").load()(params, {})
    prepared = backend.prepare_reference(ref)
    return frames_per_second(backend, prepared, mov, 1, seconds)


def accuracy(factory, params, backend_params, pairs, cpu_fields) -> tuple[float, float]:
    """Mean EPE vs the truth and mean endpoint difference vs the CPU backend over ``pairs``."""
    backend = factory(params, backend_params)
    epe, diff = [], []
    for (ref, mov, w_true), w_cpu in zip(pairs, cpu_fields, strict=True):
        w = backend.estimate(backend.prepare_reference(ref), mov[None])[0]
        epe.append(endpoint_error(w, w_true).mean)
        diff.append(float(np.linalg.norm(w - w_cpu, axis=-1).mean()))
    return float(np.mean(epe)), float(np.mean(diff))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", choices=sorted(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--device", nargs="+", choices=["cpu", "cuda"], default=None,
                        help="devices for the torch backend (default: all available)")  # fmt: skip
    parser.add_argument("--size", type=int, default=512, help="frame side in pixels")
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16, 64, 256])
    parser.add_argument("--cpu-batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--check-frames", type=int, default=3, help="pairs for accuracy")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per configuration")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also time torch on CUDA with cuda_graphs=True")  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true", help="skip the Numba CPU timing")
    args = parser.parse_args(argv)

    shape = (args.size, args.size)
    runtime = get_runtime()
    chosen = targets(args.backend, args.device, args.cuda_graphs)
    print(f"device: {device_name()}; frames {shape[0]}x{shape[1]}, 1 channel")
    pairs = [make_pair(shape, seed=s) for s in range(max(1, args.check_frames))]
    ref, mov, _ = pairs[0]

    print(f"\n{'backend':<12} {'preset':<9} {'batch':>5} {'frames/s':>10}")
    for preset in args.presets:
        params = FlowParameters.from_quality(preset)
        if not args.no_baseline:
            fps = cpu_baseline(params, ref, mov, args.seconds)
            print(f"{'numba-cpu':<12} {preset:<9} {1:>5} {fps:>10.2f}", flush=True)
        for label, name, bp in chosen:
            factory = runtime.get_flow_backend(name).load()
            on_cpu = bp.get("device") == "cpu"
            for batch in args.cpu_batch_sizes if on_cpu else args.batch_sizes:
                backend = factory(params, {**bp, "batch_frames": batch})
                prepared = backend.prepare_reference(ref)
                fps = frames_per_second(backend, prepared, mov, batch, args.seconds)
                print(f"{label:<12} {preset:<9} {batch:>5} {fps:>10.2f}", flush=True)
                backend.close()

    if args.check_frames < 1:
        return
    print(f"\naccuracy on {len(pairs)} pairs (EPE: mean endpoint error vs the truth, px)")
    print(f"{'backend':<12} {'preset':<9} {'EPE':>8} {'EPE cpu':>8} {'|w-w_cpu|':>10}")
    cpu = runtime.get_flow_backend("flowreg").load()
    for preset in args.presets:
        params = FlowParameters.from_quality(preset)
        cpu_backend = cpu(params, {})
        cpu_fields = [
            cpu_backend.estimate(cpu_backend.prepare_reference(r), m[None])[0] for r, m, _ in pairs
        ]
        epe_cpu = float(
            np.mean(
                [endpoint_error(w, t).mean for w, (*_, t) in zip(cpu_fields, pairs, strict=True)]
            )
        )
        for label, name, bp in chosen:
            factory = runtime.get_flow_backend(name).load()
            epe, diff = accuracy(factory, params, bp, pairs, cpu_fields)
            print(f"{label:<12} {preset:<9} {epe:>8.4f} {epe_cpu:>8.4f} {diff:>10.5f}", flush=True)


if __name__ == "__main__":
    main()
