"""Data shipped with the package: the recipe schema, platform policies, Dockerfiles of the local
image family and the compile hook copied into build containers. No code of the pipeline."""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
