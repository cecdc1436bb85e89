"""Code every function of the example shares, from the layer (/opt/python/shared.py)."""

import os

import yaml


def envelope(body: dict) -> dict:
    """The response shape both functions return; the stage comes from the template's Globals."""
    return {"stage": os.environ.get("STAGE", "local"), "yaml": yaml.__version__, "body": body}
