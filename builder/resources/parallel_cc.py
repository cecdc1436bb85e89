"""Runs inside the build container, never on the host: compile an extension's C/C++ files on
every core when pip builds an sdist.

distutils (and setuptools' copy of it) compiles the sources of one extension one after another,
so psycopg2's 20 files or a pybind11 module's 10 keep one core busy while the others idle. The
pip step installs this module with a .pth file in the interpreter's site-packages: .pth files
run at every interpreter start, also in pip's isolated build environments, whose own
sitecustomize would shadow one of ours. It patches `CCompiler.compile` when a ccompiler module
is imported (nothing is imported eagerly), so each object is compiled by its own `_compile`
call, as before, only several at a time. LAMBDA_BUILDER_COMPILE_JOBS sets how many (1: off).

Python 3.8 compatible (annotations are never evaluated): it runs under the build image's interpreter.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
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


def install() -> None:
    if jobs() < 2 or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    for name in MODULES:  # already imported (unlikely at interpreter start): patch in place
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _Finder())
