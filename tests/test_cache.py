"""The build and prefix caches, on real files and real processes: hits, misses, crashes, races."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.artifact import pack
from builder.artifact.manifest import manifest_path
from builder.cache.folders import TMP_PREFIX, CacheMiss
from builder.cache.keys import cache_key, local_requirement_digests, prefix_key, sources_canonical
from builder.cache.store import BuildCache, CacheEntry, PrefixCache
from builder.pipeline.context import build_env
from builder.pipeline.plan import runtime_of
from builder.recipe import loader
from builder.recipe.model import Recipe

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FORK = multiprocessing.get_context("fork")  # children inherit the per-test LAMBDA_BUILDER_CACHE_DIR

KEY_PARTS: dict[str, Any] = {
    "recipe_canonical": '{"name":"greet","version":"1.0.0"}',
    "source_digests": {"libgreet": "a" * 64, "zlib": "b" * 64},
    "local_requirement_digests": {"/src/greet_ext": "c" * 64},
    "image_id": "sha256:" + "d" * 64,
    "runtime": "python3.11",
    "arch": "x86_64",
    "mode": "emulate",
    "tool": "0.1.0",
}


def artifact(out: Path, stem: str = "greet-1.0.0-python3.11-x86_64", payload: bytes = b"hello") -> Path:
    """A real zip + manifest written by pack.package, as a build leaves them."""
    stage = out.parent / f"stage-{stem}-{len(payload)}"
    (stage / "pkg").mkdir(parents=True, exist_ok=True)
    (stage / "pkg" / "__init__.py").write_bytes(payload)
    zip_path, _ = pack.package(stage, out, stem, {"name": "greet", "runtime": "python3.11"})
    return zip_path


def key(n: int = 0) -> str:
    return cache_key(**{**KEY_PARTS, "tool": f"test-{n}"})


@pytest.fixture()
def cache(cache_dir: Path) -> BuildCache:
    return BuildCache()


def test_default_roots_live_in_the_user_cache(cache_dir: Path) -> None:
    assert BuildCache().root == cache_dir / "builds"
    assert PrefixCache().root == cache_dir / "prefixes"


def test_hit_after_store(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "dist")
    assert cache.lookup(key()) is None
    stored = cache.store(key(), zip_path, manifest_path(zip_path))
    hit = cache.lookup(key())
    assert isinstance(hit, CacheEntry)
    assert hit.zip_path.read_bytes() == zip_path.read_bytes()
    assert hit.manifest == json.loads(manifest_path(zip_path).read_text())
    assert hit.created == stored.created and hit.created <= time.time()
    assert hit.size > 0
    assert [e.key for e in cache.list_entries()] == [key()]
    assert cache.total_bytes() >= hit.size


@pytest.mark.parametrize("part,changed", [
    ("recipe_canonical", '{"name":"greet","version":"1.0.1"}'),
    ("source_digests", {"libgreet": "a" * 64, "zlib": "e" * 64}),
    ("local_requirement_digests", {"/src/greet_ext": "f" * 64}),
    ("image_id", "sha256:" + "0" * 64),
    ("runtime", "python3.12"),
    ("arch", "arm64"),
    ("mode", "cross"),
    ("tool", "0.2.0"),
])
def test_miss_when_any_key_part_changes(cache: BuildCache, tmp_path: Path, part: str, changed: Any) -> None:
    zip_path = artifact(tmp_path / "dist")
    base = cache_key(**KEY_PARTS)
    cache.store(base, zip_path, manifest_path(zip_path))
    other = cache_key(**{**KEY_PARTS, part: changed})
    assert other != base
    assert cache.lookup(other) is None
    assert cache.lookup(base) is not None


def test_key_is_canonical() -> None:
    """Mapping order is not content: the same inputs give the same key in any order."""
    reordered = {**KEY_PARTS, "source_digests": dict(reversed(list(KEY_PARTS["source_digests"].items())))}
    assert cache_key(**reordered) == cache_key(**KEY_PARTS)
    assert len(cache_key(**KEY_PARTS)) == 64


def test_keys_are_never_paths(cache: BuildCache) -> None:
    with pytest.raises(ValueError):
        cache.lookup("../../etc")


def test_restore_writes_identical_bytes_and_is_idempotent(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    entry = cache.store(key(), zip_path, manifest_path(zip_path))
    out = tmp_path / "dist"
    stem = zip_path.name.removesuffix(".zip")
    restored = cache.restore(entry, out, stem)
    assert restored == out / zip_path.name
    assert restored.read_bytes() == zip_path.read_bytes()
    assert manifest_path(restored).read_bytes() == manifest_path(zip_path).read_bytes()

    old = 1_000_000_000
    os.utime(restored, (old, old))
    os.utime(manifest_path(restored), (old, old))
    assert cache.restore(entry, out, stem) == restored
    assert restored.stat().st_mtime == old, "identical bytes must not be rewritten"
    assert manifest_path(restored).stat().st_mtime == old
    assert sorted(p.name for p in out.iterdir()) == sorted([restored.name, manifest_path(restored).name])


def test_restore_replaces_different_bytes_atomically(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    entry = cache.store(key(), zip_path, manifest_path(zip_path))
    out = tmp_path / "dist"
    stale = artifact(out, payload=b"an older build")
    assert stale.read_bytes() != zip_path.read_bytes()
    restored = cache.restore(entry, out, zip_path.name.removesuffix(".zip"))
    assert restored.read_bytes() == zip_path.read_bytes()
    assert json.loads(manifest_path(restored).read_text())["sha256"] == entry.manifest["sha256"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temp files left in out_dir"


def test_restore_under_another_stem_names_the_zip_in_its_manifest(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    entry = cache.store(key(), zip_path, manifest_path(zip_path))
    restored = cache.restore(entry, tmp_path / "dist", "renamed")
    assert json.loads(manifest_path(restored).read_text())["zip"] == "renamed.zip"


def test_restore_of_a_vanished_entry_is_a_miss(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    entry = cache.store(key(), zip_path, manifest_path(zip_path))
    cache.prune(all=True)
    with pytest.raises(CacheMiss):
        cache.restore(entry, tmp_path / "dist", "x")
    assert not (tmp_path / "dist" / "x.zip").exists()


def test_store_refuses_a_zip_its_manifest_contradicts(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    with zip_path.open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ValueError):
        cache.store(key(), zip_path, manifest_path(zip_path))
    assert cache.lookup(key()) is None
    assert os.listdir(cache.root) == []


def test_hand_made_temp_folder_is_ignored_and_pruned(cache: BuildCache, tmp_path: Path) -> None:
    """What a crash between writing and renaming leaves: a temp folder with a partial entry."""
    zip_path = artifact(tmp_path / "built")
    torn = cache.root / f"{TMP_PREFIX}{key()}-crashed"
    torn.mkdir()
    (torn / "artifact.zip").write_bytes(zip_path.read_bytes()[:10])
    assert cache.lookup(key()) is None
    assert cache.list_entries() == []
    result = cache.prune()
    assert result.debris == 1 and result.removed == 0 and result.bytes > 0
    assert os.listdir(cache.root) == []


def test_torn_entry_folder_is_a_miss_and_removed(cache: BuildCache, tmp_path: Path) -> None:
    """Even a key-named folder with pieces missing (e.g. restored by a backup tool) never hits."""
    zip_path = artifact(tmp_path / "built")
    cache.store(key(), zip_path, manifest_path(zip_path))
    (cache.root / key() / "meta.json").unlink()
    assert cache.lookup(key()) is None
    assert not (cache.root / key()).exists()


def _store_from_fifo(root: str, entry_key: str, fifo: str, manifest: str) -> None:
    BuildCache(Path(root)).store(entry_key, Path(fifo), Path(manifest))


def test_killed_mid_store_leaves_no_entry_and_prune_cleans(cache: BuildCache, tmp_path: Path) -> None:
    """SIGKILL a real storing process halfway through a big zip (fed through a FIFO so the
    moment is deterministic): no entry appears, its lock is free, and prune removes the debris."""
    zip_path = artifact(tmp_path / "built")
    manifest = json.loads(manifest_path(zip_path).read_text())
    manifest.update(zipped_size=64 << 20, sha256="0" * 64)  # the big zip the child believes it gets
    manifest_file = tmp_path / "big.manifest.json"
    manifest_file.write_text(json.dumps(manifest))
    fifo = tmp_path / "big.zip"
    os.mkfifo(fifo)
    child = FORK.Process(target=_store_from_fifo, args=(str(cache.root), key(), str(fifo), str(manifest_file)))
    child.start()
    try:
        with open(fifo, "wb") as writer:
            writer.write(os.urandom(8 << 20))
            writer.flush()
            deadline = time.monotonic() + 30
            while not _partial_zip_written(cache.root):
                assert time.monotonic() < deadline, "the child never started writing"
                time.sleep(0.01)
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
    except BrokenPipeError:
        pass
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == -signal.SIGKILL
    assert any(name.startswith(TMP_PREFIX) for name in os.listdir(cache.root)), "the crash left debris"
    assert cache.lookup(key()) is None
    assert cache.list_entries() == []
    result = cache.prune()  # takes the key's lock: proves the dead child's lock was released
    assert result.debris == 1 and result.bytes >= 1 << 20
    assert os.listdir(cache.root) == []
    cache.store(key(), zip_path, manifest_path(zip_path))
    assert cache.lookup(key()) is not None


def _partial_zip_written(root: Path) -> bool:
    for folder in root.glob(f"{TMP_PREFIX}*"):
        part = folder / "artifact.zip"
        if part.exists() and part.stat().st_size >= 1 << 20:
            return True
    return False


def test_corrupted_zip_is_a_miss_and_removed(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    entry = cache.store(key(), zip_path, manifest_path(zip_path))
    data = bytearray(entry.zip_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes: bit rot
    entry.zip_path.write_bytes(bytes(data))
    assert cache.lookup(key()) is None
    assert not entry.folder.exists()
    assert os.listdir(cache.root) == []


def _aged(cache: BuildCache, entry_key: str, days_ago: float) -> None:
    when = time.time() - days_ago * 86400
    os.utime(cache.root / entry_key, (when, when))


def test_prune_by_age_uses_last_use(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    for n in range(3):
        cache.store(key(n), zip_path, manifest_path(zip_path))
    _aged(cache, key(0), 10)
    _aged(cache, key(1), 10)
    assert cache.lookup(key(1)) is not None  # a hit makes it recent again
    result = cache.prune(older_than_days=5)
    assert result.removed == 1 and result.bytes > 0
    assert {e.key for e in cache.list_entries()} == {key(1), key(2)}


def test_prune_by_size_removes_least_recently_used(cache: BuildCache, tmp_path: Path) -> None:
    for n in range(3):
        zip_path = artifact(tmp_path / f"built{n}", payload=os.urandom(50_000))
        cache.store(key(n), zip_path, manifest_path(zip_path))
        _aged(cache, key(n), 3 - n)  # key(0) oldest, key(2) newest
    sizes = {e.key: e.size for e in cache.list_entries()}
    result = cache.prune(max_bytes=sizes[key(2)])
    assert result.removed == 2
    assert result.bytes >= sizes[key(0)] + sizes[key(1)]
    assert [e.key for e in cache.list_entries()] == [key(2)]
    assert cache.prune(max_bytes=sizes[key(2)]).removed == 0


def test_prune_all(cache: BuildCache, tmp_path: Path) -> None:
    zip_path = artifact(tmp_path / "built")
    for n in range(2):
        cache.store(key(n), zip_path, manifest_path(zip_path))
    assert cache.prune(all=True).removed == 2
    assert cache.list_entries() == [] and os.listdir(cache.root) == []


def _store_after(root: str, entry_key: str, zip_path: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    entry = BuildCache(Path(root)).store(entry_key, Path(zip_path), manifest_path(Path(zip_path)))
    out.put(entry.manifest["sha256"])


def test_concurrent_stores_of_one_key_end_with_one_valid_entry(cache: BuildCache, tmp_path: Path) -> None:
    zips = [artifact(tmp_path / f"built{n}", payload=b"x" * 2_000_000) for n in range(2)]
    barrier = FORK.Barrier(2)
    results = FORK.Queue()
    children = [FORK.Process(target=_store_after, args=(str(cache.root), key(), str(z), barrier, results))
                for z in zips]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    sha = json.loads(manifest_path(zips[0]).read_text())["sha256"]
    assert [results.get(timeout=5), results.get(timeout=5)] == [sha, sha]
    assert os.listdir(cache.root) == [key()], "exactly one entry, no debris"
    hit = cache.lookup(key())
    assert hit is not None and hit.zip_path.read_bytes() == zips[0].read_bytes()


# ------------------------------------------------------------------------------ prefix cache


def prefix_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = os.urandom(300_000)
        info = tarfile.TarInfo("prefix/lib/libgreet.so.1")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def chunked(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


PREFIX_PARTS: dict[str, Any] = {
    "recipe_sources_part": "[]",
    "source_digests_in_order": ["a" * 64],
    "system_packages": {"apt": ["zlib1g-dev"]},
    "environment": {"PREFIX": "/lb/prefix", "CPU_COUNT": "8"},
    "image_id": "sha256:" + "d" * 64,
    "arch": "x86_64",
    "mode": "emulate",
    "tool": "0.1.0",
}


def test_prefix_put_get_round_trip(cache_dir: Path) -> None:
    prefixes = PrefixCache()
    pkey = prefix_key(**PREFIX_PARTS)
    assert prefixes.get(pkey) is None
    data = prefix_tar()
    path = prefixes.put(pkey, chunked(data))
    assert path.read_bytes() == data
    assert prefixes.get(pkey) == path
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["prefix/lib/libgreet.so.1"]
    assert prefixes.put(pkey, iter(())) == path, "an existing entry is kept; the stream is not needed"
    assert path.read_bytes() == data


def test_prefix_stream_failure_stores_nothing(cache_dir: Path) -> None:
    prefixes = PrefixCache()
    pkey = prefix_key(**PREFIX_PARTS)

    def dies() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise ConnectionError("the container went away")

    with pytest.raises(ConnectionError):
        prefixes.put(pkey, dies())
    assert prefixes.get(pkey) is None
    assert os.listdir(prefixes.root) == []


def test_corrupted_prefix_is_a_miss_and_removed(cache_dir: Path) -> None:
    prefixes = PrefixCache()
    pkey = prefix_key(**PREFIX_PARTS)
    path = prefixes.put(pkey, chunked(prefix_tar()))
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    assert prefixes.get(pkey) is None
    assert os.listdir(prefixes.root) == []


@pytest.mark.parametrize("part,changed", [
    ("recipe_sources_part", '[{"build":["make"]}]'),
    ("source_digests_in_order", ["b" * 64]),
    ("system_packages", {"apt": ["zlib1g-dev", "libpq-dev"]}),
    ("environment", {"PREFIX": "/lb/prefix", "CPU_COUNT": "8", "CFLAGS": "-O3"}),
    ("image_id", "sha256:" + "0" * 64),
    ("arch", "arm64"),
    ("mode", "cross"),
    ("tool", "0.2.0"),
])
def test_prefix_key_changes_with_what_sources_see(part: str, changed: Any) -> None:
    assert prefix_key(**{**PREFIX_PARTS, part: changed}) != prefix_key(**PREFIX_PARTS)


def test_prefix_key_ignores_cpu_count() -> None:
    """Only parallelism: a cache filled on an 8-core laptop serves a 2-core CI runner."""
    other = {**PREFIX_PARTS, "environment": {"PREFIX": "/lb/prefix", "CPU_COUNT": "2"}}
    assert prefix_key(**other) == prefix_key(**PREFIX_PARTS)


def _recipe_copy(tmp_path: Path, name: str, requirements_yaml: str) -> Recipe:
    folder = tmp_path / name
    shutil.copytree(FIXTURES / "greet", folder)
    text = (folder / "recipe.yaml").read_text()
    head, _, tail = text.partition("python:\n  requirements:\n    - ./greet_ext\n")
    (folder / "recipe.yaml").write_text(head + requirements_yaml + tail)
    return loader.load(folder / "recipe.yaml")


def test_python_requirements_change_only_the_build_key(tmp_path: Path) -> None:
    """Issue 5 item 2: editing python requirements reuses the compiled sources."""
    one = _recipe_copy(tmp_path, "one", "python:\n  requirements:\n    - ./greet_ext\n")
    two = _recipe_copy(tmp_path, "two", "python:\n  requirements:\n    - ./greet_ext\n    - six==1.16.0\n")
    runtime = runtime_of("python3.11")

    def pkey(r: Recipe) -> str:
        return prefix_key(recipe_sources_part=sources_canonical(r), source_digests_in_order=["a" * 64],
                          system_packages=r.system_packages, environment=build_env(r, runtime, "x86_64"),
                          image_id="sha256:" + "d" * 64, arch="x86_64", mode="emulate", tool="0.1.0")

    def bkey(r: Recipe) -> str:
        return cache_key(**{**KEY_PARTS, "recipe_canonical": r.canonical,
                            "local_requirement_digests": local_requirement_digests(r.python.requirements)})

    assert pkey(one) == pkey(two), "moved checkout + new requirement must reuse the prefix"
    assert bkey(one) != bkey(two)


def test_local_requirement_content_changes_the_build_key(tmp_path: Path) -> None:
    r = _recipe_copy(tmp_path, "one", "python:\n  requirements:\n    - ./greet_ext\n")
    before = local_requirement_digests(r.python.requirements)
    assert list(before) == [str(tmp_path / "one" / "greet_ext")]
    some_file = next(p for p in (tmp_path / "one" / "greet_ext").rglob("*") if p.is_file())
    some_file.write_text(some_file.read_text() + "\n# edited\n")
    assert local_requirement_digests(r.python.requirements) != before
