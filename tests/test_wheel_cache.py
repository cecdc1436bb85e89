"""pip's wheel cache is keyed by what a built wheel depends on besides its sdist; downloads stay shared."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from builder.pipeline.context import CACHE, wheel_cache_dir
from builder.pipeline.scripts import PIP_CACHE_LINKS


def test_wheel_cache_folder_follows_image_arch_and_compiler_flags() -> None:
    base = {"CFLAGS": "-O2", "CC": "cc"}
    first = wheel_cache_dir("sha256:aaa", "x86_64", base)
    assert first.startswith(f"{CACHE}/pip/") and first == wheel_cache_dir("sha256:aaa", "x86_64", dict(base))
    # one shared pip cache served a wheel built with other flags, on another image or for another target
    assert first != wheel_cache_dir("sha256:aaa", "x86_64", {**base, "CFLAGS": "-O2 -g0"})
    assert first != wheel_cache_dir("sha256:bbb", "x86_64", base)
    assert first != wheel_cache_dir("sha256:aaa", "arm64", base)
    assert first != wheel_cache_dir("sha256:aaa", "x86_64", {**base, "LDSHARED": "/opt/lb-cross/bin/cc -shared"})
    assert first == wheel_cache_dir("sha256:aaa", "x86_64", {**base, "CPU_COUNT": "8"})  # not an input


def test_every_key_shares_the_download_caches(tmp_path: Path) -> None:
    for key in ("k1", "k2"):
        env = {**os.environ, "PIP_CACHE_DIR": str(tmp_path / "pip" / key)}
        env.pop("PIP_NO_CACHE_DIR", None)
        subprocess.run(["sh", "-c", "set -e\n" + PIP_CACHE_LINKS], env=env, check=True)
    for name in ("http", "http-v2"):
        assert (tmp_path / "pip" / "k1" / name).resolve() == (tmp_path / "pip" / "shared" / name)
        assert (tmp_path / "pip" / "k2" / name).resolve() == (tmp_path / "pip" / "shared" / name)
    (tmp_path / "pip" / "k1" / "http-v2" / "x").write_text("downloaded once")
    assert (tmp_path / "pip" / "k2" / "http-v2" / "x").read_text() == "downloaded once"
