"""Stages 1 and 2 of a session through another interpreter's ``pyflowreg.session`` (its
documented API only), for ``benchmarks/session_accuracy.py``.

    python _session_peer_worker.py ROOT OUT.npz SETTINGS_JSON [MEANS.npy]

Runs ``run_stage1`` (quality ``fast``) and ``run_stage2`` on the ``*.tif`` recordings in ROOT
with the given stage-2 settings and saves the fields, the centre index and the seconds. With
MEANS.npy (S, H, W), every recording's ``temporal_average.npy`` (the stage-1 output stage 2
reloads) is replaced by the given mean between the stages, so stage 2 alone is compared.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from pyflowreg.session.config import SessionConfig
from pyflowreg.session.stage1_compensate import run_stage1
from pyflowreg.session.stage2_between_avgs import run_stage2


def main() -> None:
    root, out, settings = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    means = np.load(sys.argv[4]) if len(sys.argv) > 4 else None
    config = SessionConfig(
        root=str(root),
        pattern="*.tif",
        output_root="peer_outputs",
        final_results="peer_final",
        resume=False,
        **settings,
    )
    tic = time.perf_counter()
    folders = run_stage1(config, of_options_override={"quality_setting": "fast", "save_w": False})
    stage1 = time.perf_counter() - tic
    if means is not None:
        for folder, mean in zip(sorted(Path(f) for f in folders), means, strict=True):
            np.save(folder / "temporal_average.npy", mean)
    tic = time.perf_counter()
    middle_idx, _, fields = run_stage2(config)
    stage2 = time.perf_counter() - tic
    np.savez(
        out,
        fields=np.stack([np.asarray(w, np.float32) for w in fields]),
        middle_idx=middle_idx,
        seconds=np.array([stage1, stage2]),
    )


if __name__ == "__main__":
    main()
