"""Accuracy of stage 2 (inter-session fields) on synthetic sessions, optionally side by side
with a peer package.

Sessions come from ``pyflowreg.datasets.make_sessions``: one scene seen through a known rigid +
smooth non-rigid offset per session (up to 6 + 2.5 px), with per-session activity (cells
brighter or dimmer, own transients, overall brightness), noise (SNR 5) and, in the ``pipeline``
mode, within-session motion. The endpoint error (EPE) of every non-centre session's field
against the ground truth is measured over the pixels that all sessions observe
(``final_valid``). Rows:

``true means``
    Stage 2 alone on the means of a perfect stage 1 (each session's frames warped back by their
    ground-truth motion): ours (``align_means``, the method of ``run_stage2``), the plain
    method of PyFlowReg's documentation run with this package's engine (``robust=False``) and
    the peer's ``run_stage2`` (its ``temporal_average.npy`` files, which its stage 2 reloads,
    replaced by these means after its stage 1; its fields then differ from its own pipeline's,
    which shows they are used).
``run_stage1+2``
    Each package's ``run_stage1`` (quality ``fast``) then ``run_stage2`` on the session files.
    In the ``static`` mode the sessions have no within-session motion, so stage 1 has nothing
    to correct and the rows compare the stage-2 methods; in ``pipeline`` both stages count.

    python benchmarks/session_accuracy.py                                    # this project
    python benchmarks/session_accuracy.py --peer PEER_PYTHON        # side by side
    python benchmarks/session_accuracy.py --peer ... --mode both --size 256

The peer runs in its own interpreter (``_session_peer_worker.py``) through its documented API
only, with the documented stage-2 defaults (``cc_upsample=4, sigma_smooth=6, alpha_between=25,
iterations_between=100``), which are also ours.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pyflowreg.core import warp
from pyflowreg.datasets import make_sessions
from pyflowreg.session import SessionConfig, run_stage1, run_stage2
from pyflowreg.session.between import align_means

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_session_peer_worker.py"
STAGE2 = {"cc_upsample": 4, "sigma_smooth": 6.0, "alpha_between": 25.0, "iterations_between": 100}


def registered_means(sessions) -> np.ndarray:
    """Each session's frames warped back by their ground-truth motion, averaged (S, H, W)."""
    return np.stack(
        [
            warp(video[..., 0], flow).mean(axis=0, dtype=np.float64)
            for video, flow in zip(sessions.videos, sessions.flows, strict=True)
        ]
    )


def epe(fields: np.ndarray, sessions) -> np.ndarray:
    """Mean and 95th-percentile EPE of every non-centre session, shape (S - 1, 2)."""
    rows = []
    for i, w in enumerate(fields):
        if i == sessions.center:
            continue
        err = np.hypot(*(w - sessions.fields[i]).transpose(2, 0, 1))[sessions.final_valid]
        rows.append((err.mean(), np.percentile(err, 95)))
    return np.array(rows)


def run_peer(python: str, root: Path, means: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "out.npz")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        extra = []
        if means is not None:
            extra = [str(Path(tmp, "means.npy"))]
            np.save(extra[0], means)
        done = subprocess.run(
            [python, str(WORKER), str(root), str(out), json.dumps(STAGE2), *extra],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        if done.returncode != 0:
            raise RuntimeError(f"peer worker failed:\n{done.stderr[-3000:]}")
        with np.load(out) as data:
            return data["fields"], float(data["seconds"][1])


def run_ours_pipeline(root: Path) -> tuple[np.ndarray, float]:
    config = SessionConfig(
        root=root,
        pattern="*.tif",
        output_root="our_outputs",
        final_results="our_final",
        resume=False,
        stage1_quality_setting="fast",
        **STAGE2,
    )
    run_stage1(config)
    tic = time.perf_counter()
    _, _, fields = run_stage2(config)
    return np.stack(fields), time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--mode", choices=["static", "pipeline", "both"], default="static")
    parser.add_argument("--peer", help="python interpreter of a peer package (own venv)")
    args = parser.parse_args()
    modes = ["static", "pipeline"] if args.mode == "both" else [args.mode]

    results: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}

    def add(name: str, fields: np.ndarray, sessions, took: float) -> None:
        results.setdefault(name, []).append(epe(fields, sessions))
        seconds[name] = seconds.get(name, 0.0) + took

    for mode in modes:
        within = {"max_rigid": 0.0, "max_nonrigid": 0.0} if mode == "static" else {}
        for seed in range(args.seeds):
            sessions = make_sessions(
                args.sessions,
                args.frames,
                (args.size, args.size),
                seed=seed,
                dtype=np.uint16,
                **within,
            )
            means = registered_means(sessions)
            c = sessions.center
            for name, robust in (("ours", True), ("plain documented method", False)):
                tic = time.perf_counter()
                fields = np.stack(
                    [
                        np.zeros((*means.shape[1:], 2), np.float32)
                        if i == c
                        else align_means(
                            means[c],
                            means[i],
                            sigma_smooth=STAGE2["sigma_smooth"],
                            cc_upsample=STAGE2["cc_upsample"],
                            alpha=STAGE2["alpha_between"],
                            iterations=STAGE2["iterations_between"],
                            robust=robust,
                        )
                        for i in range(len(means))
                    ]
                )
                add(f"{mode}: {name}, true means", fields, sessions, time.perf_counter() - tic)
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp, "sessions")
                sessions.save(root)
                fields, took = run_ours_pipeline(root)
                add(f"{mode}: ours run_stage1+2", fields, sessions, took)
                if args.peer:  # its own pipeline first: the next run replaces its means
                    fields, took = run_peer(args.peer, root)
                    add(f"{mode}: peer run_stage1+2", fields, sessions, took)
                    fields, took = run_peer(args.peer, root, means)
                    add(f"{mode}: peer run_stage2, true means", fields, sessions, took)
            print(f"{mode} seed {seed} done", file=sys.stderr, flush=True)

    n_pairs = args.seeds * (args.sessions - 1)
    print(
        f"\nstage-2 EPE (px) vs ground truth: {args.seeds} seeds x {args.sessions - 1} non-centre "
        f"sessions, {args.frames} frames of {args.size} x {args.size} px, settings {STAGE2}"
    )
    print(f"{'method':44s} {'mean EPE':>9s} {'p95 EPE':>8s} {'worst mean':>11s} {'s/pair':>7s}")
    for name, rows in results.items():
        table = np.concatenate(rows)
        print(
            f"{name:44s} {table[:, 0].mean():9.3f} {table[:, 1].mean():8.3f} "
            f"{table[:, 0].max():11.3f} {seconds[name] / n_pairs:7.2f}"
        )


if __name__ == "__main__":
    main()
