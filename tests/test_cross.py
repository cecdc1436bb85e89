"""Cross-compilation for real: C sources (Makefile, autotools, CMake) and a Python extension built
for arm64 in the x86_64 cross image, checked with pyelftools, then run under emulation."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from builder.errors import UserError
from builder.pipeline.cross import CMAKE_TOOLCHAIN, cross_environment, cross_wrapper_scripts, scripts_tar, zig_target

CROSS_IMAGE = "lambda-builder/cross:bookworm-x86_64"
ARM64_PYTHON_IMAGE = "lambda-builder-test/python:bookworm-arm64"
LABEL = {"org.lambda-builder.test": "cross"}
PREFIX = "/opt/lb/prefix"

# stat() is the canary: glibc >= 2.33 exports it as stat@GLIBC_2.33, older ones only __xstat.
LIB_C = """
#include <sys/stat.h>
#include "mylib.h"
long mylib_size(const char *path) { struct stat st; return stat(path, &st) == 0 ? (long)st.st_size : -1; }
int mylib_triple(int x) { return 3 * x; }
"""
LIB_H = "long mylib_size(const char *path);\nint mylib_triple(int x);\n"
PROG_C = """
#include <stdio.h>
#include "mylib.h"
int main(void) {
    printf("triple=%d size=%d\\n", mylib_triple(14), mylib_size("/etc/hostname") >= 0);
    return 0;
}
"""
MAKEFILE = """CC ?= cc
AR ?= ar
RANLIB ?= ranlib
all: libmylib.so libmylib.a prog
libmylib.so: mylib.c
\t$(CC) -O2 -fPIC -shared -Wl,-soname,libmylib.so -o $@ $<
libmylib.a: mylib.c
\t$(CC) -O2 -fPIC -c -o mylib.o $<
\t$(AR) rc $@ mylib.o
\t$(RANLIB) $@
prog: prog.c libmylib.so
\t$(CC) -O2 -o $@ prog.c -L. -lmylib -Wl,-rpath,'$$ORIGIN'
"""
CONFIGURE_AC = """AC_INIT([mylib], [1.0])
AM_INIT_AUTOMAKE([foreign])
LT_INIT
AC_PROG_CC
AC_CHECK_FUNCS([stat])
AC_CONFIG_FILES([Makefile mylib.pc])
AC_OUTPUT
"""
MAKEFILE_AM = """lib_LTLIBRARIES = libmylib.la
libmylib_la_SOURCES = mylib.c
include_HEADERS = mylib.h
bin_PROGRAMS = prog
prog_LDADD = libmylib.la
pkgconfig_DATA = mylib.pc
pkgconfigdir = $(libdir)/pkgconfig
"""
MYLIB_PC_IN = """prefix=@prefix@
exec_prefix=@exec_prefix@
libdir=@libdir@
includedir=@includedir@
Name: mylib
Description: test library
Version: @PACKAGE_VERSION@
Libs: -L${libdir} -lmylib
Cflags: -I${includedir}
"""
CMAKELISTS = """cmake_minimum_required(VERSION 3.13)
project(mycm C)
add_library(mycm SHARED mylib.c)
add_executable(progcm prog.c)
target_link_libraries(progcm mycm)
install(TARGETS mycm progcm)
"""
EXT_C = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *triple(PyObject *self, PyObject *args) {
    long x; if (!PyArg_ParseTuple(args, "l", &x)) return NULL; return PyLong_FromLong(3 * x);
}
static PyMethodDef methods[] = {{"triple", triple, METH_VARARGS, "3*x"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "hello", NULL, -1, methods};
PyMODINIT_FUNC PyInit_hello(void) { return PyModule_Create(&mod); }
"""
SETUP_PY = """from setuptools import Extension, setup
setup(name="hello", version="1.0", ext_modules=[Extension("hello", ["hello.c"])])
"""


