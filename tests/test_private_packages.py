"""Private packages end to end, against real servers (tests/private_servers.py): a pypiserver index
behind htpasswd serving an sdist with a C extension and a wheel found nowhere else, a URL source
behind basic auth (an Authorization header secret), git+http with a token and git+ssh with a key.
One build shares the assertions; then every place a secret could leak is searched for its bytes.
"""

from __future__ import annotations

import io
import json
import re
import secrets as pysecrets
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import private_servers
from tests.conftest import our_containers, run_cli

pytestmark = pytest.mark.docker

RECIPE = """\
name: private
version: "1.0"
runtimes: [python3.11]
system_packages:
  apt: [openssh-client]
secrets:
  - id: index
    url: http://{ip}:8080/
  - id: files
    url: http://{ip}:8081/files/
    auth: header
  - id: gittoken
    url: http://{ip}:8081/git/
  - id: deploykey
    ssh: {ip}
    known_hosts: "{known_hosts}"
sources:
  - name: privsrc
    url: http://{ip}:8081/files/privsrc-1.0.tar.gz
    sha256: {sha}
    build:
      - test -s /run/secrets/deploykey && test "$(stat -c %a /run/secrets/deploykey)" = 400
      - cat /run/secrets/gittoken /run/secrets/files; echo  # a careless step: its output shows *** instead
      - mkdir -p $PREFIX/lib && cc -shared -fPIC -o $PREFIX/lib/libprivsrc.so privsrc.c
python:
  index_url: http://{ip}:8080/simple/
  build_from_source: [lbprivext]
  build_isolation: false
  requirements:
    - lbprivext==1.0
    - lbprivwheel==1.0
    - lbgitpkg @ git+http://{ip}:8081/git/lbgitpkg.git@v1
    - lbsshpkg @ git+ssh://git@{ip}/srv/git/lbsshpkg.git@main
"""


# the index alone: no git ref that can move, so this build leaves a no-op stamp to search too
INDEX_ONLY = """\
name: private-index
version: "1.0"
runtimes: [python3.11]
secrets:
  - id: index
    url: http://{ip}:8080/
python:
  index_url: http://{ip}:8080/simple/
  requirements: [lbprivwheel==1.0]
"""


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


