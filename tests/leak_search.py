"""Where the secrets tests look for a secret's bytes: files and the archives inside them, an
image's own top layer (streamed from `docker save`), live `docker inspect` of the build containers
and their execs, and every file in a Docker volume (the shared cache volume: pip/uv caches, .debs,
built wheels), streamed as a tar from a throwaway container that mounts it read-only. Test helpers
only; they write nothing but the files a positive control plants.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any


class Watcher:
    """Inspects every lambda-builder container (and each exec it runs) while the build runs: the
    build removes its container, so `docker inspect` is taken live, as often as the engine answers."""

    def __init__(self, client: Any) -> None:
        self.api = client.api
        self.seen: dict[str, str] = {}  # id -> the last inspect, as JSON
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for found in self.api.containers(all=True, filters={"label": "org.lambda-builder.container"}):
                    info = self.api.inspect_container(found["Id"])
                    self.seen[found["Id"]] = json.dumps(info)
                    for exec_id in info.get("ExecIDs") or []:
                        self.seen[exec_id] = json.dumps(self.api.exec_inspect(exec_id))
            except Exception:  # removed between listing and inspecting: the next round goes on
                pass
            time.sleep(0.05)


LABEL = {"org.lambda-builder-test": "leak-search"}
MOUNT = "/volume"


def expand(data: bytes) -> Iterator[bytes]:
    """The bytes, and those of every member when they are a zip (wheels: deflated), a tar
    (compressed or not) or a gzip stream."""
    yield data
    buffer = io.BytesIO(data)
    if zipfile.is_zipfile(buffer):
        with zipfile.ZipFile(buffer) as archive:
            for name in archive.namelist():
                yield archive.read(name)
        return
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield handle.read()
        return
    except (tarfile.TarError, EOFError, OSError):
        pass
    try:
        inner = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else None
    except (OSError, EOFError):
        inner = None
    if inner is not None:
        yield inner


def leaks(blobs: dict[str, bytes], values: dict[str, bytes]) -> list[str]:
    """`what in where` for each secret value found in a blob."""
    return [f"{what} in {where}" for where, blob in blobs.items() for what, value in values.items() if value in blob]


class Chunks(io.RawIOBase):
    """A file over an iterator of byte chunks (the engine's archive streams)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.pending = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            self.pending = next(self.chunks, b"")
            if not self.pending:
                return 0
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _with_volume(client: Any, volume: str, image: str, mode: str) -> Any:
    return client.containers.run(
        image, ["sleep", "600"], entrypoint=[], detach=True, network_mode="none", labels=LABEL,
        volumes={volume: {"bind": MOUNT, "mode": mode}},
    )  # fmt: skip


def volume_files(client: Any, volume: str, image: str) -> dict[str, bytes]:
    """Every regular file in `volume` (path inside it -> bytes), read through a throwaway container
    that mounts it read-only and streams it as a tar (`get_archive`), searched here on the host."""
    box = _with_volume(client, volume, image, "ro")
    out: dict[str, bytes] = {}
    try:
        stream, _ = box.get_archive(MOUNT)
        with tarfile.open(fileobj=Chunks(stream), mode="r|") as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    out[member.name] = handle.read()
    finally:
        box.remove(force=True)
    return out


def plant(client: Any, volume: str, image: str, files: dict[str, bytes]) -> None:
    """Write `files` (path inside the volume -> bytes) into it: a positive control's plant."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    box = _with_volume(client, volume, image, "rw")
    try:
        assert box.put_archive(MOUNT, buf.getvalue())
    finally:
        box.remove(force=True)


def top_layer_files(client: Any, image_id: str) -> dict[str, bytes]:
    """The files of an image's last layer, read from `docker save` as it streams: only the one
    layer whose size matches the top history entry is kept, and its digest must be the image's
    last diff id (so it is that layer, not one of the build image's)."""
    top_diff = client.api.inspect_image(image_id)["RootFS"]["Layers"][-1]
    most = 2 * int(client.api.history(image_id)[0]["Size"]) + (16 << 20)  # tar headers and padding on top
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=Chunks(client.api.get_image(image_id)), mode="r|") as saved:
        for member in saved:
            if not member.name.endswith("layer.tar") and not member.name.startswith("blobs/"):
                continue
            handle = saved.extractfile(member)
            if handle is None or member.size > most:
                continue
            data = handle.read()
            if "sha256:" + hashlib.sha256(data).hexdigest() != top_diff:
                continue
            with tarfile.open(fileobj=io.BytesIO(data)) as files:
                for entry in files:
                    content = files.extractfile(entry) if entry.isfile() else None
                    if content is not None:
                        out[f"snapshot:{entry.name}"] = content.read()
    assert out, "the snapshot's own layer was not found in `docker save`, or holds no files"
    return out
