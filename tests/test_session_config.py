"""SessionConfig: files (TOML, YAML, relative paths), validation messages, the pydantic API the
session GUI uses, recording discovery and the centre, array-job task ids, executor choice."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pyflowreg.session import SessionConfig, get_array_task_id
from pyflowreg.session.config import (
    SessionConfigError,
    array_task_index,
    discover_input_files,
    options_hash,
)
from pyflowreg.session.stage1_compensate import discover_input_files as stage1_discover


def _touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        paths.append(path)
    return paths


# ---------------------------------------------------------------------- the pydantic API


def test_fields_have_annotations_and_defaults_as_the_gui_reads_them():
    fields = SessionConfig.model_fields
    for name in (
        "root",
        "pattern",
        "center",
        "output_root",
        "final_results",
        "resume",
        "scheduler",
        "n_workers",
        "flow_backend",
        "backend_params",
        "flow_options",
        "cc_upsample",
        "sigma_smooth",
        "alpha_between",
        "iterations_between",
        "stage2_constancy_assumption",
        "stage1_quality_setting",
        "align_chunk_size",
        "align_output_format",
    ):
        assert name in fields, name
    assert fields["root"].is_required()
    assert fields["resume"].annotation is bool and fields["resume"].default is True
    assert fields["n_workers"].annotation is int and fields["n_workers"].default == -1
    assert fields["sigma_smooth"].annotation is float and fields["sigma_smooth"].default == 6.0
    assert fields["cc_upsample"].default == 4 and fields["alpha_between"].default == 25.0
    assert fields["iterations_between"].default == 100
    assert typing.get_args(fields["scheduler"].annotation) == ("local", "array", "dask")
    assert fields["backend_params"].default_factory() == {}
    assert fields["stage2_constancy_assumption"].default == "gc"


def test_model_dump_validate_and_deep_copy(tmp_path):
    config = SessionConfig(
        root=tmp_path, pattern="rec_*.tif", backend_params={"device": "cpu"}, n_workers=2
    )
    dumped = config.model_dump(mode="python")
    assert dumped["root"] == tmp_path and dumped["n_workers"] == 2
    assert SessionConfig.model_validate(dumped) == config
    copy = config.model_copy(deep=True)
    copy.backend_params["device"] = "cuda:0"
    copy.output_root = "/remote/outputs"  # assignment of text, as the GUI's path mapping does
    assert config.backend_params == {"device": "cpu"}
    assert copy.output_root == Path("/remote/outputs")
    # an empty form field for the optional centre is None
    assert SessionConfig.model_validate({**dumped, "center": ""}).center is None


def test_assignment_is_validated(tmp_path):
    config = SessionConfig(root=tmp_path)
    with pytest.raises(ValidationError, match="n_workers must be -1"):
        config.n_workers = 0
    config.flow_options = {"quality_setting": "fast", "buffer_size": 50}
    assert config.stage1_options().buffer_size == 50
    with pytest.raises(ValidationError, match="buffer_size must be >= 1"):
        config.flow_options = {"buffer_size": 0}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"alpha_betwen": 3}, r"unknown session setting 'alpha_betwen' \(did you mean "),
        ({"scheduler": "slurm"}, r"(?s)scheduler.*'local', 'array' or 'dask'"),
        ({"cc_upsample": 0}, "cc_upsample must be >= 1, got 0"),
        ({"sigma_smooth": -1.0}, "sigma_smooth must be finite and >= 0"),
        ({"alpha_between": 0.0}, "alpha_between must be finite and > 0"),
        ({"pattern": " "}, "pattern must not be empty"),
        ({"root": ""}, "root must name the folder of the recordings"),
        ({"stage2_constancy_assumption": "lab"}, "stage2_constancy_assumption"),
        ({"align_output_format": "AVI"}, "align_output_format must be one of"),
        ({"flow_options": {"qualty_setting": "fast"}}, "did you mean 'quality_setting'"),
        ({"backend_params": {"device": object()}}, "backend_params must hold only plain"),
    ],
)
def test_bad_values_name_the_key(tmp_path, values, message):
    with pytest.raises(ValidationError, match=message):
        SessionConfig(**{"root": tmp_path, **values})


def test_constancy_aliases(tmp_path):
    config = SessionConfig(root=tmp_path, stage2_constancy_assumption="census")
    assert config.stage2_constancy_assumption == "cs"
    config = SessionConfig(root=tmp_path, stage2_constancy_assumption="Gradient")
    assert config.model_dump()["stage2_constancy_assumption"] == "gc"


# ---------------------------------------------------------------------- files


DOCUMENTED_TOML = """\
root = "data"
pattern = "*.tif"
center = "recording_03.tif"
output_root = "compensated_outputs"
final_results = "final_results"
resume = true
scheduler = "local"
n_workers = -1
flow_backend = "flowreg"
stage1_quality_setting = "balanced"
cc_upsample = 4
sigma_smooth = 6.0
alpha_between = 25.0
iterations_between = 100
stage2_constancy_assumption = "gc"
align_chunk_size = 64
align_output_format = "TIFF"