@pytest.fixture(scope="module")
def servers(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[private_servers.Servers]:
    yield from private_servers.start(client, tmp_path_factory.mktemp("servers"), pysecrets.token_hex(12))


@pytest.fixture(scope="module")
def build(
    servers: private_servers.Servers,
    client: Any,
    local_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """One build using all four secrets, with the package snapshot committed during it."""
    work = tmp_path_factory.mktemp("private")
    cache = work / "cache"
    recipe = work / "recipe.yaml"
    recipe.write_text(
        RECIPE.format(ip=servers.ip, known_hosts=servers.known_hosts, sha=servers.files_sha256)
    )
    values = {
        "index": servers.index_user,
        "files": servers.files_header,
        "gittoken": servers.git_user,
        "deploykey": servers.ssh_key.decode(),
    }
    for name, value in values.items():
        (work / name).write_text(value)
    env = {"LAMBDA_BUILDER_CACHE_DIR": str(cache), "NO_PROXY": servers.ip, "no_proxy": servers.ip}
    with pytest.MonkeyPatch.context() as mp:
        # a package set seen before is snapshotted: mark it, so this very build commits the snapshot
        mp.setenv("LAMBDA_BUILDER_CACHE_DIR", str(cache))
        from builder.engine import images
        from builder.pipeline.build import _packages_image
        from builder.recipe.loader import load

        image = images.ensure_local("build", "bookworm", "x86_64")
        for _ in range(3):
            ready, found, snapshot = _packages_image(load(recipe), image, True)
            if found:  # left by an earlier run: this build must make it again
                client.images.remove(ready.name, force=True)
            elif snapshot:
                break
    assert snapshot is not None
    before = {i.id for i in client.images.list(all=True)}
    watcher = Watcher(client)
    watcher.thread.start()
    base = ["build", str(recipe), "--out", str(work / "dist"), "--no-host-pip-config"]
    given = {name: ("--secret", f"id={name},src={work / name}") for name in values}
    result = run_cli(*base, *(a for pair in given.values() for a in pair), env=env)
    small = work / "index-only.yaml"
    small.write_text(INDEX_ONLY.format(ip=servers.ip))
    small_args = ["build", str(small), "--out", str(work / "dist"), "--no-host-pip-config", *given["index"]]
    index_only = run_cli(*small_args, env=env)
    watcher.stop.set()
    watcher.thread.join()
    made = [i for i in client.images.list(all=True) if i.id not in before]
    return {
        "result": result, "index_only": index_only, "work": work, "cache": cache, "snapshot": snapshot, "made": made,
        "containers": watcher.seen, "dist": work / "dist", "base": base, "given": given, "env": env,
    }  # fmt: skip


def test_private_index_url_source_and_git_build(build: dict[str, Any]) -> None:
    result = build["result"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    zip_path = build["dist"] / "private-1.0-python3.11-x86_64.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    assert any(n.startswith("lbprivext/_native") and n.endswith(".so") for n in names), names  # built from the sdist
    assert "lbprivwheel/__init__.py" in names
    assert "lbgitpkg/__init__.py" in names and "lbsshpkg/__init__.py" in names
    assert "lib/libprivsrc.so" in names
    from builder.artifact.manifest import manifest_path

    manifest = json.loads(manifest_path(zip_path).read_text())
    git = manifest["git"]
    assert len(git) == 2 and all(len(commit) == 40 for commit in git.values()), git
    assert any(k.endswith("lbgitpkg.git@v1") for k in git) and any(k.endswith("lbsshpkg.git@main") for k in git)


def _payloads(path: Path) -> Iterator[bytes]:
    """A file's bytes, and those of every member when it is a zip or a tar (compressed or not)."""
    data = path.read_bytes()
    yield data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                yield archive.read(name)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield handle.read()


def _leaks(blobs: dict[str, bytes], values: dict[str, bytes]) -> list[str]:
    return [f"{what} in {where}" for where, blob in blobs.items() for what, value in values.items() if value in blob]


def test_no_secret_anywhere(build: dict[str, Any], servers: private_servers.Servers, client: Any) -> None:
    assert build["result"].returncode == 0
    assert build["index_only"].returncode == 0, build["index_only"].stderr[-3000:]
    values = servers.secret_values
    blobs: dict[str, bytes] = {}
    for run in ("result", "index_only"):
        blobs[f"{run} stdout"] = build[run].stdout.encode()
        blobs[f"{run} stderr"] = build[run].stderr.encode()
    for root in (build["dist"], build["cache"]):  # the zip and manifest; the cache, the no-op stamp
        for path in root.rglob("*"):
            if path.is_file():
                for i, payload in enumerate(_payloads(path)):
                    blobs[f"{path}#{i}"] = payload
    assert any("noop" in name for name in blobs), "the no-op stamp was not written"
    assert build["containers"], "the build container was never seen"
    for ident, inspect in build["containers"].items():  # the build container and each of its execs
        blobs[f"inspect {ident[:12]}"] = inspect.encode()
    kept = re.search(r"kept the installed packages as (\S+) for the next build", build["result"].stdout)
    assert kept, "the build committed no package snapshot"
    snapshot = client.images.get(kept.group(1))
    assert snapshot.id in {i.id for i in build["made"]}, "the package snapshot was not made by this build"
    for image in build["made"]:
        blobs[f"image {image.id}"] = json.dumps([image.attrs, image.history()]).encode()
    # the snapshot's own layer (what the build added to the build image): every file in it
    blobs.update(_top_layer_files(client, snapshot.id))
    assert _leaks(blobs, values) == []


class _Chunks(io.RawIOBase):
    """A file over an iterator of byte chunks (the engine's `docker save` stream)."""

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


def _top_layer_files(client: Any, image_id: str) -> dict[str, bytes]:
    """The files of an image's last layer, read from `docker save` as it streams: only the one
    layer whose size matches the top history entry is kept, and its digest must be the image's
    last diff id (so it is that layer, not one of the build image's)."""
    import hashlib

    top_diff = client.api.inspect_image(image_id)["RootFS"]["Layers"][-1]
    most = 2 * int(client.api.history(image_id)[0]["Size"]) + (16 << 20)  # tar headers and padding on top
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=_Chunks(client.api.get_image(image_id)), mode="r|") as saved:
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


def test_missing_secret_fails_before_any_container(build: dict[str, Any]) -> None:
    before = set(our_containers())
    others = [a for name, pair in build["given"].items() if name != "deploykey" for a in pair]
    result = run_cli(*build["base"], *others, "--no-cache", env=build["env"])
    assert result.returncode == 2, result.stderr
    assert "deploykey" in result.stderr and "--secret id=deploykey" in result.stderr
    assert "Traceback" not in result.stderr
    assert "building private" not in result.stdout  # the line a build logs just before its container starts
    # only this recipe's: other builds on a shared engine come and go meanwhile
    assert {n for n in set(our_containers()) - before if n.startswith("lambda-builder-private-")} == set()


SSH_ONLY = """\
name: private-ssh
version: "1.0"
runtimes: [python3.11]
system_packages:
  apt: [openssh-client]
secrets:
  - id: deploykey
    ssh: {ip}
    known_hosts: "{known_hosts}"
python:
  build_isolation: false
  requirements:
    - lbsshpkg @ git+ssh://git@{ip}/srv/git/lbsshpkg.git@v1
"""


def test_ssh_agent_forwarded_instead_of_a_key(servers: private_servers.Servers, tmp_path: Path) -> None:
    """--ssh NAME: the key stays in the user's agent on this machine; the build container talks to
    the agent through its socket, bound in (a local engine). After the shared build it starts from
    that build's package snapshot."""
    import subprocess

    key = tmp_path / "key"
    key.write_bytes(servers.ssh_key)
    key.chmod(0o600)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.1)
        subprocess.run(["ssh-add", "-q", str(key)], env={"SSH_AUTH_SOCK": str(sock)}, check=True)
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(SSH_ONLY.format(ip=servers.ip, known_hosts=servers.known_hosts))
        out = tmp_path / "dist"
        env = {"LAMBDA_BUILDER_CACHE_DIR": str(tmp_path / "cache"), "NO_PROXY": servers.ip, "no_proxy": servers.ip}
        env["SSH_AUTH_SOCK"] = str(sock)
        result = run_cli("build", str(recipe), "--out", str(out), "--no-host-pip-config", "--ssh", "deploykey", env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        names = zipfile.ZipFile(out / "private-ssh-1.0-python3.11-x86_64.zip").namelist()
        assert "lbsshpkg/__init__.py" in names
        leaks = _leaks({"stdout": result.stdout.encode(), "stderr": result.stderr.encode()}, servers.secret_values)
        assert leaks == []
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_tmpfs_files_never_reach_a_commit(client: Any, local_images: dict[str, str]) -> None:
    """The engine-level guarantee the package snapshot rests on: files written by engine.private
    live in the tmpfs only, so a commit taken while they are there holds none of them, and they
    are gone after `present`."""
    from builder.engine import private
    from builder.engine.container import Container
    from builder.engine.images import ImageRef

    found = client.images.get(local_images["runtime"])
    image = ImageRef(local_images["runtime"], found.id, "x86_64", "local", "bookworm")
    value = pysecrets.token_hex(16).encode()
    tag = f"lambda-builder-test/tmpfs-commit:{pysecrets.token_hex(4)}"
    with Container(image, purpose="tmpfs-test", log=lambda _l: None, private="/run/secrets") as box:
        with private.present(box, "/run/secrets", {"/run/secrets/tok": value}):
            shown = box.run("stat -c '%a %U' /run/secrets/tok; cat /run/secrets/tok", step="read", quiet=True)
            assert shown.splitlines() == ["400 root", value.decode()]
            box.commit(tag, {})
        assert box.run("ls -A /run/secrets", step="after", quiet=True).strip() == ""
        inspect = json.dumps(client.api.inspect_container(box.id)).encode()
    try:
        assert value not in inspect
        listing = client.containers.run(tag, ["sh", "-c", "ls -A /run/secrets; echo end"], entrypoint=[], remove=True)
        assert listing.decode().split() == ["end"]
        assert all(value not in json.dumps(h).encode() for h in client.images.get(tag).history())
    finally:
        client.images.remove(tag, force=True)
