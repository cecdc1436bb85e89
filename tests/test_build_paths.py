"""pip's random build folders are mapped to fixed names for the compiler (reproducible bytes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from builder.resources import parallel_cc


def test_pip_build_env_and_unpacked_sdist_get_fixed_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sdist = tmp_path / "pip-install-k2j3h4" / "psycopg2_8f0e1d2c"
    sdist.mkdir(parents=True)
    monkeypatch.chdir(sdist)
    monkeypatch.setattr(sys, "path", ["/tmp/pip-build-env-ab12cd/site", "/usr/lib/python3.11"])
    assert parallel_cc.build_path_maps() == [
        (str(sdist), "/lb/pip-src"),
        ("/tmp/pip-build-env-ab12cd", "/lb/pip-build-env"),
    ]


def test_no_pip_folder_no_map(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["/usr/lib/python3.11"])
    monkeypatch.delenv("CPPFLAGS", raising=False)
    parallel_cc.map_build_paths()
    assert parallel_cc.build_path_maps() == []
    assert "CPPFLAGS" not in __import__("os").environ


def test_cache_volume_is_per_arch_and_can_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from builder import paths
    from builder.errors import UserError

    monkeypatch.delenv("LAMBDA_BUILDER_CACHE_VOLUME", raising=False)
    assert paths.cache_volume("arm64") == "lambda-builder-cache-arm64"
    monkeypatch.setenv("LAMBDA_BUILDER_CACHE_VOLUME", "ci-job-7")
    assert paths.cache_volume("x86_64") == "ci-job-7-x86_64"
    monkeypatch.setenv("LAMBDA_BUILDER_CACHE_VOLUME", "../etc")
    with pytest.raises(UserError, match="LAMBDA_BUILDER_CACHE_VOLUME"):
        paths.cache_volume("x86_64")


@pytest.mark.parametrize(
    ("folder", "skipped"),
    [
        ("pip-install-k2j3h4/psycopg2_8f0e1d2c", True),  # pip's unpacked sdist
        ("pip-req-build-x1y2z3", True),  # pip's checkout of a git or URL requirement
        ("lb/cache/uv/0123abcd/sdists-v9/pypi/psycopg2/2.9.10/AbCd/src", True),  # uv's unpacked sdist
        ("lb/cache/uv/0123abcd/git-v0/checkouts/5f6e/1a2b3c", True),  # uv's git checkout
        ("lb/pysrc/0", False),  # a local project: edited between builds, ccache pays there
        ("pip-install-k2j3h4", False),  # pip's folder itself is not a build
    ],
)
def test_ccache_is_off_for_downloaded_sources_only(
    folder: str, skipped: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    where = tmp_path / folder
    where.mkdir(parents=True)
    monkeypatch.chdir(where)
    monkeypatch.delenv("CCACHE_DISABLE", raising=False)
    parallel_cc.skip_ccache()
    assert ("CCACHE_DISABLE" in __import__("os").environ) is skipped
