"""`lambda-builder image` hands every option to ship.container_image.image_from_zip by name (the
CLI lists them once, in its decorators): a renamed option fails here, not at a user's push."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from builder.cli.ship import image
from builder.ship import container_image


def test_every_option_reaches_image_from_zip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def recorded(zip_path: Path, base: str | None, **kwargs: Any) -> dict[str, Any]:
        seen.update(zip_path=zip_path, base=base, **kwargs)
        return {"image": "t:1", "id": "sha256:" + "0" * 64, "base": base}

    monkeypatch.setattr(container_image, "image_from_zip", recorded)
    args = ["z.zip", "--base", "b", "--tag", "t", "--handler", "a.h", "--push", "u", "--profile", "p", "--region", "r"]
    done = CliRunner().invoke(image, [*args, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["image"] == "t:1"
    assert {k: v for k, v in seen.items() if k != "log"} == {
        "zip_path": Path("z.zip"), "base": "b", "tag": "t", "handler": "a.h", "push_uri": "u", "profile": "p",
        "region": "r",
    }
    done = CliRunner().invoke(image, ["z.zip"])
    assert done.exit_code == 0 and done.output.startswith("built t:1 ") and seen["tag"] is None
