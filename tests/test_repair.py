"""Repair on real fixtures and real host libraries (HostDirResolver at "/"): no mocks."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from builder.artifact.apply import apply_repair
from builder.artifact.elf import read_elf
from builder.artifact.policy import load_policy
from builder.artifact.repair import check_versions, plan_repair, stage_elfs
from builder.artifact.resolvers import HostDirResolver
from builder.errors import UserError
from tests.fixtures.elf import build as fx

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="fixtures assume an x86_64 host")

AL2 = load_policy("al2", "x86_64")
AL2023 = load_policy("al2023", "x86_64")
BOOKWORM = load_policy("debian-bookworm", "x86_64")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}


def run_app(app: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(app)], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, check=False)


def app_in_stage(tmp_path: Path, *link: str) -> tuple[Path, Path, Path]:
    """(stage, build dir holding libfix, stage/bin/app linking it without any RUNPATH)."""
    build = tmp_path / "build"
    fx.libfix(build)
    stage = tmp_path / "stage"
    app = fx.cc(stage / "bin" / "app", "app.c", f"-L{build}", "-lfix", "-lm", *link)
    return stage, build, app


def test_too_new_glibc_caught_by_policy(tmp_path: Path) -> None:
    fx.shared(tmp_path / "stage" / "libnew.so", "newglibc.c")
    elfs = stage_elfs(tmp_path / "stage")
    (al2,) = check_versions(elfs, AL2)
    assert (al2.prefix, al2.required, al2.allowed, al2.symbol) == ("GLIBC", "2.36", "2.26", "pidfd_open")
    assert "pidfd_open" in al2.message() and "GLIBC_2.36" in al2.message()
    (al2023,) = check_versions(elfs, AL2023)
    assert al2023.allowed == "2.34"
    assert check_versions(elfs, BOOKWORM) == []
    assert check_versions(elfs, AL2, allow_glibc="2.36") == []
    assert len(check_versions(elfs, AL2, allow_glibc="2.35")) == 1


def test_one_step_past_al2(tmp_path: Path) -> None:
    fx.shared(tmp_path / "s" / "libmemfd.so", "memfd.c")
    elfs = stage_elfs(tmp_path / "s")
    (v,) = check_versions(elfs, AL2)
    assert (v.required, v.symbol) == ("2.27", "memfd_create")
    assert check_versions(elfs, AL2023) == []


def test_runtime_libraries_not_bundled(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    lib = fx.shared(stage / "python" / "libcxx.so", "cxx.cpp", cxx=True)
    plan = plan_repair(stage, AL2023, HostDirResolver())
    assert plan.bundled == () and plan.missing == ()
    assert {"libstdc++.so.6", "libc.so.6"} <= set(read_elf(lib).needed) <= set(plan.provided)
    assert plan.patches == ()


def test_too_old_libstdcxx_is_bundled_instead(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    fx.shared(stage / "libcxx.so", "cxx.cpp", cxx=True)
    old = dataclasses.replace(AL2023, max_versions={**AL2023.max_versions, "GLIBCXX": "3.4"})
    assert any(v.prefix == "GLIBCXX" for v in check_versions(stage_elfs(stage), old))
    plan = plan_repair(stage, old, HostDirResolver())
    assert "libstdc++.so.6" in plan.bundled_sonames
    assert "libc.so.6" not in plan.bundled_sonames  # glibc is never bundled
    assert [
        v for v in check_versions(plan.elfs, old, bundled=plan.bundled_sonames) if v.prefix == "GLIBCXX"
    ] == []


def test_dlopen_library_is_bundled(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    fx.shared(stage / "python" / "pkg" / "_mod.so", "memfd.c")
    plan = plan_repair(stage, AL2023, HostDirResolver(), dlopen=("libz.so.1",))
    (z,) = plan.bundled
    assert z.soname == "libz.so.1" and z.source.endswith("/libz.so.1") and z.source.startswith("/")
    apply_repair(plan, stage)
    assert read_elf(stage / "lib" / "libz.so.1").soname == "libz.so.1"
    assert read_elf(stage / "python" / "pkg" / "_mod.so").runpath == ("$ORIGIN/../../lib",)


def test_without_repair_fails_with_repair_runs(tmp_path: Path) -> None:
    stage, build, app = app_in_stage(tmp_path)
    before = run_app(app, tmp_path / "elsewhere")
    assert before.returncode != 0
    assert "cannot open shared object file" in before.stderr

    plan = plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)])
    (fix,) = plan.bundled
    assert (fix.soname, fix.source, fix.needed_by) == ("libfix.so.1", f"{build}/libfix.so.1", ("bin/app",))
    assert "libm.so.6" in plan.provided and plan.missing == ()
    apply_repair(plan, stage)

    after = run_app(app, tmp_path / "elsewhere")
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "fix=42 sqrt=4"
    assert read_elf(app).runpath == ("$ORIGIN/../lib",)
    again = plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)])
    assert again.bundled == () and again.patches == ()  # idempotent: everything is in place


def test_layer_extension_gets_relative_runpath_and_loads(tmp_path: Path) -> None:
    build = tmp_path / "build"
    fx.libfix(build)
    stage = tmp_path / "layer"
    ext = fx.shared(stage / "python" / "foo" / "_ext.so", "ext.c", f"-L{build}", "-lfix")
    plan = plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)])
    # libfix needs nothing (not even libc), so only the extension is patched
    assert [(p.path, p.runpath) for p in plan.patches] == [("python/foo/_ext.so", "$ORIGIN/../../lib")]
    apply_repair(plan, stage)
    code = f"import ctypes; print(ctypes.CDLL({str(ext)!r}).ext_value())"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=CLEAN_ENV,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "43"


def test_transitive_dependencies_are_bundled(tmp_path: Path) -> None:
    build = tmp_path / "build"
    fx.libfix(build)
    fx.shared(build / "libmid.so.1", "ext.c", f"-L{build}", "-lfix", soname="libmid.so.1")
    (build / "libmid.so").symlink_to("libmid.so.1")
    stage = tmp_path / "stage"
    fx.shared(stage / "top.so", "memfd.c", "-Wl,--no-as-needed", f"-L{build}", "-lmid")
    plan = plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)])
    assert plan.bundled_sonames == {"libmid.so.1", "libfix.so.1"}
    fix = next(b for b in plan.bundled if b.soname == "libfix.so.1")
    assert fix.needed_by == ("lib/libmid.so.1",)
    assert ("lib/libmid.so.1", "$ORIGIN") in [(p.path, p.runpath) for p in plan.patches]


def test_missing_and_excluded(tmp_path: Path) -> None:
    stage, _build, _app = app_in_stage(tmp_path)
    plan = plan_repair(stage, AL2023, HostDirResolver())
    assert [(m.soname, m.needed_by) for m in plan.missing] == [("libfix.so.1", ("bin/app",))]
    excluded = plan_repair(stage, AL2023, HostDirResolver(), exclude=("libfix.so.1",))
    assert excluded.missing == () and excluded.bundled == () and excluded.excluded == ("libfix.so.1",)


def test_library_already_in_stage_is_used(tmp_path: Path) -> None:
    stage, build, app = app_in_stage(tmp_path)
    fx.libfix(stage / "lib")
    plan = plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)])
    assert plan.bundled == () and ("libfix.so.1", "lib/libfix.so.1") in plan.in_stage
    apply_repair(plan, stage)
    assert run_app(app, tmp_path / "x").stdout.startswith("fix=42")


def test_two_copies_under_one_name_clash(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    fx.libfix(one, 1)
    fx.libfix(two, 2)
    stage = tmp_path / "stage"
    fx.cc(stage / "bin" / "a", "app.c", f"-L{one}", "-lfix", "-lm", f"-Wl,-rpath,{one}")
    fx.cc(stage / "bin" / "b", "app.c", f"-L{two}", "-lfix", "-lm", f"-Wl,-rpath,{two}")
    plan = plan_repair(stage, AL2023, HostDirResolver())
    assert sorted(b.source for b in plan.bundled) == [f"{one}/libfix.so.1", f"{two}/libfix.so.1"]
    with pytest.raises(UserError) as err:
        apply_repair(plan, stage)
    assert f"{one}/libfix.so.1" in err.value.message and f"{two}/libfix.so.1" in err.value.message
    assert "lib/libfix.so.1" in err.value.message


def test_existing_different_file_in_lib_dir_clashes(tmp_path: Path) -> None:
    stage, build, _app = app_in_stage(tmp_path)
    plan = plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)])
    (stage / "lib").mkdir()
    (stage / "lib" / "libfix.so.1").write_text("not the same")
    with pytest.raises(UserError, match="already exists"):
        apply_repair(plan, stage)


def test_wrong_arch_candidate_is_skipped(tmp_path: Path) -> None:
    good = tmp_path / "good"
    real = fx.libfix(good)
    arm = tmp_path / "arm"
    fx.as_aarch64(real, arm / "libfix.so.1")
    resolver = HostDirResolver()
    assert resolver.find("libfix.so.1", [str(arm), str(good)], "x86_64") == real.resolve()
    assert resolver.find("libfix.so.1", [str(arm)], "x86_64") is None
    assert resolver.find("libfix.so.1", [str(arm), str(good)], "arm64") == (arm / "libfix.so.1").resolve()
    stage = tmp_path / "stage"
    fx.cc(stage / "app", "app.c", f"-L{good}", "-lfix", "-lm")
    plan = plan_repair(stage, AL2023, resolver, extra_search_dirs=[str(arm), str(good)])
    assert [b.source for b in plan.bundled] == [f"{good}/libfix.so.1"]


def test_rpath_before_ld_library_path_before_runpath(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    fx.libfix(first, 1)
    fx.libfix(second, 2)
    old, new = tmp_path / "old", tmp_path / "new"
    fx.cc(old / "app", "app.c", f"-L{first}", "-lfix", "-lm", f"-Wl,--disable-new-dtags,-rpath,{first}")
    fx.cc(new / "app", "app.c", f"-L{first}", "-lfix", "-lm", f"-Wl,--enable-new-dtags,-rpath,{first}")
    extra = [str(second)]
    (via_rpath,) = plan_repair(old, AL2023, HostDirResolver(), extra_search_dirs=extra).bundled
    (via_runpath,) = plan_repair(new, AL2023, HostDirResolver(), extra_search_dirs=extra).bundled
    assert via_rpath.source == f"{first}/libfix.so.1"  # DT_RPATH beats LD_LIBRARY_PATH
    assert via_runpath.source == f"{second}/libfix.so.1"  # LD_LIBRARY_PATH beats DT_RUNPATH


def test_origin_in_rpath_of_a_bundled_library(tmp_path: Path) -> None:
    build = tmp_path / "build"
    fx.libfix(build / "deps")
    fx.shared(build / "libmid.so.1", "ext.c", f"-L{build / 'deps'}", "-lfix", "-Wl,-rpath,${ORIGIN}/deps",
              soname="libmid.so.1")  # fmt: skip
    (build / "libmid.so").symlink_to("libmid.so.1")
    stage = tmp_path / "stage"
    fx.shared(stage / "top.so", "memfd.c", "-Wl,--no-as-needed", f"-L{build}", "-lmid")
    plan = plan_repair(stage, AL2023, HostDirResolver(), extra_search_dirs=[str(build)])
    fix = next(b for b in plan.bundled if b.soname == "libfix.so.1")
    assert fix.source == f"{build}/deps/libfix.so.1"  # $ORIGIN = the image dir libmid came from


def test_sysroot_resolver_reroots_absolute_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    fx.libfix(libdir)
    (libdir / "libfix.so.1").rename(libdir / "libfix.so.1.0")
    (libdir / "libfix.so.1").symlink_to("/usr/lib/x86_64-linux-gnu/libfix.so.1.0")  # absolute, image-style
    resolver = HostDirResolver(root)
    found = resolver.find("libfix.so.1", ["/usr/lib/x86_64-linux-gnu"], "x86_64")
    assert found == (libdir / "libfix.so.1.0").resolve()
    assert resolver.source_path(found) == "/usr/lib/x86_64-linux-gnu/libfix.so.1"
