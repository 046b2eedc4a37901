"""Run the ```python examples of a Markdown page as tests.

Used by ``test_spec_parallelization.py`` (the spec's examples, section by section) and
``test_docs.py`` (our own pages). A page's examples are extracted in page order with the
headings they sit under; :class:`PageRunner` executes them one after the other, each exactly as
written, recording the warnings it emitted (``SnippetRun.caught``) and, on request, the error
it raised.

Input files named by an example (a string literal ending in a video extension, such as
``"video.h5"``) are created as small synthetic recordings in the current directory by
:func:`write_recordings`, so the example text itself never has to change.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: Extensions of the recordings an example may read.
VIDEO_EXTENSIONS = ("h5", "hdf5", "tif", "tiff", "mat", "npy")

_FENCE = re.compile(r"^```(\w*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_FILE_LITERAL = re.compile(
    r"""(["'])([^"'\s/\\]+\.(?:""" + "|".join(VIDEO_EXTENSIONS) + r"""))\1"""
)


class Snippet(NamedTuple):
    """One fenced ```python block.

    Attributes
    ----------
    section : str
        The ``##`` heading it sits under ("" before the first one).
    heading : str
        The nearest heading of level 2 or deeper (the ``###`` one where there is one).
    line : int
        1-based line of the opening fence in the page.
    code : str
        The block's text, without the fences.
    """

    section: str
    heading: str
    line: int
    code: str


def python_snippets(text: str) -> list[Snippet]:
    """Every ```python block of the Markdown ``text``, in page order.

    Headings are tracked outside code blocks only (a ``# comment`` inside a block is not one).
    """
    snippets: list[Snippet] = []
    section = heading = ""
    block: list[str] | None = None
    language = ""
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        fence = _FENCE.match(line.strip())
        if block is not None:
            if fence and not fence.group(1):
                if language == "python":
                    snippets.append(Snippet(section, heading, start, "\n".join(block) + "\n"))
                block = None
            else:
                block.append(line)
            continue
        if fence:
            block, language, start = [], fence.group(1).lower(), number
            continue
        match = _HEADING.match(line)
        if match and len(match.group(1)) >= 2:
            heading = match.group(2)
            if len(match.group(1)) == 2:
                section = heading
    if block is not None:
        raise ValueError(f"unterminated code fence opened on line {start}")
    return snippets


def input_file_names(code: str) -> list[str]:
    """File names of recordings that ``code`` names in string literals (e.g. ``"video.h5"``)."""
    return sorted({m.group(2) for m in _FILE_LITERAL.finditer(code)})


def comment_text(code: str, start: str) -> str:
    """The comment of ``code`` whose text begins with ``start``, continuation lines joined.

    A comment continues on the following lines as long as they are comments too; the lines'
    texts (without ``#`` and surrounding spaces) are joined by single spaces.
    """
    lines = [line.strip() for line in code.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("#") and line.lstrip("# ").startswith(start):
            parts = [line.lstrip("# ")]
            for following in lines[i + 1 :]:
                if not following.startswith("#"):
                    break
                parts.append(following.lstrip("# "))
            return " ".join(parts)
    raise ValueError(f"no comment starting with {start!r} in the snippet")


def write_recordings(
    directory: Path, names: list[str], n_frames: int = 12, shape: tuple[int, int] = (24, 32)
) -> dict[str, Path]:
    """Write a small synthetic recording under each of ``names`` in ``directory``.

    The recordings are ``n_frames`` uint16 frames of ``shape`` pixels from
    :func:`pyflowreg.datasets.make_recording` (seed 0), in the format of each name's extension.
    """
    from pyflowreg.datasets import make_recording
    from pyflowreg.io import open_writer

    video = make_recording(n_frames, shape, seed=0, dtype=np.uint16).video
    paths = {}
    for name in names:
        path = Path(directory) / name
        with open_writer(path) as writer:
            writer.write(video)
        paths[name] = path
    return paths


@dataclass
class SnippetRun:
    """What running one snippet did."""

    snippet: Snippet
    namespace: dict[str, Any]
    caught: list[warnings.WarningMessage] = field(default_factory=list)
    error: BaseException | None = None

    def warning_messages(self, category: type[Warning] = Warning) -> list[str]:
        """Messages of the recorded warnings of ``category`` (or a subclass)."""
        return [str(w.message) for w in self.caught if issubclass(w.category, category)]


class PageRunner:
    """Runs the snippets of a page in order, checking that the caller names each one.

    Parameters
    ----------
    snippets : list of Snippet
        The snippets to run (e.g. those of one section), in page order.
    namespace : dict
        The namespace they share (pre-seeded by the caller).
    source : str
        Page name used in tracebacks (``"<source>:<line>"``).
    """

    def __init__(self, snippets: list[Snippet], namespace: dict[str, Any], source: str) -> None:
        self.snippets = list(snippets)
        self.namespace = namespace
        self.source = source
        self.position = 0

    @property
    def remaining(self) -> list[Snippet]:
        """Snippets not run yet."""
        return self.snippets[self.position :]

    def run_next(
        self,
        heading: str,
        *,
        namespace: dict[str, Any] | None = None,
        expect: type[BaseException] | None = None,
    ) -> SnippetRun:
        """Run the next snippet, which must sit under ``heading``.

        Parameters
        ----------
        heading : str
            Expected :attr:`Snippet.heading` (guards against the page and the test drifting).
        namespace : dict, optional
            Run in this namespace instead of the shared one.
        expect : exception type, optional
            The snippet must raise this; the exception is returned in ``SnippetRun.error``.
        """
        if self.position >= len(self.snippets):
            raise AssertionError(f"no snippet left to run under {heading!r}")
        snippet = self.snippets[self.position]
        if snippet.heading != heading:
            raise AssertionError(
                f"the next snippet ({self.source}:{snippet.line}) is under "
                f"{snippet.heading!r}, expected {heading!r}"
            )
        self.position += 1
        scope = self.namespace if namespace is None else namespace
        run = SnippetRun(snippet, scope)
        code = compile(snippet.code, f"{self.source}:{snippet.line}", "exec")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                exec(code, scope)
            except BaseException as exc:
                if expect is None or not isinstance(exc, expect):
                    raise
                run.error = exc
        run.caught = list(caught)
        if expect is not None and run.error is None:
            raise AssertionError(
                f"{self.source}:{snippet.line} was expected to raise {expect.__name__}"
            )
        return run
