"""True cross-compilation: arm64 (and old-glibc x86_64) output from an x86_64 build container.

Emulated arm64 builds run ~15x slower than native ones. Two toolchains avoid emulation:

* zig (`zig cc -target aarch64-linux-gnu.2.26`) for C/C++ sources: it ships its own libc stubs,
  so the target glibc version is *pinned*: nothing it links can need a GLIBC_ symbol newer than
  the Lambda runtime's (2.26 on AL2, 2.34 on AL2023). It also does this for x86_64, which lets a
  bookworm (glibc 2.36) container build for AL2.
* Debian's aarch64 gcc plus the arm64 Python headers/_sysconfigdata for Python extensions
  (setuptools reads the target's compiler flags and EXT_SUFFIX from that sysconfigdata). It links
  against Debian's glibc, so only the bundle/glibc check guards its symbol versions.

Everything here is data (environment variables and script texts); the pipeline writes the
scripts into the cross image (`build-images/cross.Dockerfile`) and exports the environment.

Stage pipeline: text and tars for the cross toolchain; must not run anything (the plan and the build put them in place).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping
from typing import Literal

from builder.errors import UserError
from builder.runtimes import GNU_TRIPLE, UNAME_MACHINE

Toolchain = Literal["zig", "gcc"]

CROSS_ROOT = "/opt/lb-cross"
CROSS_BIN = f"{CROSS_ROOT}/bin"
CMAKE_TOOLCHAIN = f"{CROSS_ROOT}/toolchain.cmake"
ZIG_PYTHON = f"{CROSS_ROOT}/venv/bin/python3"  # the venv the cross image installs ziglang into
ZIG_BINARY = f"{CROSS_ROOT}/zig"  # a link to the ziglang package's binary, made per container
ZIG_CACHE = f"{CROSS_ROOT}/zig-cache"  # pre-warmed in the image for every Lambda target
DEFAULT_PREFIX = "/opt/lb/prefix"


def _check(target_arch: str) -> str:
    if target_arch not in GNU_TRIPLE:
        raise UserError(f"unknown architecture {target_arch!r}", hint="use x86_64 or arm64")
    return GNU_TRIPLE[target_arch]


def zig_target(target_arch: str, glibc: str) -> str:
    """`aarch64-linux-gnu.2.26`: zig's target triple with the glibc version pinned."""
    return f"{_check(target_arch)}.{glibc}"


def _binutils(target_arch: str) -> str:
    """Prefix of the GNU binutils that understand the target's objects (strip, nm, objcopy)."""
    return "" if target_arch == "x86_64" else f"{_check(target_arch)}-"


