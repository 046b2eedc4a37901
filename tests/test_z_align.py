"""``pyflowreg.z_align`` and ``pyflowreg-z-align`` (PyFlowReg's z-align guide and API page),
on recordings with known depth.

Data: a smooth random tissue block (Gaussian-filtered noise, 64 x 96 px) sampled 4x finer in
depth than the 15-slice reference stack, so recorded frames fall between slices and are
sampled by cubic interpolation (not the linear model of the estimator). The recording's depth
drifts as ``7 + 2.5 sin(2 pi t / 40)`` slices and is tilted by one slice across the width;
Gaussian noise of 30 counts on ~500-3500.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from pyflowreg.io import open_reader
from pyflowreg.z_align import (
    ZAlignConfig,
    estimate,
    read_status,
    run_all_stages,
    run_stage1,
    run_stage2,
    run_stage3,
)
from pyflowreg.z_align.cli import main, parse_of_params
from pyflowreg.z_align.pipeline import load_volume

H, W, Z, T = 64, 96, 15, 40
OVERSAMPLING = 4
NOISE = 30.0


@pytest.fixture(scope="module")
def tissue(tmp_path_factory) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    fine = ndi.gaussian_filter(
        rng.standard_normal((H, W, Z * OVERSAMPLING)), (2.0, 2.0, 1.5 * OVERSAMPLING), mode="wrap"
    )
    fine = (fine - fine.min()) / (fine.max() - fine.min()) * 3000 + 500
    volume = fine[:, :, ::OVERSAMPLING]  # slice z at depth z
    t = np.arange(T)
    tilt = (np.arange(W) - W / 2) / W
    depth = (7.0 + 2.5 * np.sin(2 * np.pi * t / T))[:, None, None] + tilt[None, None, :]
    depth = np.broadcast_to(depth, (T, H, W))
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    coefficients = ndi.spline_filter(fine, order=3, mode="nearest")
    clean = np.stack(
        [
            ndi.map_coordinates(
                coefficients, [yy, xx, depth[k] * OVERSAMPLING], mode="nearest", prefilter=False
            )
            for k in range(T)
        ]
    )
    frames = np.clip(np.rint(clean + rng.normal(0, NOISE, clean.shape)), 0, 65535)
    root = tmp_path_factory.mktemp("z_align")
    tifffile.imwrite(root / "stack.tif", np.moveaxis(volume, -1, 0).astype(np.uint16))
    tifffile.imwrite(root / "recording.tif", frames.astype(np.uint16))
    return SimpleNamespace(
        root=root,
        volume=np.rint(volume),
        depth=depth,
        clean=clean,
        frames=frames,
    )


def _config(tissue, name: str, **kw) -> ZAlignConfig:
    settings = {
        "root": tissue.root,
        "input_file": "recording.tif",
        "reference_volume": "stack.tif",
        "output_root": name,
        "patch_size": 32,
        "win_half": 6,
        "input_buffer_size": 16,
        "z_smooth_sigma_spatial": 3.0,
        **kw,
    }
    return ZAlignConfig(**settings)


def _depths(config: ZAlignConfig) -> np.ndarray:
    """The depth map as written: HDF5 dataset ch1, (H, W, T), 1-based."""
    with h5py.File(config.z_shift_path, "r") as f:
        assert list(f) == ["ch1"]
        stored = f["ch1"][()]
    assert stored.shape == (H, W, T) and stored.dtype == np.float32
    return np.moveaxis(stored, -1, 0)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def test_all_stages_recover_the_known_depth(tissue):
    config = _config(tissue, "all")
    outputs = run_all_stages(config)
    assert outputs == {
        "volume": tissue.root / "stack.tif",
        "z_shift": config.output_dir / "z_shift.HDF5",
        "corrected": config.output_dir / "compensated_shift_corrected.tif",
        "simulated": config.output_dir / "simulated_from_z.tif",
    }
    error = np.abs(_depths(config) - 1.0 - tissue.depth)  # written 1-based
    # Measured: mean 0.12, 95th percentile 0.31 slices.
    assert error.mean() < 0.25 and np.percentile(error, 95) < 0.6, error.mean()

    # The anchor is the slice of the first batch's depth (mean 8.75 over frames 0-15).
    anchor = int(np.rint(tissue.depth[:16].mean()))
    assert anchor == 9
    meta = np.load(config.metadata_path)
    assert int(meta["anchor_z"]) == anchor and int(meta["anchor_z_1based"]) == anchor + 1
    assert Path(str(meta["volume_path"])) == tissue.root / "stack.tif"
    assert Path(str(meta["input_path"])) == tissue.root / "recording.tif"
    status = read_status(config)
    assert {status[k] for k in ("stage1", "stage2", "stage3")} == {"done"}
    assert status["anchor_z"] == anchor and status["anchor_z_1based"] == anchor + 1
    assert json.loads(config.status_path.read_text()) == status

    # Corrected to the anchor depth: close to the anchor slice (measured 41 counts, raw 311).
    corrected = tifffile.imread(config.corrected_path)
    assert corrected.dtype == np.uint16 and corrected.shape == (T, H, W)
    target = tissue.volume[..., anchor]
    assert _rms(corrected - target) < 0.25 * _rms(tissue.frames - target)
    # Depth-only simulation: the noise-free recording (measured 28 counts, anchor slice 310).
    simulated = tifffile.imread(config.simulated_path)
    assert simulated.dtype == np.uint16 and simulated.shape == (T, H, W)
    assert _rms(simulated - tissue.clean) < 0.2 * _rms(target - tissue.clean)
    assert _rms(simulated - tissue.clean) < 1.5 * NOISE
    assert not list(config.output_dir.glob(".*partial*"))


def test_depths_do_not_depend_on_batches_or_threads(tissue):
    # Windows covering every slice, so that the anchor (from the first batch) does not matter.
    a = _config(tissue, "b16", win_half=Z, write_corrected=False, write_simulated=False)
    b = _config(
        tissue,
        "b40",
        win_half=Z,
        input_buffer_size=40,
        parallelization="threading",
        n_jobs=2,
        write_corrected=False,
        write_simulated=False,
    )
    run_all_stages(a)
    run_all_stages(b)
    # Batches read a halo of ceil(4 * 1.5) + ceil(4 * 1.5) = 12 real neighbouring frames.
    assert estimate.halo_frames(a.temporal_sigma, a.z_smooth_sigma_temporal) == 12
    np.testing.assert_allclose(_depths(a), _depths(b), atol=1e-5)
    assert not a.corrected_path.exists() and not a.simulated_path.exists()


def test_resume_skips_finished_stages(tissue):
    config = _config(tissue, "resume")
    run_all_stages(config)
    times = {p: p.stat().st_mtime_ns for p in (config.z_shift_path, config.simulated_path)}
    run_all_stages(config)
    assert {p: p.stat().st_mtime_ns for p in times} == times
    # A missing output is made again; the finished stage before it is kept.
    config.simulated_path.unlink()
    run_all_stages(config)
    assert config.simulated_path.exists()
    assert config.z_shift_path.stat().st_mtime_ns == times[config.z_shift_path]
    # resume=False recomputes, and the stage built on it is no longer done.
    simulated = config.simulated_path.stat().st_mtime_ns
    run_stage2(config.model_copy(update={"resume": False}))
    assert config.z_shift_path.stat().st_mtime_ns != times[config.z_shift_path]
    assert read_status(config)["stage2"] == "done" and read_status(config)["stage3"] is None
    run_all_stages(config)
    assert config.simulated_path.stat().st_mtime_ns != simulated
    assert read_status(config)["stage3"] == "done"
    # Another reference volume: the depths are estimated again.
    (tissue.root / "stack_copy.tif").write_bytes((tissue.root / "stack.tif").read_bytes())
    depths = config.z_shift_path.stat().st_mtime_ns
    run_all_stages(config.model_copy(update={"reference_volume": Path("stack_copy.tif")}))
    assert config.z_shift_path.stat().st_mtime_ns != depths


def test_stage1_registers_each_slice_scans_through_the_cli(tmp_path):
    """A stack scanned 3 times per slice with in-plane jitter: stage 1 registers it slice by
    slice (``stack_scans_per_slice``), stage 2 reads it binned into slices."""
    rng = np.random.default_rng(1)
    z_count, scans = 8, 3
    volume = ndi.gaussian_filter(rng.standard_normal((H, W, z_count)), (2, 2, 1.5), mode="wrap")
    volume = (volume - volume.min()) / (volume.max() - volume.min()) * 3000 + 500
    shifts = rng.uniform(-2, 2, (z_count, scans, 2))
    stack = np.stack(
        [
            ndi.shift(volume[..., z], shifts[z, s], order=3, mode="reflect")
            + rng.normal(0, 20, (H, W))
            for z in range(z_count)
            for s in range(scans)
        ]
    )
    tifffile.imwrite(tmp_path / "zstack.tif", np.clip(stack, 0, 65535).astype(np.uint16))
    # Saved OFOptions for stage 1: the routing fields in it are the workflow's, not the file's.
    (tmp_path / "of.json").write_text(
        json.dumps({"output_path": "elsewhere", "input_file": "other.tif", "levels": 40}),
        encoding="utf-8",
    )
    (tmp_path / "z_align.toml").write_text(
        f'root = "{tmp_path.as_posix()}"\ninput_file = "recording.tif"\n'
        f'volume_input_file = "zstack.tif"\nstack_scans_per_slice = {scans}\n'
        'stage1_flow_options = "of.json"\n',
        encoding="utf-8",
    )
    code = main(
        [
            *("run", "-c", str(tmp_path / "z_align.toml"), "-s", "1"),
            *("--of-params", "quality_setting=fast", "alpha=4"),
        ]
    )
    assert code == 0
    config = ZAlignConfig.from_toml(tmp_path / "z_align.toml")
    out = config.volume_output_path
    assert out == tmp_path / "z_align_outputs" / "aligned_stack" / "compensated.HDF5"
    options = json.loads((out.parent / "options.json").read_text())
    assert options["quality_setting"] == "fast" and options["alpha"] in (4, [4, 4], [4.0, 4.0])
    assert options["buffer_size"] == scans and options["update_reference"] is True
    assert options["levels"] == 40 and Path(options["input_file"]) == tmp_path / "zstack.tif"
    assert not (tmp_path / "elsewhere").exists()
    with open_reader(out) as reader:
        registered = reader.read()[..., 0].reshape(z_count, scans, H, W)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    spread_raw = stack.reshape(z_count, scans, H, W)[inner].std(axis=1).mean()
    spread = registered[inner].std(axis=1).mean()
    assert spread < 0.25 * spread_raw, (spread, spread_raw)  # measured 15 vs 144 (noise 20)
    assert read_status(config)["stage1"] == "done"
    assert load_volume(config).shape == (H, W, 1, z_count)  # 3 scans binned per slice


def test_prealigned_recording(tissue):
    config = _config(
        tissue,
        "prealign",
        prealign_recording=True,
        stage1_quality_setting="fast",
        reference_source_frames=10,
        reference_source_bin_size=1,
        write_simulated=False,
    )
    run_stage1(config)
    run_stage2(config)
    status = read_status(config)
    assert status["recording_prealign"] == "done"
    assert config.prealigned_path == config.output_dir / "prealigned_recording/compensated.HDF5"
    with open_reader(config.prealigned_path) as reader:
        assert reader.shape == (T, H, W, 1)
    assert Path(str(np.load(config.metadata_path)["input_path"])) == config.prealigned_path
    error = np.abs(_depths(config) - 1.0 - tissue.depth)
    assert error.mean() < 0.3, error.mean()


def test_cli_runs_and_reports_errors(tissue, tmp_path, capsys):
    path = tmp_path / "z.yaml"
    path.write_text(
        f"root: {tissue.root}\ninput_file: recording.tif\nreference_volume: stack.tif\n"
        f"output_root: {tmp_path / 'out'}\npatch_size: 32\nwin_half: 6\n",
        encoding="utf-8",
    )
    assert main(["run", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"z_shift: {tmp_path / 'out' / 'z_shift.HDF5'}" in printed
    assert (tmp_path / "out" / "simulated_from_z.tif").exists()

    assert main(["run", "-c", str(path), "--stage", "3", "--of-params", "alpha=8"]) == 0
    assert (
        "warning: --of-params only override stage-1 OFOptions; ignored with --stage 3"
        in capsys.readouterr().err
    )

    path.write_text(path.read_text() + "patch_sise: 16\n", encoding="utf-8")
    assert main(["run", "-c", str(path)]) == 1
    assert "patch_sise" in capsys.readouterr().err
    assert main(["run", "-c", str(tmp_path / "missing.toml")]) == 1
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run"])  # --config is required


def test_of_params_parsing():
    assert parse_of_params(
        ["alpha=8", "quality_setting=balanced", "save_w=true", "eta=0.5", "sigma=[[1,1,0.1]]"]
    ) == {
        "alpha": 8,
        "quality_setting": "balanced",
        "save_w": True,
        "eta": 0.5,
        "sigma": [[1, 1, 0.1]],
    }
    with pytest.raises(ValueError, match="KEY=VALUE items, got 'alpha'"):
        parse_of_params(["alpha"])


def test_config_validation(tissue, tmp_path):
    base = {"root": tissue.root, "input_file": "recording.tif", "reference_volume": "stack.tif"}
    config = ZAlignConfig(**base)
    assert config.patch_stride == 32 and config.output_dir == tissue.root / "z_align_outputs"
    assert config.corrected_path.name == "compensated_shift_corrected.tif"
    for bad, match in [
        ({"overlap": 1.0}, r"overlap must be in \[0, 1\), got 1.0"),
        ({"stage1_quality_setting": "best"}, "stage1_quality_setting must be one of"),
        ({"z_shift_file": "z.tif"}, "z_shift_file must end in one of"),
        ({"root": tmp_path / "nope"}, "root must be an existing folder"),
        ({"patch_size": 0}, "patch_size must be >= 1, got 0"),
        ({"spatial_sigma": 0.0}, "spatial_sigma must be a finite number > 0"),
        ({"n_jobs": 0}, r"n_jobs must be -1 \(all cores\) or >= 1"),
        ({"output_dtype": "complex64"}, "output_dtype must be an integer or float dtype"),
        ({"parallelization": "processes"}, "parallelization"),
        ({"reference_volume": None}, "set volume_input_file"),
        ({"unknown_key": 1}, "unknown_key"),
    ]:
        with pytest.raises(ValueError, match=match):
            ZAlignConfig(**{**base, **bad})
    with pytest.raises(ValueError, match=r"config file must end in one of \['.toml'\]"):
        ZAlignConfig.from_toml(tmp_path / "z.yaml")

    # A recording and a volume of different frame sizes: an error naming both files.
    tifffile.imwrite(
        tmp_path / "small.tif", np.zeros((6, 32, 32), np.uint16), photometric="minisblack"
    )
    wrong = ZAlignConfig(**{**base, "input_file": tmp_path / "small.tif", "output_root": tmp_path})
    with pytest.raises(ValueError, match=r"small.tif are \(H, W, C\) = \(32, 32, 1\).*stack.tif"):
        run_stage2(wrong)
    assert not wrong.z_shift_path.exists()
    with pytest.raises(FileNotFoundError, match="run stage 2"):
        run_stage3(wrong)


# ---------------------------------------------------------------------------- kernels


def test_refine_minimum_finds_the_vertex():
    z = np.arange(7.0)
    scores = np.stack([(z - 2.3) ** 2 + 1.0, (z - 4.6) ** 2, np.full(7, 5.0), (z - 6.0) ** 2])
    refined = estimate.refine_minimum(scores.T, 1e-3)
    # exact vertex of a parabola; flat -> the integer index; at the end -> no refinement
    np.testing.assert_allclose(refined, [2.3, 4.6, 0.0, 6.0], atol=1e-12)


def test_patch_sums_and_aggregation_match_a_naive_loop():
    rng = np.random.default_rng(2)
    error = rng.random((3, 20, 27))
    ys, xs = estimate.patch_starts(20, 8, 5), estimate.patch_starts(27, 8, 5)
    assert ys.tolist() == [0, 5, 10, 12] and xs.tolist() == [0, 5, 10, 15, 19]
    sums = estimate.patch_sums(error, ys, xs, (8, 8))
    naive = np.array([[[e[y : y + 8, x : x + 8].sum() for x in xs] for y in ys] for e in error])
    np.testing.assert_allclose(sums, naive)
    mean = estimate.aggregate_patches(sums, ys, xs, (8, 8), (20, 27))
    total, count = np.zeros((3, 20, 27)), np.zeros((20, 27))
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            total[:, y : y + 8, x : x + 8] += sums[:, i, j, None, None]
            count[y : y + 8, x : x + 8] += 1
    np.testing.assert_allclose(mean, total / count)
    assert estimate.patch_starts(20, 64, 16).tolist() == [0]  # patch larger than the frame


def test_interpolate_slices_and_cast():
    volume = np.arange(2 * 3 * 2 * 4, dtype=float).reshape(2, 3, 2, 4)
    depths = np.array([[[0.0, 1.5, 3.0], [2.25, -1.0, 9.0]]])
    out = estimate.interpolate_slices(volume, depths)
    expected = np.empty((1, 2, 3, 2))
    for y in range(2):
        for x in range(3):
            z = np.clip(depths[0, y, x], 0, 3)
            for c in range(2):
                expected[0, y, x, c] = np.interp(z, np.arange(4), volume[y, x, c])
    np.testing.assert_allclose(out, expected)
    cast = estimate.cast_frames(np.array([-3.0, 2.5, 70000.0]), np.uint16)
    assert cast.tolist() == [0, 2, 65535] and cast.dtype == np.uint16


def test_entry_point_declared():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'pyflowreg-z-align = "pyflowreg.z_align.cli:main"' in text