[backend_params]
device = "cpu"

[flow_options]
buffer_size = 100
save_w = false
"""


def test_documented_toml_loads_with_root_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "session.toml").write_text(DOCUMENTED_TOML)
    monkeypatch.chdir(tmp_path)  # not the folder of the file
    config = SessionConfig.from_toml(folder / "session.toml")
    assert config.root == folder / "data"
    assert config.backend_params == {"device": "cpu"}
    assert config.flow_options == {"buffer_size": 100, "save_w": False}
    paths = config.resolve_output_paths()
    assert paths.output_root == (folder / "data" / "compensated_outputs").resolve()
    assert paths.final_results == (folder / "data" / "final_results").resolve()
    assert SessionConfig.from_file(folder / "session.toml") == config
    options = config.stage1_options()
    assert options.quality_setting.value == "balanced" and options.buffer_size == 100


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml"])
def test_save_and_load_round_trip(tmp_path, suffix):
    config = SessionConfig(
        root=tmp_path / "data",
        pattern="**/*.h5",
        center="b.h5",
        output_root=tmp_path / "out",
        scheduler="array",
        n_workers=3,
        backend_params={"device": "cuda:0"},
        flow_options={"quality_setting": "fast", "buffer_size": 20},
        stage1_quality_setting="fast",
        sigma_smooth=4.5,
        stage2_constancy_assumption="cs",
        save_aligned=True,
    )
    path = config.save(tmp_path / f"session{suffix}")
    assert SessionConfig.from_file(path) == config
    loader = SessionConfig.from_toml if suffix == ".toml" else SessionConfig.from_yaml
    assert loader(path) == config


def test_save_writes_a_relative_root_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = SessionConfig(root="data", flow_options="opts.json")
    (tmp_path / "configs").mkdir()
    loaded = SessionConfig.from_file(config.save(tmp_path / "configs" / "s.yaml"))
    assert loaded.root == tmp_path / "data" and loaded.flow_options == tmp_path / "opts.json"


def test_gui_yaml_with_paths_relative_to_root(tmp_path):
    """What the session GUI does: dump the model, write paths relative to root into a YAML file
    in a temporary folder, load it with from_file, resolve the output paths."""
    root = tmp_path / "dataset"
    _touch(root, "rec_1.tif", "rec_2.tif", "rec_3.tif")
    (root / "flow_options.json").write_text(json.dumps({"buffer_size": 7}))
    config = SessionConfig(
        root=root,
        pattern="rec_*.tif",
        output_root=root / "output",
        final_results=root / "final",
        center=str(root / "rec_3.tif"),
        flow_options=root / "flow_options.json",
    )
    data = {
        k: str(v) if isinstance(v, Path) else v for k, v in config.model_dump(mode="python").items()
    }
    for key in ("output_root", "final_results", "center", "flow_options"):
        data[key] = str(Path(data[key]).relative_to(root))
    gui_dir = tmp_path / "gui_tmp"
    gui_dir.mkdir()
    (gui_dir / "session_config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    loaded = SessionConfig.from_file(gui_dir / "session_config.yaml")
    paths = loaded.resolve_output_paths()
    assert paths.output_root == (root / "output").resolve()
    assert paths.final_results == (root / "final").resolve()
    assert loaded.flow_options == root / "flow_options.json"  # found under root
    assert loaded.stage1_options().buffer_size == 7
    files = stage1_discover(loaded)
    assert [p.name for p in files] == ["rec_1.tif", "rec_2.tif", "rec_3.tif"]
    assert loaded.resolve_center_file(files).name == "rec_3.tif"


def test_flow_options_file_beside_the_config_and_precedence(tmp_path):
    (tmp_path / "opts").mkdir()
    (tmp_path / "opts" / "stage1.json").write_text(
        json.dumps({"quality_setting": "quality", "buffer_size": 33, "flow_backend": "flowreg"})
    )
    (tmp_path / "s.toml").write_text(
        'root = "."\nflow_options = "opts/stage1.json"\nstage1_quality_setting = "fast"\n'
    )
    config = SessionConfig.from_file(tmp_path / "s.toml")
    assert config.flow_options == tmp_path / "opts" / "stage1.json"
    options = config.stage1_options()
    assert options.buffer_size == 33
    assert options.quality_setting.value == "fast"  # stage1_quality_setting wins over the file
    assert config.stage1_options({"buffer_size": 5}).buffer_size == 5  # the override wins
    # only what the file sets counts as set (stage 1 warns about set values it overrides)
    assert options.model_fields_set == {
        "quality_setting",
        "buffer_size",
        "flow_backend",
        "backend_params",
    }
    (tmp_path / "opts" / "stage1.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"flow_options file not found: .*stage1\.json"):
        config.stage1_options()


def test_session_backend_set_explicitly_wins_over_flow_options(tmp_path):
    options = {"flow_backend": "flowreg_torch", "backend_params": {"device": "cpu"}}
    assert SessionConfig(root=tmp_path, flow_options=options).stage1_options().flow_backend == (
        "flowreg_torch"
    )
    config = SessionConfig(root=tmp_path, flow_options=options, flow_backend="flowreg")
    assert config.stage1_options().flow_backend == "flowreg"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.toml", 'root = "."\nalpha_between = "strong"\n', r"s\.toml: alpha_between: .*number"),
        ("s.toml", 'root = "."\nn_workers = 0\n', r"s\.toml: n_workers must be -1 .* got 0"),
        ("s.yaml", "root: .\nsigma_smoth: 2\n", r"s\.yaml: .*'sigma_smoth' \(did you mean"),
        ("s.toml", 'root = "."\n[flow_options]\nbuffer_size = -4\n', r"s\.toml: flow_options: "),
        ("s.toml", 'root = "."\npattern = \n', r"s\.toml is not valid TOML"),
        ("s.yaml", "root: [.\n", r"s\.yaml is not valid YAML"),
        ("s.yaml", "- root\n", r"s\.yaml must hold a mapping"),
        ("s.toml", 'pattern = "*.tif"\n', r"s\.toml: the required setting 'root' is missing"),
        ("s.json", "{}", r"must end in one of \['\.toml', '\.yaml', '\.yml'\]"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SessionConfigError, match=message):
        SessionConfig.from_file(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="session config not found"):
        SessionConfig.from_file(tmp_path / "nope.toml")


# ---------------------------------------------------------------------- discovery and centre


def test_discovery_in_natural_order_without_the_outputs(tmp_path):
    _touch(tmp_path, "rec_10.tif", "rec_2.tif", "rec_1.tif", "notes.txt", ".hidden.tif")
    _touch(tmp_path / "sub", "rec_3.tif")
    _touch(tmp_path / "compensated_outputs" / "rec_1", "aligned.tif")
    _touch(tmp_path / "final_results", "aligned_rec_1.tif")
    config = SessionConfig(root=tmp_path, pattern="**/*.tif")
    names = [p.name for p in discover_input_files(config)]
    assert names == ["rec_1.tif", "rec_2.tif", "rec_3.tif", "rec_10.tif"]
    assert discover_input_files(config) == stage1_discover(config)


def test_discovery_with_the_outputs_beside_the_recordings(tmp_path):
    _touch(tmp_path, "a.tif", "b.tif")
    _touch(tmp_path / "a", "status.json", "aligned.tif")  # the output folder of a.tif
    config = SessionConfig(root=tmp_path, pattern="**/*.tif", output_root=".")
    assert [p.name for p in discover_input_files(config)] == ["a.tif", "b.tif"]


def test_discovery_errors(tmp_path):
    _touch(tmp_path, "a.tif", "a.h5")
    with pytest.raises(FileNotFoundError, match=r"no recordings match pattern '\*\.zarr' in "):
        discover_input_files(SessionConfig(root=tmp_path, pattern="*.zarr"))
    with pytest.raises(ValueError, match="would share the output folder 'a'"):
        discover_input_files(SessionConfig(root=tmp_path, pattern="a.*"))
    with pytest.raises(FileNotFoundError, match="session root is not a folder"):
        discover_input_files(SessionConfig(root=tmp_path / "missing"))


@pytest.mark.parametrize(("n", "middle"), [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2)])
def test_default_centre_is_matlabs_middle(tmp_path, n, middle):
    files = _touch(tmp_path, *[f"r{i}.tif" for i in range(n)])
    config = SessionConfig(root=tmp_path)
    assert config.center_index(files) == middle
    assert config.resolve_center_file() == files[middle]


def test_centre_by_name_stem_or_path(tmp_path):
    files = _touch(tmp_path, "r0.tif", "r1.tif", "r2.tif")
    for center in ("r2.tif", "r2", str(files[2]), "./r2.tif"):
        assert SessionConfig(root=tmp_path, center=center).center_index(files) == 2, center
    with pytest.raises(ValueError, match=r"center 'r9.tif' is none of the recordings \['r0.tif'"):
        SessionConfig(root=tmp_path, center="r9.tif").center_index(files)


# ---------------------------------------------------------------------- array jobs, executors


@pytest.mark.parametrize(
    ("env", "task", "index"),
    [
        ({}, None, None),
        ({"SLURM_ARRAY_TASK_ID": "3"}, 3, 2),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0"}, 0, 0),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0"}, 4, 4),
        ({"SGE_TASK_ID": "undefined"}, None, None),
        ({"SGE_TASK_ID": "7"}, 7, 6),
        ({"PBS_ARRAY_INDEX": "1"}, 1, 0),
        ({"SLURM_ARRAY_TASK_ID": "2", "SGE_TASK_ID": "9"}, 2, 1),
    ],
)
def test_array_task_ids(env, task, index):
    assert get_array_task_id(env) == task
    assert array_task_index(env) == index


def test_array_task_id_errors(monkeypatch):
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID must be an integer task id"):
        get_array_task_id({"SLURM_ARRAY_TASK_ID": "x"})
    with pytest.raises(ValueError, match="array tasks are numbered from 1"):
        array_task_index({"PBS_ARRAY_INDEX": "0"})
    for name in ("SLURM_ARRAY_TASK_ID", "SGE_TASK_ID", "PBS_ARRAY_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PBS_ARRAY_INDEX", "5")
    assert get_array_task_id() == 5 and array_task_index() == 4


@pytest.mark.parametrize(
    ("settings", "executor", "n_jobs"),
    [
        ({}, None, -1),
        ({"n_workers": 4}, None, 4),
        ({"scheduler": "dask", "n_workers": 2}, "dask", 2),
        ({"scheduler": "array", "stage1_executor": "sequential"}, "sequential", -1),
        ({"scheduler": "dask", "stage1_executor": "threading"}, "threading", -1),
    ],
)
def test_stage1_executor_choice(tmp_path, settings, executor, n_jobs):
    registration = SessionConfig(root=tmp_path, **settings).registration_config()
    assert registration.parallelization == executor and registration.n_jobs == n_jobs


def test_stage_parameters_hash_changes_with_their_settings(tmp_path):
    config = SessionConfig(root=tmp_path)
    same = SessionConfig(root=tmp_path, n_workers=3, resume=False)
    other = SessionConfig(root=tmp_path, alpha_between=10.0)
    assert options_hash(config.stage2_parameters()) == options_hash(same.stage2_parameters())
    assert options_hash(config.stage2_parameters()) != options_hash(other.stage2_parameters())
    assert options_hash(config.stage3_parameters()) == options_hash(other.stage3_parameters())