def cross_wrapper_scripts(
    target_arch: str, glibc: str, toolchain: Toolchain = "zig", prefix: str = DEFAULT_PREFIX
) -> dict[str, str]:
    """Scripts to write into the cross container (path -> text, mode 0755): compiler wrappers so
    CC/CXX are single words (autotools and CMake reject `zig cc -target ...` with spaces), plus the
    CMake toolchain file."""
    scripts: dict[str, str] = {}
    if toolchain == "zig":
        target = zig_target(target_arch, glibc)
        head = (
            "#!/bin/sh\n"
            f': "${{ZIG_GLOBAL_CACHE_DIR:={ZIG_CACHE}}}" "${{ZIG_LOCAL_CACHE_DIR:={ZIG_CACHE}}}"\n'
            "export ZIG_GLOBAL_CACHE_DIR ZIG_LOCAL_CACHE_DIR\n"
        )
        # When linking, accept version scripts naming symbols a build leaves out, as GNU ld does
        # (lld refuses them; zlib's configure then silently falls back to a static-only build).
        link = (
            'case " $* " in *" -c "*|*" -S "*|*" -E "*|*" -M "*|*" -MM "*) set -- "$@";; '
            '*) set -- -Wl,--undefined-version "$@";; esac\n'
        )
        # the zig binary itself when the pipeline linked it (saves ~50 ms of Python per call,
        # which configure scripts make hundreds of), else through the ziglang package
        zig = f'if [ -x {ZIG_BINARY} ]; then set -- {ZIG_BINARY} "$@"; else set -- {ZIG_PYTHON} -m ziglang "$@"; fi\n'
        # zig cc without -O builds in its Debug mode, which turns UBSan on and links its runtime (4 MB
        # into every shared object): gcc never does, and Python extensions link without -O
        gcc_like = f"-target {target} -fno-sanitize=undefined"
        scripts[f"{CROSS_BIN}/cc"] = head + link + f'set -- cc {gcc_like} "$@"\n' + zig + 'exec "$@"\n'
        scripts[f"{CROSS_BIN}/c++"] = head + link + f'set -- c++ {gcc_like} "$@"\n' + zig + 'exec "$@"\n'
        scripts[f"{CROSS_BIN}/ar"] = head + f'exec {ZIG_PYTHON} -m ziglang ar "$@"\n'
        scripts[f"{CROSS_BIN}/ranlib"] = head + f'exec {ZIG_PYTHON} -m ziglang ranlib "$@"\n'
        scripts[f"{CROSS_BIN}/ld"] = head + f'exec {ZIG_PYTHON} -m ziglang ld.lld "$@"\n'
    else:
        if target_arch == "x86_64":
            raise UserError(
                "the gcc cross toolchain only targets arm64",
                hint="use toolchain 'zig' to pin glibc for x86_64",
            )
        gnu = _check(target_arch)
        for tool, real in (("cc", "gcc"), ("c++", "g++"), ("ar", "ar"), ("ranlib", "ranlib"), ("ld", "ld")):
            scripts[f"{CROSS_BIN}/{tool}"] = f'#!/bin/sh\nexec {gnu}-{real} "$@"\n'
    scripts[CMAKE_TOOLCHAIN] = cmake_toolchain(target_arch, toolchain, prefix)
    return scripts


def cmake_toolchain(target_arch: str, toolchain: Toolchain = "zig", prefix: str = DEFAULT_PREFIX) -> str:
    """A CMake toolchain file: target processor, the wrappers, and find_* confined to the prefix
    (and, with gcc, Debian's arm64 multiarch dirs) so host x86_64 libraries are never picked up."""
    roots = prefix if toolchain == "zig" else f"{prefix} /usr/{_check(target_arch)} /"
    binutils = _binutils(target_arch)
    return "\n".join(
        [
            "# written by lambda-builder (builder/cross.py)",
            "set(CMAKE_SYSTEM_NAME Linux)",
            f"set(CMAKE_SYSTEM_PROCESSOR {UNAME_MACHINE[target_arch]})",
            f"set(CMAKE_C_COMPILER {CROSS_BIN}/cc)",
            f"set(CMAKE_CXX_COMPILER {CROSS_BIN}/c++)",
            f'set(CMAKE_AR {CROSS_BIN}/ar CACHE FILEPATH "")',
            f'set(CMAKE_RANLIB {CROSS_BIN}/ranlib CACHE FILEPATH "")',
            f'set(CMAKE_STRIP /usr/bin/{binutils}strip CACHE FILEPATH "")',
            f"set(CMAKE_FIND_ROOT_PATH {roots})",
            f"list(APPEND CMAKE_PREFIX_PATH {prefix})",
            "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)",
            "",
        ]
    )


