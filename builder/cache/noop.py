"""The no-op fast path: an unchanged `build` answered before the CLI is even loaded.

A single-target `build` that succeeds leaves a stamp named by the command itself (its arguments,
working folder and the environment variables that steer lambda-builder and the Docker client). The
stamp holds what the build depended on: the recipe's bytes, the file stats of local source and
requirement trees, the id of every image it looked up on the engine, the tool's own files, and
the zip and manifest it left (by stat). Running the same command again checks all of that with
the standard library and one request per image on the engine's local socket; when everything is
as recorded, the outputs already are what a build would give, and it prints what a cache hit
prints. Anything else falls through to the full CLI (whose build cache then answers): a stale,
torn or foreign stamp can cost time, never correctness.

Imports stay minimal on purpose (no pathlib, click, yaml or Docker SDK): they are the no-op's cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from builder import __version__, config
from builder.engine import socketapi

STAMP_VERSION = 2  # 2: images are recorded with the engine that holds them
ENV_PREFIXES = ("LAMBDA_BUILDER_", "DOCKER_")
ENV_NAMES = ("HOME", "XDG_CACHE_HOME")
# never part of a folder's identity: the same names as sources.SKIP_NAMES (a test keeps them equal)
SKIP_NAMES = frozenset({".git", "__pycache__"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # builder/, not builder/cache/


class _Unsure(Exception):
    """The stamp cannot be checked (engine unreachable, odd answer): take the full path."""


def cache_root(env: Mapping[str, str]) -> str:
    """paths.cache_dir() without pathlib and platformdirs (a test keeps the two equal)."""
    explicit = env.get("LAMBDA_BUILDER_CACHE_DIR")
    if explicit:
        return explicit
    if sys.platform.startswith("linux"):
        xdg = env.get("XDG_CACHE_HOME", "").strip()
        base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "lambda-builder")
    import platformdirs  # elsewhere its rules are not ours to copy

    return platformdirs.user_cache_dir("lambda-builder")


def command_key(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    """What names the stamp: the command, its folder, the steering variables and the settings
    files' bytes (which choose engines and the registry mirror like the flags and variables do)."""
    steering = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    settings = {p: content_digest(p) for p in config.candidate_paths(env, cwd)}
    blob = json.dumps([STAMP_VERSION, __version__, list(argv), cwd, steering, settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def stamp_path(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    return os.path.join(cache_root(env), "noop", command_key(argv, cwd, env)[:32] + ".json")


# --- what is recorded -------------------------------------------------------------------------


def file_state(path: str) -> list[int] | None:
    """Size, mtime, ctime and inode: any rewrite, replace or `touch` changes one of them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def tree_state(root: str, skip_names: Iterable[str] = SKIP_NAMES, skip_paths: Iterable[str] = ()) -> str | None:
    """A digest of every entry's path, type and stat under root (the way git's index sees edits),
    leaving out entries named `skip_names` and the folders `skip_paths` (a code folder's out dir)."""
    skip_names = frozenset(skip_names)
    skipped = frozenset(skip_paths)
    if os.path.isfile(root):
        return json.dumps(file_state(root))
    if not os.path.isdir(root):
        return None
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root, followlinks=False):  # a link is an entry, never a way out
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]  # listed as dirs, are entries
        dirs[:] = sorted(
            d for d in dirs if d not in skip_names and d not in links and os.path.join(folder, d) not in skipped
        )
        for name in sorted([*files, *links]):
            if name in skip_names:
                continue
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                return None
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            rel = os.path.relpath(path, root)
            line = f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{target}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))
        digest.update(f"{os.path.relpath(folder, root)}/\0{sorted(dirs)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def content_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


_TOOL_HASH: list[str] = []


def tool_hash() -> str:
    """sha256 over the path and bytes of every file of the installed tool (builder/), computed once
    per process: the cache key's and the stamp's notion of "the same lambda-builder", so an upgrade
    or an edited checkout is never served a zip an older tool made (a version string would be)."""
    if not _TOOL_HASH:
        digest = hashlib.sha256()
        for folder, dirs, files in os.walk(_PACKAGE_DIR, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_NAMES)
            for name in sorted(files):
                path = os.path.join(folder, name)
                if name.endswith((".pyc", ".pyo")) or os.path.islink(path):
                    continue
                with open(path, "rb") as handle:
                    data = handle.read()
                rel = os.path.relpath(path, _PACKAGE_DIR)
                digest.update(f"{rel}\0{len(data)}\0".encode("utf-8", "surrogateescape") + data)
        _TOOL_HASH.append(digest.hexdigest())
    return _TOOL_HASH[0]


def image_id(name: str, env: Mapping[str, str], engine: str = "") -> str | None:
    """The image's id on the engine ("" the default one, else its URL as engines.Engine.key gives
    it), or None if it has none; _Unsure if that cannot be told with a plain GET (ssh, TLS)."""
    if not engine:
        sock_path = socketapi.socket_path(env)
    elif engine.startswith("unix://"):
        sock_path = engine[len("unix://") :]
    else:
        sock_path = engine if engine.startswith("tcp://") else None
    if sock_path is None or not name or not set(name) <= _NAME_CHARS:
        raise _Unsure(name)
    try:
        status, body = socketapi.get(sock_path, f"/images/{name.replace('/', '%2F')}/json", timeout=10)
        if status == 404:
            return None
        if status != 200:
            raise _Unsure(f"engine answered {status}")
        return str(json.loads(body)["Id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Unsure(str(exc)) from None


# --- record and replay ------------------------------------------------------------------------


def hit_line(zip_name: str, key: str) -> str:
    return f"{zip_name}: unchanged inputs, reused the cached build (key {key[:12]})"


def built_line(zip_path: str, seconds: float, step_seconds: float, cached: bool) -> str:
    return f"built {zip_path} in {seconds:.1f}s (steps {step_seconds:.1f}s){' [cached]' if cached else ''}"


def record(
    argv: Sequence[str],
    *,
    recipes: Mapping[str, str | None],
    trees: Mapping[str, str | None],
    code_tree: Sequence[Any] | None = None,
    tool: str,
    images: Sequence[tuple[str, str, str | None]],
    pull_skip_until: float | None,
    outputs: Iterable[str],
    zip_path: str,
    key: str,
    quiet: bool,
    warnings: Sequence[str],
    touch: str | None,
) -> None:
    """Write the stamp for this command (atomically; a failure to write only costs the fast path).

    `recipes`, `trees` and `tool` come from the build's input snapshot, taken before it read them:
    a file saved during the build then differs from the stamp, and the next run rebuilds."""
    env = os.environ
    path = stamp_path(argv, os.getcwd(), env)
    stamp: dict[str, Any] = {
        "version": STAMP_VERSION,
        "argv": list(argv),
        "recipes": dict(recipes),
        "trees": dict(trees),
        "code_tree": list(code_tree) if code_tree else None,
        "images": [list(row) for row in images],
        "pull_skip_until": pull_skip_until,
        "tool": tool,
        "outputs": {p: file_state(p) for p in outputs},
        "zip": zip_path,
        "key": key,
        "quiet": quiet,
        "warnings": list(warnings),
        "touch": touch,
    }
    if None in stamp["recipes"].values() or None in stamp["outputs"].values() or stamp["tool"] is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as handle:
            json.dump(stamp, handle)
        os.replace(tmp, path)
    except OSError:
        pass  # no stamp: the next run takes the full path


def _still_true(stamp: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    if stamp.get("version") != STAMP_VERSION or stamp.get("tool") != tool_hash():
        return False
    if any(content_digest(p) != d for p, d in stamp["recipes"].items()):
        return False
    if any(tree_state(p) != d for p, d in stamp["trees"].items()):
        return False
    code = stamp.get("code_tree")
    if code is not None and (code[3] is None or tree_state(code[0], code[1], code[2]) != code[3]):
        return False
    if any(file_state(p) != s for p, s in stamp["outputs"].items()):
        return False
    until = stamp.get("pull_skip_until")
    if until is not None and time.time() >= until:
        return False  # the full path would try the registry again
    return all(image_id(name, env, engine) == found for engine, name, found in stamp["images"])


def replay(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int | None:
    """Answer an unchanged `build` from its stamp: the exit code, or None to run the full CLI."""
    started = time.monotonic()
    if not argv or argv[0] != "build" or "--refresh" in argv:  # --refresh re-resolves: never a replay
        return None
    env = os.environ
    try:
        with open(stamp_path(argv, os.getcwd(), env)) as handle:
            stamp = json.load(handle)
        if not isinstance(stamp, dict) or stamp.get("argv") != list(argv) or not _still_true(stamp, env):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, _Unsure):
        return None
    out = out or sys.stdout
    err = err or sys.stderr
    touch = stamp.get("touch")
    if touch:
        with contextlib.suppress(OSError):
            os.utime(touch)  # the cache entry was used: prune by age keeps it
    if not stamp["quiet"]:
        print(hit_line(os.path.basename(stamp["zip"]), stamp["key"]), file=out)
    print(built_line(stamp["zip"], time.monotonic() - started, 0.0, True), file=out)
    for line in stamp["warnings"]:
        print(line, file=err)
    return 0
