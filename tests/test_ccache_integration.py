"""ccache where it pays, in a real build container: a recipe's C sources and a local project after
an edit come back from it for the files the edit did not touch; a downloaded sdist never goes
through it (its wheel is cached whole)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_greet, run_cli

pytestmark = pytest.mark.docker

# libgreet in two files, each compiled to its own object with a dependency file, as automake does
MAKEFILE = """\
PREFIX ?= /usr/local
CC ?= cc
CFLAGS ?= -O2
OBJS = greet.o extra.o
all: libgreet.so.1.0.0
%.o: %.c
\t$(CC) $(CFLAGS) -fPIC -MD -MP -MF $*.d -c -o $@ $<
libgreet.so.1.0.0: $(OBJS)
\t$(CC) -shared -Wl,-soname,libgreet.so.1 -o $@ $(OBJS)
install: libgreet.so.1.0.0
\tmkdir -p $(PREFIX)/lib $(PREFIX)/include
\tcp libgreet.so.1.0.0 $(PREFIX)/lib/
\tln -sf libgreet.so.1.0.0 $(PREFIX)/lib/libgreet.so.1
\tln -sf libgreet.so.1 $(PREFIX)/lib/libgreet.so
\tcp greet.h $(PREFIX)/include/
-include $(OBJS:.o=.d)
"""
EXTRA = "int greet_extra(int x) { return x * 2; }\n"


@pytest.fixture()
def volume(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A cache volume of this test's own, so its ccache counts are this test's builds only."""
    name = f"lb-test-ccache-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("LAMBDA_BUILDER_CACHE_VOLUME", name)
    yield f"{name}-x86_64"
    for found in client.volumes.list(filters={"name": f"{name}-x86_64"}):
        found.remove(force=True)


def ccache_stats(client: Any, image: str, volume: str) -> dict[str, int]:
    out = client.containers.run(
        image, ["sh", "-c", "CCACHE_DIR=/lb/cache/ccache ccache --print-stats"],
        volumes={volume: {"bind": "/lb/cache", "mode": "rw"}}, remove=True,
    ).decode()  # fmt: skip
    stats = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return {k: int(v) for k, v in stats.items() if v.strip().isdigit()}


def hits(stats: dict[str, int]) -> int:
    return stats.get("direct_cache_hit", 0) + stats.get("preprocessed_cache_hit", 0)


def test_an_edit_recompiles_only_the_edited_file(
    local_images: dict[str, str], client: Any, volume: str, tmp_path: Path, cache_dir: Path
) -> None:
    recipe = copy_greet(tmp_path)
    lib = recipe.parent / "libgreet"
    (lib / "Makefile").write_text(MAKEFILE)
    (lib / "extra.c").write_text(EXTRA)
    out = tmp_path / "dist"
    first = run_cli("build", str(recipe), "--out", str(out), "-q")
    assert first.returncode == 0, first.stderr
    cold = ccache_stats(client, local_images["build"], volume)
    # greet.c, extra.c and the local project's greet_ext.c: all misses
    assert hits(cold) == 0 and cold.get("cache_miss") == 3, cold
    source = lib / "greet.c"
    source.write_text(source.read_text().replace('"hello, %s"', '"hello again, %s"'))
    second = run_cli("build", str(recipe), "--out", str(out), "-q")
    assert second.returncode == 0, second.stderr
    warm = ccache_stats(client, local_images["build"], volume)
    # only greet.c compiled again; extra.c and greet_ext.c came from ccache
    assert warm.get("cache_miss") == 4 and hits(warm) == 2, warm


def test_a_downloaded_sdist_skips_ccache(
    local_images: dict[str, str], client: Any, volume: str, tmp_path: Path, cache_dir: Path
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: sdist\nversion: 1.0.0\nruntimes: [python3.11]\narchitectures: [x86_64]\nlayout: function\n"
        "python:\n  requirements: [markupsafe==3.0.2]\n  build_from_source: [markupsafe]\n"
        "tests:\n  imports: [markupsafe._speedups]\n"
    )
    done = run_cli("build", str(recipe), "--out", str(tmp_path / "dist"), "-q")
    assert done.returncode == 0, done.stderr
    stats = ccache_stats(client, local_images["build"], volume)
    assert hits(stats) == 0 and stats.get("cache_miss", 0) == 0, stats
