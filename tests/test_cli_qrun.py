"""``kronos-alpha qrun``: a workflow YAML's relative paths are read from the config file's
folder (inputs also from the folders above it), whatever the working directory, and a
missing provider folder is a clear error (key, path as written and resolved), exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kronos_alpha.cli import main
from kronos_alpha.cli.qrun import QrunConfigError, check_provider, load_config, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def provider(folder: Path) -> Path:
    (folder / "calendars").mkdir(parents=True)
    (folder / "calendars" / "day.txt").write_text("2022-01-04\n2022-01-05\n")
    return folder


def workflow(provider_uri: str, **model_kwargs) -> dict:
    return {
        "qlib_init": {"provider_uri": provider_uri, "region": "cn"},
        "task": {
            "model": {
                "class": "KronosModel",
                "module_path": "kronos_alpha.adapters.qlib",
                "kwargs": model_kwargs,
            },
            "record": [{"class": "SignalRecord", "kwargs": {"model": "<MODEL>"}}],
        },
    }


@pytest.fixture
def project(tmp_path, monkeypatch):
    """project/{data/qlib, ckpt, configs/wf.yaml}; the working directory elsewhere."""
    root = tmp_path / "project"
    provider(root / "data" / "qlib")
    (root / "ckpt").mkdir()
    (root / "configs").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_relative_paths_are_read_from_the_config_folder(project):
    cfg = write(
        project / "configs" / "wf.yaml",
        workflow("../data/qlib", model="../ckpt", tokenizer="kronos-small", cache_dir="cache"),
    )
    resolved, changes = load_config(cfg)
    assert resolved["qlib_init"]["provider_uri"] == str(project / "data" / "qlib")
    kw = resolved["task"]["model"]["kwargs"]
    assert kw["model"] == str(project / "ckpt")
    assert kw["tokenizer"] == "kronos-small"  # a zoo name, not a folder: as written
    assert kw["cache_dir"] == str(project / "configs" / "cache")  # an output: the config's folder
    assert resolved["task"]["record"][0]["kwargs"]["model"] == "<MODEL>"  # not ours: untouched
    assert ("qlib_init.provider_uri", "../data/qlib", str(project / "data" / "qlib")) in changes
    check_provider(resolved)  # a folder with calendars/day.txt passes


def test_inputs_are_also_found_from_the_folders_above(project):
    """As the example YAMLs are written (relative to the project root for plain qrun)."""
    nested = project / "examples" / "qlib"
    nested.mkdir(parents=True)
    cfg = workflow("data/qlib", model="ckpt", tokenizer="./no/such/folder")
    resolved, _ = resolve_config(cfg, nested)
    assert resolved["qlib_init"]["provider_uri"] == str(project / "data" / "qlib")
    kw = resolved["task"]["model"]["kwargs"]
    assert kw["model"] == str(project / "ckpt")
    assert kw["tokenizer"] == str(nested / "no" / "such" / "folder")  # a path: made absolute
    assert cfg["qlib_init"]["provider_uri"] == "data/qlib"  # the input is not changed


def test_a_handlers_kronos_block_is_resolved_once_through_its_anchor(project):
    """KronosAlpha158's ``kronos:`` block, reached through a YAML anchor from the handler."""
    text = """
data_handler_config: &h
    instruments: csi300
    kronos: {model: ckpt, cache_dir: cache, lookback: 90}
task:
    dataset:
        class: DatasetH
        module_path: qlib.data.dataset
        kwargs:
            handler: {class: KronosAlpha158, module_path: kronos_alpha.adapters.qlib, kwargs: *h}
"""
    nested = project / "examples" / "qlib"
    nested.mkdir(parents=True)
    resolved, changes = resolve_config(yaml.safe_load(text), nested)
    block = resolved["task"]["dataset"]["kwargs"]["handler"]["kwargs"]["kronos"]
    assert block["model"] == str(project / "ckpt")
    assert block["cache_dir"] == str(nested / "cache")
    assert block is resolved["data_handler_config"]["kronos"]  # the anchor still shared
    assert len(changes) == 2


def test_the_cli_resolves_from_another_working_directory(project, capsys):
    cfg = write(project / "configs" / "wf.yaml", workflow("../data/qlib", model="../ckpt"))
    assert main(["qrun", str(cfg), "--resolve-only"]) == 0
    out, err = capsys.readouterr()
    printed = yaml.safe_load(out)
    assert printed["qlib_init"]["provider_uri"] == str(project / "data" / "qlib")
    assert f"qlib_init.provider_uri: ../data/qlib -> {project / 'data' / 'qlib'}" in err


def test_a_missing_provider_folder_is_a_clear_error(project, capsys):
    cfg = write(project / "configs" / "wf.yaml", workflow("../no_such_provider"))
    assert main(["qrun", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "kronos-alpha qrun: error: qlib_init.provider_uri:" in err
    assert str(project / "no_such_provider") in err and "does not exist" in err


def test_a_folder_without_a_calendar_is_a_clear_error(project):
    (project / "empty").mkdir()
    with pytest.raises(QrunConfigError, match=r"has no calendars/day\.txt"):
        check_provider(resolve_config(workflow("empty"), project / "configs")[0])


def test_the_example_workflows_resolve_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("workflow_kronos_fast.yaml", "workflow_kronos_csi300.yaml"):
        resolved, _ = load_config(ROOT / "examples" / "qlib" / name)
        model = Path(resolved["task"]["model"]["kwargs"]["model"])
        assert model == ROOT / "kronos_alpha" / "assets" / "default" and model.is_dir()
        data = Path(resolved["qlib_init"]["provider_uri"])
        if data.is_dir():  # the shared data: ../shared next to the project
            assert data == (ROOT.parent / "shared" / "data" / "cn_daily_2010_2022").resolve()
            check_provider(resolved)
