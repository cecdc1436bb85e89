"""Runs inside the build container, never on the host: compile an extension's C/C++ files on
every core when pip builds an sdist.

distutils (and setuptools' copy of it) compiles the sources of one extension one after another,
so psycopg2's 20 files or a pybind11 module's 10 keep one core busy while the others idle. The
pip step installs this module with a .pth file in the interpreter's site-packages: .pth files
run at every interpreter start, also in pip's isolated build environments, whose own
sitecustomize would shadow one of ours. It patches `CCompiler.compile` when a ccompiler module
is imported (nothing is imported eagerly), so each object is compiled by its own `_compile`
call, as before, only several at a time. LAMBDA_BUILDER_COMPILE_JOBS sets how many (1: off).

In cross builds it also gives the build backend (only) the target's platform: see backend_env;
and it turns ccache off for downloaded sdists, whose wheels are cached whole: see skip_ccache.

Python 3.8 compatible (annotations are never evaluated): it runs under the build image's interpreter.

Runs in the build image's Python, not in lambda-builder: must import only the standard library and nothing of builder.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# where CCompiler is defined: distutils (<= 3.11) and setuptools' vendored copy (old and new layout)
MODULES = frozenset(
    {
        "distutils.ccompiler",
        "setuptools._distutils.ccompiler",
        "distutils.compilers.C.base",
        "setuptools._distutils.compilers.C.base",
    }
)
MARK = "_lambda_builder_parallel"


def jobs() -> int:
    try:
        return max(1, int(os.environ.get("LAMBDA_BUILDER_COMPILE_JOBS") or os.cpu_count() or 1))
    except ValueError:
        return 1


def parallel(serial: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """CCompiler.compile, with the per-object `_compile` calls spread over a thread pool (each
    one waits on a compiler process, so threads are enough)."""

    def compile(
        self: Any,
        sources: Sequence[str],
        output_dir: str | None = None,
        macros: Any = None,
        include_dirs: Any = None,
        debug: Any = 0,
        extra_preargs: Any = None,
        extra_postargs: Any = None,
        depends: Any = None,
    ) -> list[str]:
        n = jobs()
        if n < 2 or len(sources) < 2:
            args = (output_dir, macros, include_dirs, debug, extra_preargs, extra_postargs, depends)
            return serial(self, sources, *args)
        macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs
        )
        cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)
        todo = [obj for obj in objects if obj in build]

        def one(obj: str) -> None:
            src, ext = build[obj]
            self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(max_workers=min(n, len(todo) or 1)) as pool:
            list(pool.map(one, todo))  # re-raises the first CompileError
        return list(objects)

    setattr(compile, MARK, True)
    return compile


def patch(module: types.ModuleType) -> None:
    cls = getattr(module, "CCompiler", None)
    current = getattr(cls, "compile", None)
    if cls is None or current is None or getattr(current, MARK, False):
        return
    cls.compile = parallel(current)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        module: types.ModuleType | None = self.inner.create_module(spec)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        self.inner.exec_module(module)
        patch(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


# pip's random folders: the isolated build requirements, and where an sdist is unpacked
_PIP_FOLDER = re.compile(r"^(.*?/pip-(?:build-env|install|req-build|wheel)-[^/]+)(/[^/]+)?")
# uv's: its build environments (CACHE/builds-v0/.tmpXXXX) and unpacked sdists (CACHE/sdists-vN/...)
_UV_BUILD_ENV = re.compile(r"^(.*?/builds-v\d+/\.tmp[^/]+)")
_UV_SDIST = re.compile(r"^.*?/sdists-v\d+/.+")


def build_path_maps() -> list[tuple[str, str]]:
    """(random folder, fixed name) for each of pip's folders this build runs in: compilers record
    paths (`__FILE__` in asserts and in pybind11's headers, debug info), so without a map the same
    sdist compiled twice differs in its bytes and build id."""
    maps: dict[str, str] = {}
    for entry in [*sys.path, os.getcwd()]:
        uv_env = _UV_BUILD_ENV.match(entry)
        if uv_env is not None:
            maps.setdefault(uv_env.group(1), "/lb/uv-build-env")
            continue
        if entry == os.getcwd() and _UV_SDIST.match(entry):
            maps.setdefault(entry, "/lb/uv-src")
            continue
        found = _PIP_FOLDER.match(entry)
        if found is None:
            continue
        if "/pip-build-env-" in found.group(1):
            maps.setdefault(found.group(1), "/lb/pip-build-env")
        else:  # /tmp/pip-install-XXXX/name_HASH: the unpacked sdist, which is the working folder
            maps.setdefault(found.group(0), "/lb/pip-src")
    return sorted(maps.items(), key=lambda item: -len(item[0]))


# where the installers unpack what they downloaded: an sdist (pip, uv) or a git checkout (pip, uv)
_DOWNLOADED = re.compile(r"^.*?/(?:pip-install-[^/]+/[^/]+|pip-req-build-[^/]+|(?:sdists|git)-v\d+/.+)")


def skip_ccache() -> None:
    """No ccache when the backend builds something downloaded: the wheel it makes is cached whole
    (by the sdist's hash or the commit), so ccache's copies would never be read, and a miss costs
    (preprocessing twice, compressing, writing) half as much CPU again as psycopg2's compile.
    A local project keeps it: after an edit, its unchanged files come from ccache."""
    if _DOWNLOADED.match(os.getcwd()):
        os.environ["CCACHE_DISABLE"] = "1"


def _compiler_takes(flag: str) -> bool:
    """gcc < 8 (Amazon Linux 2's gcc 7) has no -ffile-prefix-map: ask the compiler once."""
    compiler = (os.environ.get("CC") or "cc").split()
    try:
        done = subprocess.run(
            [*compiler, flag, "-E", "-x", "c", os.devnull],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def map_build_paths() -> None:
    """Add -ffile-prefix-map for pip's random folders to CPPFLAGS (which distutils and setuptools
    add to every C and C++ compile of this build backend; CFLAGS misses C++ in newer setuptools),
    where the compiler takes it."""
    maps = build_path_maps()
    if not maps or os.environ.get("LAMBDA_BUILDER_PATH_MAPS") == repr(maps):
        return
    flags = " ".join(f"-ffile-prefix-map={old}={new}" for old, new in maps)
    if not _compiler_takes(flags.split()[0]):
        return
    os.environ["CPPFLAGS"] = f"{os.environ.get('CPPFLAGS', '')} {flags}".strip()
    os.environ["LAMBDA_BUILDER_PATH_MAPS"] = repr(maps)  # once per set of folders, not per interpreter


BACKEND_ENV = "LAMBDA_BUILDER_BACKEND_ENV"  # builder/pipeline/cross.py sets it in cross builds


def backend_env() -> None:
    """Cross builds: the target's platform and sysconfigdata (JSON in LAMBDA_BUILDER_BACKEND_ENV)
    become variables in a PEP 517 build backend's process only (pip runs it as `_in_process.py`),
    so setuptools builds for the target while pip, which picks the wheels of the build
    requirements by the same platform, installs them for the build machine, where they run."""
    raw = os.environ.get(BACKEND_ENV)
    if not raw or not sys.argv or os.path.basename(sys.argv[0]) != "_in_process.py":
        return
    import json

    os.environ.update({str(k): str(v) for k, v in json.loads(raw).items()})


def install() -> None:
    backend_env()
    skip_ccache()
    map_build_paths()
    if jobs() < 2 or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    for name in MODULES:  # already imported (unlikely at interpreter start): patch in place
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _Finder())
