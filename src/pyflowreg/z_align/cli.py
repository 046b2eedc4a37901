"""``pyflowreg-z-align``: run the z-align pipeline from a config file.

    pyflowreg-z-align run --config z_align.toml                  # all stages
    pyflowreg-z-align run --config z_align.toml --stage 2        # one stage
    pyflowreg-z-align run -c z_align.toml --of-params alpha=8 quality_setting=balanced

``--of-params KEY=VALUE ...`` override stage-1 ``OFOptions`` (values parsed as true/false,
integers, floats or JSON lists/objects where possible, else kept as strings); they are
ignored, with a warning, when ``--stage`` is 2 or 3. Exit status 0 on success, 1 when the
run fails (the message names the cause), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

__all__ = ["main", "parse_of_params"]


def _value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def parse_of_params(items: Sequence[str]) -> dict[str, Any]:
    """``["alpha=8", "quality_setting=balanced"]`` -> ``{"alpha": 8, "quality_setting":
    "balanced"}``; ``ValueError`` naming an item without ``=`` or without a key."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--of-params takes KEY=VALUE items, got {item!r}")
        params[key.strip()] = _value(text)
    return params


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyflowreg-z-align",
        description="Estimate and correct depth (z) shifts of a recording against a reference "
        "volume.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the z-align stages of a config file")
    run.add_argument(
        "--config", "-c", required=True, help="z-align config file (.toml, .yaml or .yml)"
    )
    run.add_argument(
        "--stage", "-s", type=int, choices=(1, 2, 3), help="run only this stage (default: all)"
    )
    run.add_argument(
        "--of-params",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override stage-1 OFOptions (e.g. alpha=8 quality_setting=balanced)",
    )
    run.add_argument("--verbose", "-v", action="store_true", help="log progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pyflowreg-z-align``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    from pyflowreg.z_align import pipeline
    from pyflowreg.z_align.config import ZAlignConfig

    try:
        of_params = parse_of_params(args.of_params)
        config = ZAlignConfig.from_file(args.config)
        if args.stage is None:
            outputs = pipeline.run_all_stages(config, of_params)
        else:
            if of_params and args.stage != 1:
                print(
                    f"pyflowreg-z-align: warning: --of-params only override stage-1 OFOptions; "
                    f"ignored with --stage {args.stage}",
                    file=sys.stderr,
                )
            if args.stage == 1:
                path = pipeline.run_stage1(config, of_params)
            elif args.stage == 2:
                path = pipeline.run_stage2(config)
            else:
                path = pipeline.run_stage3(config)
            outputs = {f"stage {args.stage}": path}
    except (ValueError, TypeError, OSError, ValidationError) as exc:
        print(f"pyflowreg-z-align: error: {exc}", file=sys.stderr)
        return 1
    for name, path in outputs.items():
        if path is not None:
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
