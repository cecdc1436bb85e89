"""Data shipped with the package: the recipe schema, platform policies, Dockerfiles of the local
image family and the compile hook copied into build containers. No code of the pipeline.

Resources: data files every stage may read (schema, policies, Dockerfiles, the compile hook); no stage logic.
"""

from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
