"""``[[references]]`` in the configuration: paths and the checks made when profiles load."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_monitor.config import ReferenceFile, load_config
from stream_monitor.errors import ConfigError
from stream_monitor.reference import build_profile, load_profiles


def _write_profile(path: Path, model_id: str, version: str | None) -> None:
    rows = [{"x": float(i % 97), "c": "ab"[i % 2]} for i in range(500)]
    build_profile(rows, model_id=model_id, model_version=version).write(path)


def test_relative_reference_paths_resolve_against_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    _write_profile(conf / "m.profile.json", "m", None)
    (conf / "monitor.toml").write_text(
        'bootstrap_servers = "x:1"\n[[references]]\nmodel_id = "m"\npath = "m.profile.json"\n'
    )
    monkeypatch.chdir(tmp_path)  # elsewhere: a cwd-relative path would not exist here
    cfg = load_config(conf / "monitor.toml")
    assert cfg.references[0].path == conf / "m.profile.json"
    profiles = load_profiles(cfg.references)
    assert set(profiles) == {("m", None)}
    assert profiles[("m", None)].features["x"].type == "numeric"


def test_a_profile_of_another_version_is_refused(tmp_path: Path) -> None:
    _write_profile(tmp_path / "v1.json", "m", "v1")
    ok = load_profiles([ReferenceFile(model_id="m", model_version="v1", path=tmp_path / "v1.json")])
    assert ok[("m", "v1")].model_version == "v1"
    # without a version the entry applies to any version: the profile's own version is fine
    assert load_profiles([ReferenceFile(model_id="m", path=tmp_path / "v1.json")])
    with pytest.raises(ConfigError, match=r"version 'v1'.*configured for version 'v2'"):
        load_profiles([ReferenceFile(model_id="m", model_version="v2", path=tmp_path / "v1.json")])
