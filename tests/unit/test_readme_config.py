"""The configuration example in README.md is valid configuration."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from stream_monitor.config import MonitorConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_toml_example_validates() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no TOML example"
    for block in blocks:
        cfg = MonitorConfig.model_validate(tomllib.loads(block))
        assert cfg.bootstrap_servers
    first = MonitorConfig.model_validate(tomllib.loads(blocks[0]))
    assert first.drift.weight("any-model", "amount") == 3.0
    assert first.references[0].model_id == "fraud-detector"
