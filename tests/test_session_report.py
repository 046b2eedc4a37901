"""``pyflowreg report`` of a session: found from its config or any of its folders, with the
per-recording QC, the inter-session fields and the final mask, holding the session's values."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from pyflowreg.cli import main as pyflowreg_main
from pyflowreg.core.warp import warp
from pyflowreg.datasets import make_sessions
from pyflowreg.session import SessionConfig, run_stage1, run_stage2, run_stage3
from pyflowreg.session_report import (
    is_session_source,
    load_session,
    make_session_report,
)

NAMES = ("day_00", "day_01", "day_02")
TITLES = (
    "Recordings",
    "Temporal means of the recordings (stage 1)",
    "Inter-session displacement fields (stage 2)",
    "Inter-session displacement arrows",
    "Alignment to the centre recording",
    "Final valid mask (stage 3)",
)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Three synthetic sessions (known inter-session shifts of up to 4 px), stages 1-3 run."""
    root = tmp_path_factory.mktemp("report") / "data"
    sessions = make_sessions(3, 12, (48, 64), max_rigid_between=4.0, seed=3, dtype=np.uint16)
    sessions.save(root, ".tif", prefix="day")
    config = SessionConfig(
        root=root,
        pattern="day_*.tif",
        stage1_executor="sequential",
        iterations_between=30,
        flow_options={"quality_setting": "fast", "buffer_size": 6},
    )
    config_file = config.save(root / "session.toml")
    run_stage1(config)
    middle_idx, _, fields = run_stage2(config)
    final = run_stage3(config, middle_idx, fields)
    return config, config_file, final


def _cells(page: str, name: str) -> list[str]:
    row = re.search(rf"<tr><td>{name}[^<]*</td>(.*?)</tr>", page)
    assert row, name
    return [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row.group(1))]


def _correlation(a, b, mask):
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def test_session_report_shows_the_session(session):
    config, config_file, final = session
    page_path = make_session_report(config_file)
    paths = config.resolve_output_paths()
    assert page_path == paths.final_results / "report" / "report.html"
    page = page_path.read_text(encoding="utf-8")
    for title in TITLES:
        assert f">{title}</h2>" in page, title
    assert page.count('src="data:image/png;base64,') == 5
    assert len(list(page_path.parent.glob("session_*.png"))) == 5
    assert "day_01 (centre)" in page and "Note:" not in page
    assert "<tr><td>Stage 3</td><td>done</td></tr>" in page
    valid = int(final.sum())
    assert f"{valid} of {final.size} ({100.0 * valid / final.size:.1f} %)" in page

    centre = np.load(paths.output_root / "day_01" / "temporal_average.npy")
    for name in NAMES:
        cells = _cells(page, name)
        assert cells[0] == "12" and cells[1:3] == ["done", "done"]
        with np.load(paths.output_root / name / "statistics.npz") as stats:
            corr = f"{np.mean(stats['correlation_before']):.4f} -> "
            assert cells[4] == corr + f"{np.mean(stats['correlation']):.4f}"
        with np.load(paths.output_root / name / "w_to_reference.npz") as f:
            w = np.stack([f["u"], f["v"]], axis=-1)
        length = np.hypot(w[..., 0], w[..., 1])
        assert cells[6] == f"{length.mean():.2f} / {length.max():.2f} px"
        mean = np.load(paths.output_root / name / "temporal_average.npy")
        aligned = warp(mean.astype(np.float32)[None, ..., None], w)[0, ..., 0]
        before, after = _correlation(mean, centre, final), _correlation(aligned, centre, final)
        assert cells[7] == f"{before:.4f} -> {after:.4f}"
        if name != "day_01":
            assert length.max() > 1.0 and after > before + 0.05  # stage 2 aligned it


def test_every_session_folder_and_the_cli_find_it(session, capsys):
    config, _, _ = session
    paths = config.resolve_output_paths()
    for source in (paths.final_results, paths.output_root, config.root):
        assert is_session_source(source)
        data = load_session(source)
        assert data.names == list(NAMES) and data.center == 1
    assert pyflowreg_main(["report", str(paths.output_root)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"Report: {paths.final_results / 'report' / 'report.html'}"
    )
    # a recording's folder is the output folder of one run: the single-run report
    folder = paths.output_root / "day_00"
    assert not is_session_source(folder)
    assert pyflowreg_main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == f"Report: {folder / 'report' / 'report.html'}"


def test_report_of_a_session_without_stages_2_and_3(session, tmp_path):
    config, _, _ = session
    root = tmp_path / "partial"
    root.mkdir()
    for name in NAMES[:2]:
        (root / f"{name}.tif").write_bytes((config.root / f"{name}.tif").read_bytes())
    partial = config.model_copy(update={"root": root})
    run_stage1(partial, task_index=0)
    run_stage1(partial, task_index=1)
    page = make_session_report(partial.save(root / "session.yaml")).read_text()
    assert "Stage 2 has not run: no inter-session displacement fields." in page
    assert "Stage 3 has not run: no final valid mask." in page
    assert ">Temporal means of the recordings (stage 1)</h2>" in page
    assert ">Final valid mask (stage 3)</h2>" not in page
    assert _cells(page, "day_00")[2] == "pending"

    with pytest.raises(ValueError, match="is not a session folder"):
        load_session(tmp_path)
    with pytest.raises(FileNotFoundError, match="session config or folder not found"):
        load_session(tmp_path / "missing")
