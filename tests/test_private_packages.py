"""Private packages end to end, against real servers (tests/private_servers.py): a pypiserver index
behind htpasswd serving an sdist with a C extension and a wheel found nowhere else, a URL source
behind basic auth (an Authorization header secret), git+http with a token and git+ssh with a key.
One build shares the assertions, and a git+ line inside a requirements file (and a uv.lock's git
source) is built, its tag moved on the server and built again; then every place a secret could leak
is searched for its bytes, the builds' own cache volume (every file in it) included.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets as pysecrets
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import leak_search, private_servers
from tests.conftest import our_containers, run_cli, uv_lock_with_git

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


# git requirements inside requirement files: an -r include naming a tag, and a uv.lock's git source
GIT_FILES = """\
name: private-gitfile
version: "1.0"
runtimes: [python3.11]
secrets:
  - id: gittoken
    url: http://{ip}:8081/git/
python:
  build_isolation: false
  requirements:
    - {{file: requirements.txt}}
    - {{file: lock/uv.lock}}
"""


def _git_files_builds(servers: private_servers.Servers, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """The git-in-files recipe built, its tag moved on the server, built again; what each made."""
    repo = f"http://{servers.ip}:8081/git"
    (work / "requirements.txt").write_text("-r more/git.txt\n")
    (work / "more").mkdir()
    (work / "more" / "git.txt").write_text(f"lbreqpkg @ git+{repo}/lbreqpkg.git@v1\n")
    (work / "lock").mkdir()
    pyproject = '[project]\nname = "app"\nversion = "0.1"\nrequires-python = ">=3.11"\ndependencies = ["lbgitpkg"]\n'
    (work / "lock" / "pyproject.toml").write_text(pyproject)
    locked = servers.container.exec_run(["git", "-C", "/srv/git/lbgitpkg.git", "rev-parse", "v1^{commit}"])
    lock_commit = locked.output.decode().strip()
    (work / "lock" / "uv.lock").write_text(uv_lock_with_git("lbgitpkg", f"{repo}/lbgitpkg.git", lock_commit))
    recipe = work / "recipe.yaml"
    recipe.write_text(GIT_FILES.format(ip=servers.ip))
    (work / "gittoken").write_text(servers.git_user)
    args = ["build", str(recipe), "--out", str(work / "dist"), "--no-host-pip-config"]
    args += ["--secret", f"id=gittoken,src={work / 'gittoken'}"]
    zip_path = work / "dist" / "private-gitfile-1.0-python3.11-x86_64.zip"
    steps = []
    for moved in (False, True):
        if moved:
            tag_commit = private_servers.move_tag(servers, "lbreqpkg", "v1")
        else:
            found = servers.container.exec_run(["git", "-C", "/srv/git/lbreqpkg.git", "rev-parse", "v1^{commit}"])
            tag_commit = found.output.decode().strip()
        step: dict[str, Any] = {"run": run_cli(*args, env=env), "tag_commit": tag_commit}
        if step["run"].returncode == 0:
            from builder.artifact.manifest import manifest_path

            step["manifest"] = json.loads(manifest_path(zip_path).read_text())
            step["init"] = zipfile.ZipFile(zip_path).read("lbreqpkg/__init__.py").decode()
        from builder.cache.store import BuildCache

        entries = BuildCache(Path(env["LAMBDA_BUILDER_CACHE_DIR"]) / "builds").list_entries()
        step["keys"] = {e.key for e in entries if e.manifest.get("name") == "private-gitfile"}
        steps.append(step)
    return {"steps": steps, "lock_commit": lock_commit, "dist": work / "dist"}


@pytest.fixture(scope="module")
def servers(client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[private_servers.Servers]:
    yield from private_servers.start(client, tmp_path_factory.mktemp("servers"), pysecrets.token_hex(12))


@pytest.fixture(scope="module")
def build(
    servers: private_servers.Servers,
    client: Any,
    local_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """One build using all four secrets, with the package snapshot committed during it; a small
    one with the index alone; the git-in-files recipe twice. Their own cache volume, removed after."""
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
    # a cache volume of their own, so the search reads every file these builds left there and nothing else
    env["LAMBDA_BUILDER_CACHE_VOLUME"] = f"lbtest-private-{pysecrets.token_hex(4)}"
    volume = f"{env['LAMBDA_BUILDER_CACHE_VOLUME']}-x86_64"
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
    watcher = leak_search.Watcher(client)
    watcher.thread.start()
    base = ["build", str(recipe), "--out", str(work / "dist"), "--no-host-pip-config"]
    given = {name: ("--secret", f"id={name},src={work / name}") for name in values}
    result = run_cli(*base, *(a for pair in given.values() for a in pair), env=env)
    small = work / "index-only.yaml"
    small.write_text(INDEX_ONLY.format(ip=servers.ip))
    small_args = ["build", str(small), "--out", str(work / "dist"), "--no-host-pip-config", *given["index"]]
    index_only = run_cli(*small_args, env=env)
    git_files = _git_files_builds(servers, tmp_path_factory.mktemp("gitfiles"), env)
    watcher.stop.set()
    watcher.thread.join()
    made = [i for i in client.images.list(all=True) if i.id not in before]
    try:
        yield {
            "result": result, "index_only": index_only, "work": work, "cache": cache, "snapshot": snapshot,
            "made": made, "containers": watcher.seen, "dist": work / "dist", "base": base, "given": given, "env": env,
            "volume": volume, "git_files": git_files,
        }  # fmt: skip
    finally:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(volume).remove(force=True)


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


def test_git_lines_in_requirement_files_are_resolved_pinned_and_keyed(build: dict[str, Any]) -> None:
    """A tag named in an -r include resolves to its commit in the build container (with the token),
    pip installs that commit, the manifest names it; a uv.lock's git source keeps its locked commit.
    The tag moved on the server: the next build is a new build (a new key), not a cache hit."""
    git_files = build["git_files"]
    first, moved = git_files["steps"]
    for step in (first, moved):
        assert step["run"].returncode == 0, step["run"].stdout[-3000:] + step["run"].stderr[-3000:]
    assert first["tag_commit"] != moved["tag_commit"]
    for step in (first, moved):
        git = step["manifest"]["git"]
        assert [c for k, c in git.items() if k.endswith("/lbreqpkg.git@v1")] == [step["tag_commit"]], git
        lock_commit = git_files["lock_commit"]
        assert [c for k, c in git.items() if k.endswith(f"/lbgitpkg.git@{lock_commit}")] == [lock_commit], git
    assert first["init"] == "NAME = 'lbreqpkg'\n" and moved["init"] == "NAME = 'moved'\n"
    assert "reused the cached build" not in moved["run"].stdout
    assert len(first["keys"]) == 1 and len(moved["keys"]) == 2, (first["keys"], moved["keys"])


def test_no_secret_anywhere(
    build: dict[str, Any], servers: private_servers.Servers, client: Any, local_images: dict[str, str]
) -> None:
    assert build["result"].returncode == 0
    assert build["index_only"].returncode == 0, build["index_only"].stderr[-3000:]
    values = servers.secret_values
    blobs: dict[str, bytes] = {}
    runs = {"result": build["result"], "index_only": build["index_only"]}
    runs.update({f"git files {i}": step["run"] for i, step in enumerate(build["git_files"]["steps"])})
    for name, run in runs.items():
        blobs[f"{name} stdout"] = run.stdout.encode()
        blobs[f"{name} stderr"] = run.stderr.encode()
    # the zips and manifests; the cache, the no-op stamp
    for root in (build["dist"], build["git_files"]["dist"], build["cache"]):
        for path in root.rglob("*"):
            if path.is_file():
                for i, payload in enumerate(leak_search.expand(path.read_bytes())):
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
    blobs.update(leak_search.top_layer_files(client, snapshot.id))
    # the builds' cache volume, every file in it (pip's caches, .debs, built wheels), with a positive
    # control planted first: a token among other bytes, and a key line deflated inside a wheel
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as planted_wheel:
        planted_wheel.writestr("x/key.txt", b"-" * 200 + values["ssh key line"] + b"-" * 200)
    planted = {"lbtest-planted/raw": b"before " + values["git token"] + b" after",
               "lbtest-planted/deep/x-1.0-py3-none-any.whl": wheel.getvalue()}  # fmt: skip
    leak_search.plant(client, build["volume"], local_images["runtime"], planted)
    in_volume = leak_search.volume_files(client, build["volume"], local_images["runtime"])
    assert len(in_volume) > len(planted), "the builds left nothing in their cache volume"
    for name, data in in_volume.items():
        for i, payload in enumerate(leak_search.expand(data)):
            blobs[f"volume:{name}#{i}"] = payload
    found = leak_search.leaks(blobs, values)
    volume_root = leak_search.MOUNT.strip("/")
    assert f"git token in volume:{volume_root}/lbtest-planted/raw#0" in found, found
    assert f"ssh key line in volume:{volume_root}/lbtest-planted/deep/x-1.0-py3-none-any.whl#1" in found, found
    assert [leak for leak in found if "/lbtest-planted/" not in leak] == []


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
        logs = {"stdout": result.stdout.encode(), "stderr": result.stderr.encode()}
        leaks = leak_search.leaks(logs, servers.secret_values)
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
