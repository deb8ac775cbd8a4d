"""templates/TapStack.yml is what ``iotpipe render --env dev`` gives; UPDATE_GOLDEN=1 regenerates it."""

from __future__ import annotations

import os
from pathlib import Path

from iotpipe.config import load_config
from iotpipe.render import render_template

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "templates" / "TapStack.yml"


def test_committed_template_is_the_current_render() -> None:
    text = render_template(load_config(ROOT / "iotpipe.toml", "dev"))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.read_text(encoding="utf-8") == text, (
        "templates/TapStack.yml is stale: run `make render` (or `make golden`) and commit it")
