"""Stage 1 of a session in a child process, for ``tests/test_session_stage1.py``.

``python _session_child.py CONFIG SETTINGS_JSON`` runs ``run_stage1`` on the session config file
CONFIG, logging at INFO level to stderr (``stage 1: <name> done in ...`` per recording it
processed). SETTINGS:

``pause_after``
    Print ``paused`` and sleep when this many batches of the first recording went through the
    streamed mean (the parent kills the process there).
``batch_delay``
    Seconds to sleep after every batch (so that two runs overlap).
``announce``
    Print ``started`` after the first batch.
``cli``
    Run ``pyflowreg session run --config CONFIG --stage 1 -q`` instead of ``run_stage1``.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def main() -> int:
    config_file, settings = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    from pyflowreg.session import SessionConfig
    from pyflowreg.session import stage1_compensate as stage1

    add = stage1._TemporalAverage.add
    seen = {"batches": 0}

    def add_then_wait(self, batch):
        add(self, batch)
        seen["batches"] += 1
        if seen["batches"] == 1 and settings.get("announce"):
            print("started", flush=True)
        if seen["batches"] == settings.get("pause_after"):
            print("paused", flush=True)
            time.sleep(120)  # the parent kills us here
        time.sleep(settings.get("batch_delay", 0.0))

    stage1._TemporalAverage.add = add_then_wait
    if settings.get("cli"):
        from pyflowreg.cli import main as cli_main

        return cli_main(["session", "run", "--config", config_file, "--stage", "1", "-q"])
    stage1.run_stage1(SessionConfig.from_file(config_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