def cross_environment(
    target_arch: str,
    glibc: str,
    python: str | None,
    toolchain: Toolchain,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> dict[str, str]:
    """Environment that makes autotools, Makefiles, CMake, pkg-config and pip/setuptools build for
    `target_arch`. `python` ("3.11") adds the variables that make setuptools use the target's
    sysconfigdata (flags, EXT_SUFFIX); None for recipes without Python."""
    gnu = _check(target_arch)
    binutils = _binutils(target_arch)
    pkgconfig = [f"{prefix}/lib/pkgconfig", f"{prefix}/share/pkgconfig"]
    if toolchain == "gcc":  # gcc links against Debian's arm64 libraries, so their .pc files apply
        pkgconfig += [f"/usr/lib/{gnu}/pkgconfig", "/usr/share/pkgconfig"]
    env = {
        "CC": f"{CROSS_BIN}/cc",
        "CXX": f"{CROSS_BIN}/c++",
        "AR": f"{CROSS_BIN}/ar",
        "RANLIB": f"{CROSS_BIN}/ranlib",
        "LD": f"{CROSS_BIN}/ld",
        "STRIP": f"{binutils}strip",
        "NM": f"{binutils}nm",
        "OBJCOPY": f"{binutils}objcopy",
        "OBJDUMP": f"{binutils}objdump",
        "READELF": f"{binutils}readelf",
        "CMAKE_TOOLCHAIN_FILE": CMAKE_TOOLCHAIN,
        "PKG_CONFIG_LIBDIR": ":".join(pkgconfig),  # replaces the host's default search path
        "PKG_CONFIG_PATH": "",
        # `./configure --host=$LB_HOST` (autotools), or $LB_TRIPLE in recipes' own scripts
        "LB_HOST": gnu,
        "LB_CROSS": toolchain,
        "LB_TARGET_ARCH": target_arch,
        "LB_TARGET_GLIBC": glibc,
        "CONFIG_SITE": "",  # Debian's config.site would point --libdir at the host multiarch dir
    }
    if toolchain == "zig":
        env["ZIG_GLOBAL_CACHE_DIR"] = ZIG_CACHE
        env["ZIG_LOCAL_CACHE_DIR"] = ZIG_CACHE
    if python is not None:
        env["LDSHARED"] = f"{CROSS_BIN}/cc -shared"
        env["LDCXXSHARED"] = f"{CROSS_BIN}/c++ -shared"
        if target_arch != "x86_64":
            machine = UNAME_MACHINE[target_arch]
            env["_PYTHON_HOST_PLATFORM"] = f"linux-{machine}"
            env["_PYTHON_SYSCONFIGDATA_NAME"] = f"_sysconfigdata__linux_{gnu}"
            # setuptools takes -I/usr/include/pythonX.Y from the sysconfigdata; Debian's pyconfig.h
            # there includes <aarch64-linux-gnu/pythonX.Y/pyconfig.h>, which zig (no /usr/include)
            # must find after its own libc headers.
            if toolchain == "zig":
                env["CFLAGS"] = f"-idirafter {CROSS_ROOT}/include"
    return env


def scripts_tar(scripts: Mapping[str, str], links: Mapping[str, str] | None = None) -> bytes:
    """A tar of `scripts` (absolute paths, mode 0755) and symlinks for `container.put_archive('/')`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, text in sorted(scripts.items()):
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for link, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(link.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


# The variables that make setuptools build for the target (its platform tag and sysconfigdata:
# EXT_SUFFIX, flags). pip itself must not see them: it picks the build requirements it installs
# into an isolated build environment by the same platform, and those run on the build machine.
# So they travel as one JSON value that builder/resources/parallel_cc.py (a .pth hook in the build
# image's Python) turns back into variables in the build backend's process only.
BACKEND_ENV = "LAMBDA_BUILDER_BACKEND_ENV"
BACKEND_ONLY = ("_PYTHON_HOST_PLATFORM", "_PYTHON_SYSCONFIGDATA_NAME")


def choose_toolchain(target_arch: str, target_packages: bool) -> Toolchain:
    """zig, with glibc pinned to the runtime's, unless the build links the target's Debian packages
    (system_packages, binaries): those need Debian's glibc anyway, so pinning older buys nothing,
    and Debian's aarch64 gcc finds their headers and libraries in the multiarch folders itself
    (zig searches no system folder) and pairs with their libstdc++."""
    return "gcc" if target_packages and target_arch != "x86_64" else "zig"


def toolchain_record(target_arch: str, glibc: str, toolchain: Toolchain) -> dict[str, str]:
    """What the manifest says about the compilers of a cross build."""
    if toolchain == "zig":
        return {"name": "zig", "target": zig_target(target_arch, glibc), "glibc": glibc}
    return {"name": "gcc", "target": _check(target_arch), "glibc": "the build image's (Debian multiarch)"}


def pipeline_environment(
    target_arch: str, glibc: str, python: str | None, prefix: str, toolchain: Toolchain = "zig", *,
    deps: str | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The cross environment as the build pipeline uses it: (every step's env, Python builds' env).

    zig's linker ignores LIBRARY_PATH/CPATH, which native gcc honours, so the prefix is given as
    flags; configure scripts recognise gcc by name (and only then add -fPIC, -soname, ...), so
    zig cc is called by a gcc name; LDSHARED is for Python builds only (zlib's configure honours
    it and would then link without a SONAME). Debian's cross gcc honours CPATH/LIBRARY_PATH and
    searches /usr/include/TRIPLE and /usr/lib/TRIPLE, where multiarch puts the target's packages.
    """
    env = cross_environment(target_arch, glibc, python, toolchain, prefix=prefix)
    roots = [prefix, *([deps] if deps else [])]  # deps: the prefix of the libraries a recipe uses
    if deps and "PKG_CONFIG_LIBDIR" in env:
        env["PKG_CONFIG_LIBDIR"] += f":{deps}/lib/pkgconfig:{deps}/share/pkgconfig"
    triple = GNU_TRIPLE[target_arch]
    if toolchain == "zig":
        env["LDFLAGS"] = " ".join(f"-L{r}/{d}" for r in roots for d in ("lib", "lib64"))
        env["CFLAGS"] = f"-idirafter {CROSS_ROOT}/include " + " ".join(f"-I{r}/include" for r in roots)
        # pkgconf counts LIBRARY_PATH's folders (the prefixes, for gcc) as system ones and drops their
        # -L/-I from --libs/--cflags; zig ignores LIBRARY_PATH, so it needs them
        env["PKG_CONFIG_ALLOW_SYSTEM_LIBS"] = env["PKG_CONFIG_ALLOW_SYSTEM_CFLAGS"] = "1"
        env["CC"], env["CXX"] = f"{CROSS_BIN}/{triple}-gcc", f"{CROSS_BIN}/{triple}-g++"
    else:
        env["CC"], env["CXX"] = f"{triple}-gcc", f"{triple}-g++"  # through ccache's links when present
    python_env: dict[str, str] = {
        k: env.pop(k).replace(f"{CROSS_BIN}/cc", env["CC"]).replace(f"{CROSS_BIN}/c++", env["CXX"])
        for k in ("LDSHARED", "LDCXXSHARED")
        if k in env
    }
    backend = {k: env.pop(k) for k in BACKEND_ONLY if k in env}
    if backend:
        python_env[BACKEND_ENV] = json.dumps(backend, sort_keys=True)
    return env, python_env


def container_files(
    target_arch: str, glibc: str, image_python: str | None, prefix: str, toolchain: Toolchain = "zig"
) -> bytes:
    """The wrappers, links and CMake file to unpack at / in the cross container before building."""
    triple = GNU_TRIPLE[target_arch]
    links = {
        # Debian's pyconfig.h includes <TRIPLE/pythonX.Y/pyconfig.h>; zig has no /usr/include
        f"{CROSS_ROOT}/include/{triple}": f"/usr/include/{triple}",
        f"{CROSS_BIN}/{triple}-gcc": f"{CROSS_BIN}/cc",
        f"{CROSS_BIN}/{triple}-g++": f"{CROSS_BIN}/c++",
    }
    if image_python:
        links[ZIG_BINARY] = f"{CROSS_ROOT}/venv/lib/python{image_python}/site-packages/ziglang/zig"
    if toolchain == "gcc":  # the gcc names are Debian's own compilers, in /usr/bin
        del links[f"{CROSS_BIN}/{triple}-gcc"], links[f"{CROSS_BIN}/{triple}-g++"]
    return scripts_tar(cross_wrapper_scripts(target_arch, glibc, toolchain, prefix=prefix), links)
