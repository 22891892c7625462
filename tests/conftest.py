"""Shared fixtures: small campaign files for the built-in model, run on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CAMPAIGN = """\
name: tiny
experiment:
  device: cpu
  model: {source: builtin, name: lem-tiny}
  input_tokens: 8
  output_tokens: 8
  num_prompts: 4
  warmup_batches: 1
grid:
  batch_size: [1, 2]
cycles: 1
"""


@pytest.fixture
def tiny_campaign(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CAMPAIGN)
    return path