def elf_facts(path: Path) -> tuple[str, str | None]:
    """(e_machine, highest GLIBC_x.y the file needs or None)."""
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        versions: list[tuple[int, ...]] = []
        section: Any = elf.get_section_by_name(".gnu.version_r")
        if section is not None:
            for _, auxiliaries in section.iter_versions():
                for aux in auxiliaries:
                    if aux.name.startswith("GLIBC_2"):
                        versions.append(tuple(int(p) for p in aux.name[len("GLIBC_") :].split(".")))
        newest = ".".join(map(str, max(versions))) if versions else None
        return elf["e_machine"], newest


def elf_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def _glibc(version: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")) if version else (0,)


def _tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Box:
    """A running container to exec build steps in; removed by the fixture."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def sh(self, script: str, env: dict[str, str] | None = None, workdir: str = "/") -> str:
        code, output = self.container.exec_run(
            ["bash", "-euo", "pipefail", "-c", script], environment=env or {}, workdir=workdir
        )
        text: str = output.decode(errors="replace")
        assert code == 0, f"exit {code}:\n{text[-4000:]}"
        return text

    def put(self, folder: str, files: dict[str, str]) -> None:
        self.sh(f"mkdir -p {folder}")
        self.container.put_archive(folder, _tar(files))

    def fetch(self, path: str, dest: Path) -> Path:
        stream, _ = self.container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            tar.extractall(dest, filter="data")
        return dest / Path(path).name


@pytest.fixture(scope="module")
def cross_image(client: Any) -> str:
    """The cross image as the pipeline makes it (images.ensure_local), built when missing."""
    from builder.engine import images

    return str(images.ensure_local("cross", "bookworm", "x86_64").name)


@pytest.fixture(scope="module")
def box(client: Any, cross_image: str) -> Iterator[Box]:
    container = client.containers.run(cross_image, ["sleep", "infinity"], detach=True, labels=LABEL)
    try:
        yield Box(container)
    finally:
        container.remove(force=True)


def _install(box: Box, arch: str, glibc: str, toolchain: str = "zig") -> dict[str, str]:
    """Write the wrappers the pipeline would write; return the environment it would export."""
    scripts = cross_wrapper_scripts(arch, glibc, toolchain)  # type: ignore[arg-type]
    box.container.put_archive("/", scripts_tar(scripts))
    return cross_environment(arch, glibc, "3.11", toolchain, prefix=PREFIX)  # type: ignore[arg-type]


def test_environment_shape() -> None:
    env = cross_environment("arm64", "2.26", "3.11", "zig")
    assert env["LB_HOST"] == "aarch64-linux-gnu" and env["STRIP"] == "aarch64-linux-gnu-strip"
    assert env["_PYTHON_SYSCONFIGDATA_NAME"] == "_sysconfigdata__linux_aarch64-linux-gnu"
    assert env["_PYTHON_HOST_PLATFORM"] == "linux-aarch64"
    assert env["PKG_CONFIG_LIBDIR"].startswith(f"{'/opt/lb/prefix'}/lib/pkgconfig")
    assert "/usr/lib/x86_64-linux-gnu" not in env["PKG_CONFIG_LIBDIR"]
    assert "_PYTHON_HOST_PLATFORM" not in cross_environment("x86_64", "2.26", "3.11", "zig")
    assert "LDSHARED" not in cross_environment("arm64", "2.34", None, "zig")
    scripts = cross_wrapper_scripts("arm64", "2.34", "zig")
    assert "-target aarch64-linux-gnu.2.34" in scripts["/opt/lb-cross/bin/cc"]
    assert "CMAKE_SYSTEM_PROCESSOR aarch64" in scripts[CMAKE_TOOLCHAIN]
    assert zig_target("x86_64", "2.26") == "x86_64-linux-gnu.2.26"
    with pytest.raises(UserError):
        cross_environment("riscv64", "2.26", None, "zig")
    with pytest.raises(UserError):
        cross_wrapper_scripts("x86_64", "2.26", "gcc")


@pytest.mark.docker
def test_makefile_library_for_arm64_pins_glibc(box: Box, tmp_path: Path) -> None:
    env = _install(box, "arm64", "2.26")
    box.put("/src/mk", {"mylib.c": LIB_C, "mylib.h": LIB_H, "prog.c": PROG_C, "Makefile": MAKEFILE})
    started = time.monotonic()
    box.sh("make -j2", env, "/src/mk")
    print(f"zig Makefile build for arm64: {time.monotonic() - started:.1f}s")
    built = box.fetch("/src/mk", tmp_path)
    elves = elf_files(built)
    assert {p.name for p in elves} == {"libmylib.so", "prog", "mylib.o"}
    for path in elves:
        machine, glibc = elf_facts(path)
        assert machine == "EM_AARCH64", path
        assert _glibc(glibc) <= (2, 26), f"{path.name} needs GLIBC_{glibc}"
    assert (built / "libmylib.a").read_bytes().startswith(b"!<arch>")


@pytest.mark.docker
def test_gcc_cross_toolchain_cannot_pin_glibc(box: Box, tmp_path: Path) -> None:
    """The negative control: the same stat() call through Debian's cross gcc needs GLIBC_2.33,
    which is why C sources go through zig."""
    env = _install(box, "arm64", "2.26", "gcc")
    box.put("/src/gcc", {"mylib.c": LIB_C, "mylib.h": LIB_H, "prog.c": PROG_C, "Makefile": MAKEFILE})
    box.sh("make libmylib.so", env, "/src/gcc")
    machine, glibc = elf_facts(box.fetch("/src/gcc/libmylib.so", tmp_path))
    assert machine == "EM_AARCH64" and _glibc(glibc) >= (2, 33)


@pytest.mark.docker
def test_autotools_and_pkg_config_for_arm64(box: Box, tmp_path: Path) -> None:
    env = _install(box, "arm64", "2.26")
    files = {"mylib.c": LIB_C, "mylib.h": LIB_H, "prog.c": PROG_C, "configure.ac": CONFIGURE_AC}
    box.put("/src/at", {**files, "Makefile.am": MAKEFILE_AM, "mylib.pc.in": MYLIB_PC_IN})
    box.sh("autoreconf -fi >/dev/null 2>&1", workdir="/src/at")  # generated on the build host
    started = time.monotonic()
    box.sh(f'./configure --host="$LB_HOST" --prefix={PREFIX} && make -j2 && make install', env, "/src/at")
    print(f"zig autotools configure+make for arm64: {time.monotonic() - started:.1f}s")
    # pkg-config sees the target prefix, not the build host's libraries
    assert box.sh("pkg-config --libs mylib", env).split() == [f"-L{PREFIX}/lib", "-lmylib"]
    assert "zlib" not in box.sh("pkg-config --list-all || true", env)
    built = box.fetch(PREFIX, tmp_path)
    elves = elf_files(built)
    assert {p.name for p in elves} >= {"libmylib.so.0.0.0", "prog"}
    for path in elves:
        machine, glibc = elf_facts(path)
        assert machine == "EM_AARCH64", path
        assert _glibc(glibc) <= (2, 26), f"{path.name} needs GLIBC_{glibc}"


@pytest.mark.docker
def test_cmake_for_arm64_and_x86_64_with_old_glibc(box: Box, tmp_path: Path) -> None:
    for arch, machine, glibc in (("arm64", "EM_AARCH64", "2.34"), ("x86_64", "EM_X86_64", "2.26")):
        env = _install(box, arch, glibc)
        src = f"/src/cm-{arch}"
        box.put(src, {"mylib.c": LIB_C, "mylib.h": LIB_H, "prog.c": PROG_C, "CMakeLists.txt": CMAKELISTS})
        box.sh(
            'cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE="$CMAKE_TOOLCHAIN_FILE" -DCMAKE_INSTALL_PREFIX=/out'
            " >/dev/null && cmake --build build -j2 && cmake --install build",
            env,
            src,
        )
        out = box.fetch("/out", tmp_path / arch)
        box.sh("rm -rf /out")
        elves = elf_files(out)
        assert {p.name for p in elves} == {"libmycm.so", "progcm"}
        for path in elves:
            found, needs = elf_facts(path)
            assert found == machine, path
            assert _glibc(needs) <= _glibc(glibc), f"{arch} {path.name} needs GLIBC_{needs}"


@pytest.fixture(scope="module")
def arm64_python(client: Any) -> str:
    """An arm64 Debian with python3 (the arm64 base + python3-minimal, installed under qemu)."""
    from builder.engine.emulation import PROBE_IMAGE, check_arm64_emulation
    from builder.engine.rootfs import bootstrap_probe_image

    status = check_arm64_emulation(client)
    if not status.ok:
        pytest.skip(f"arm64 emulation is not available: {status.details}")
    if not client.images.list(name=ARM64_PYTHON_IMAGE):
        bootstrap_probe_image(client)
        dockerfile = (
            f"FROM {PROBE_IMAGE}\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive "
            "apt-get install -y --no-install-recommends python3-minimal && rm -rf /var/lib/apt/lists/*\n"
        )
        client.images.build(
            fileobj=io.BytesIO(_tar({"Dockerfile": dockerfile})),
            custom_context=True,
            tag=ARM64_PYTHON_IMAGE,
            platform="linux/arm64",
            rm=True,
            forcerm=True,
        )
    return ARM64_PYTHON_IMAGE


def _run_arm64(client: Any, image: str, folder: Path, command: list[str]) -> str:
    container = client.containers.create(
        image, command, working_dir="/work", platform="linux/arm64", labels=LABEL
    )
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(str(folder), arcname="work")
        container.put_archive("/", buffer.getvalue())
        container.start()
        result = container.wait(timeout=300)
        output: str = container.logs().decode(errors="replace")
        assert result["StatusCode"] == 0, output
        return output
    finally:
        container.remove(force=True)


@pytest.mark.docker
@pytest.mark.parametrize("toolchain", ["gcc", "zig"])
def test_python_extension_for_arm64(
    box: Box, client: Any, arm64_python: str, tmp_path: Path, toolchain: str
) -> None:
    env = _install(box, "arm64", "2.26", toolchain)
    src = f"/src/ext-{toolchain}"
    box.put(src, {"hello.c": EXT_C, "setup.py": SETUP_PY})
    started = time.monotonic()
    box.sh("pip wheel --no-build-isolation --no-deps -w dist . >/dev/null", env, src)
    print(f"{toolchain} cross build of a Python extension: {time.monotonic() - started:.1f}s")
    box.sh("mkdir -p out && cd out && python3 -m zipfile -e ../dist/*.whl .", workdir=src)
    out = box.fetch(f"{src}/out", tmp_path)
    [ext] = elf_files(out)
    assert ext.name == "hello.cpython-311-aarch64-linux-gnu.so"
    machine, glibc = elf_facts(ext)
    assert machine == "EM_AARCH64"
    if toolchain == "zig":
        assert _glibc(glibc) <= (2, 26)
    wheel = box.sh("ls dist", workdir=src).split()
    assert wheel[0].endswith("-linux_aarch64.whl")
    printed = _run_arm64(
        client,
        arm64_python,
        out,
        ["python3", "-c", "import hello, platform; print(platform.machine(), hello.triple(14))"],
    )
    assert printed.strip() == "aarch64 42"


@pytest.mark.docker
def test_zig_built_program_runs_on_arm64(box: Box, client: Any, arm64_python: str, tmp_path: Path) -> None:
    env = _install(box, "arm64", "2.26")
    box.put("/src/run", {"mylib.c": LIB_C, "mylib.h": LIB_H, "prog.c": PROG_C, "Makefile": MAKEFILE})
    box.sh("make prog", env, "/src/run")
    built = box.fetch("/src/run", tmp_path)
    assert _run_arm64(client, arm64_python, built, ["./prog"]).strip() == "triple=42 size=1"
