"""A registration run in a child process, for the fault tests (``tests/test_faults.py``).

``python _fault_child.py INPUT FOLDER SETTINGS_JSON`` registers INPUT into FOLDER. SETTINGS:

``pause``
    ``"reference"``, ``"batch"`` or ``"commit"``: print that word and sleep when the run gets
    there (computing the reference; after batch 2 was written; after the first output was
    renamed into place during the commit), so that the parent can kill the process there.
``hold``
    A path: after batch 0, print ``holding`` and wait until that file exists (keeps the run,
    and the folder's lock, alive while the parent starts another run).
``fail``
    ``"ENOSPC"`` or ``"EIO"``: the video writers fail with that error from their second write.
``options``
    Extra OFOptions fields (``save_w``, ``output_format``, ``resume``, ...).

Prints ``run <run_id>`` and exits 0 on success; exits 3 printing the message when the folder is
in use by another run; any other error propagates (exit status 1).
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
import time


def pause(word: str) -> None:
    print(word, flush=True)
    time.sleep(120)  # the parent kills us here


def main() -> int:
    source, folder, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from pyflowreg.motion_correction import OFOptions, RegistrationConfig, compensate_recording

    engine = importlib.import_module("pyflowreg.motion_correction._engine")
    run_folder = importlib.import_module("pyflowreg.motion_correction._run_folder")
    point = settings.get("pause")
    if point == "reference":
        engine.compute_reference = lambda *args, **kwargs: pause("reference")
    if point == "commit":
        replace = os.replace

        def replace_then_pause(src, dst):
            replace(src, dst)
            staged = run_folder.STAGING_PREFIX
            if staged in str(src) and staged not in str(dst):  # published, not a checkpoint
                pause("commit")

        run_folder.os.replace = replace_then_pause
    if settings.get("fail"):
        from pyflowreg.io.base import VideoWriter

        code = getattr(errno, settings["fail"])
        write = VideoWriter.write

        def failing_write(self, frames):
            if self.frames_written > 0:
                raise OSError(code, os.strerror(code), str(self.path))
            write(self, frames)

        VideoWriter.write = failing_write

    def on_batch(batch) -> None:
        if point == "batch" and batch.batch == 2:
            pause("batch")
        if settings.get("hold") and batch.batch == 0:
            print("holding", flush=True)
            while not os.path.exists(settings["hold"]):
                time.sleep(0.05)

    options = OFOptions(
        input_file=source,
        output_path=folder,
        quality_setting="fast",
        buffer_size=4,
        **settings.get("options", {}),
    )
    try:
        result = compensate_recording(
            options,
            config=RegistrationConfig(parallelization="sequential"),
            batch_callback=on_batch,
        )
    except run_folder.OutputFolderInUseError as exc:
        print(exc, flush=True)
        return 3
    print("run", json.loads(result.files["run"].read_text())["run_id"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
