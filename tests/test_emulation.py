"""arm64 emulation: the binfmt_misc parser on real and hand-written entries, and the real thing:
registration, an arm64 container printing aarch64, and the message when emulation is missing."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import docker
import pytest

from builder import doctor
from builder.doctor import doctor_report
from builder.engine import rootfs
from builder.engine.emulation import (
    BINFMT_DIR,
    PROBE_IMAGE,
    PROBE_LABEL,
    QEMU_ENTRY,
    binfmt_status,
    check_arm64_emulation,
    disable_arm64_emulation,
    enable_arm64_emulation,
    engine_is_remote,
    find_aarch64_entry,
    parse_binfmt_entry,
    run_probe,
)
from builder.engine.rootfs import bootstrap_probe_image
from builder.errors import EnvironmentProblem

MAGIC = "7f454c460201010000000000000000000200b700"
MASK = "ffffffffffffff00fffffffffffffffffeffffff"
ROOT_ON_LINUX = platform.system() == "Linux" and os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT_ON_LINUX, reason="registering binfmt_misc needs root on Linux")


def _entry_text(
    *, enabled: bool = True, interpreter: str = "/usr/bin/qemu-aarch64-static", flags: str = "F"
) -> str:
    return (
        f"{'enabled' if enabled else 'disabled'}\ninterpreter {interpreter}\nflags: {flags}\n"
        f"offset 0\nmagic {MAGIC}\nmask {MASK}\n"
    )


def _binfmt(tmp_path: Path, entries: dict[str, str], status: str = "enabled") -> Path:
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()
    (folder / "register").write_text("")
    (folder / "status").write_text(status + "\n")
    for name, text in entries.items():
        (folder / name).write_text(text)
    return folder


def test_parse_entry_fields() -> None:
    entry = parse_binfmt_entry("qemu-aarch64", _entry_text(flags="OCF"))
    assert entry.enabled and entry.fix_binary
    assert entry.interpreter == "/usr/bin/qemu-aarch64-static"
    assert entry.magic == MAGIC


def test_registration_with_f_is_ok(tmp_path: Path) -> None:
    status = binfmt_status(_binfmt(tmp_path, {QEMU_ENTRY: _entry_text()}))
    assert status.ok and status.fix is None
    assert "qemu-aarch64-static" in status.details


def test_debian_registration_without_f_fails_in_containers(tmp_path: Path) -> None:
    text = _entry_text(interpreter="/usr/libexec/qemu-binfmt/aarch64-binfmt-P", flags="P")
    status = binfmt_status(_binfmt(tmp_path, {QEMU_ENTRY: text}))
    assert not status.ok
    assert "F flag" in status.details and "aarch64-binfmt-P" in status.details
    assert status.fix is not None and ":F'" in status.fix and "echo -1" in status.fix


def test_disabled_registration(tmp_path: Path) -> None:
    folder = _binfmt(tmp_path, {QEMU_ENTRY: _entry_text(enabled=False)})
    status = binfmt_status(folder)
    assert not status.ok and "disabled" in status.details
    assert status.fix == f"echo 1 | sudo tee {folder}/{QEMU_ENTRY}"


def test_missing_registration(tmp_path: Path) -> None:
    other = _entry_text().replace(MAGIC, "7f454c460201010000000000000000000200f300")  # riscv64
    status = binfmt_status(_binfmt(tmp_path, {"qemu-riscv64": other}))
    assert not status.ok and "no binfmt_misc registration" in status.details
    assert status.fix is not None and "register" in status.fix and "qemu-user-static" in status.fix


def test_registration_under_another_name_is_found_by_magic(tmp_path: Path) -> None:
    folder = _binfmt(tmp_path, {"aarch64": _entry_text(interpreter="/usr/bin/qemu-aarch64")})
    entry = find_aarch64_entry(folder)
    assert entry is not None and entry.name == "aarch64"
    assert binfmt_status(folder).ok


def test_not_mounted_and_globally_disabled(tmp_path: Path) -> None:
    unmounted = binfmt_status(tmp_path / "nothing-here")
    assert not unmounted.ok and "not mounted" in unmounted.details
    assert unmounted.fix is not None and "mount -t binfmt_misc" in unmounted.fix
    disabled = binfmt_status(_binfmt(tmp_path, {QEMU_ENTRY: _entry_text()}, status="disabled"))
    assert not disabled.ok and "disabled globally" in disabled.details


def test_remote_engine_is_recognised() -> None:
    # an explicit API version: the client then never connects
    local = docker.DockerClient(base_url="unix:///var/run/docker.sock", version="1.41")
    remote = docker.DockerClient(base_url="tcp://build-host.invalid:2376", version="1.41")
    try:
        assert engine_is_remote(remote)
        assert engine_is_remote(local) == (platform.system() != "Linux")
    finally:
        local.close()
        remote.close()


@needs_root
def test_enable_refuses_without_qemu(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem) as info:
        enable_arm64_emulation(qemu=tmp_path / "qemu-aarch64-static")
    assert info.value.hint is not None and "apt-get install -y qemu-user-static" in info.value.hint
    assert info.value.exit_code == 3


def test_doctor_without_engine() -> None:
    checks = {check.name: check for check in doctor_report(None)}
    assert set(checks) == {"docker", "arm64 emulation", "bootstrap tool", "CA bundle", "cross toolchain"}
    assert not checks["docker"].ok and checks["docker"].fix
    assert "no container probe" in checks["arm64 emulation"].detail


# --- the real thing: binfmt_misc of this kernel and containers on the engine ---------------


@pytest.fixture(scope="module")
def arm64_image(client: Any) -> str:
    """The minimal arm64 Debian image; bootstrapped (a few minutes under qemu) when missing."""
    if not ROOT_ON_LINUX and not client.images.list(name=PROBE_IMAGE):
        pytest.skip(f"{PROBE_IMAGE} is missing and cannot be bootstrapped without root")
    if ROOT_ON_LINUX:
        enable_arm64_emulation()
    return bootstrap_probe_image(client)


@pytest.mark.docker
@pytest.mark.arm64
@needs_root
def test_real_registration_and_arm64_container(client: Any, arm64_image: str) -> None:
    enable_arm64_emulation()
    entry = find_aarch64_entry(BINFMT_DIR)
    assert entry is not None and entry.enabled and entry.fix_binary
    assert parse_binfmt_entry(entry.name, (BINFMT_DIR / entry.name).read_text()) == entry
    assert binfmt_status().ok
    status = check_arm64_emulation(client)
    assert status.ok, status.details
    assert "uname -m = aarch64" in status.details
    assert run_probe(client, arm64_image, ["uname", "-m"]).strip() == "aarch64"
    assert client.images.get(arm64_image).attrs["Architecture"] == "arm64"


@pytest.mark.docker
@pytest.mark.arm64
@needs_root
def test_missing_emulation_says_how_to_enable(client: Any, arm64_image: str) -> None:
    """Disable, check the message, re-enable: emulation is restored whatever happens."""
    try:
        disable_arm64_emulation()
        assert find_aarch64_entry(BINFMT_DIR) is None
        status = check_arm64_emulation(client)
        assert not status.ok
        assert "no binfmt_misc registration" in status.details
        assert "failed to run" in status.details  # the container probe really failed
        assert status.fix is not None and "--fix-emulation" in status.fix
        assert "qemu-aarch64-static:F" in status.fix
    finally:
        enable_arm64_emulation()
    assert check_arm64_emulation(client).ok
    leftover = client.containers.list(all=True, filters={"label": PROBE_LABEL})
    assert not leftover, "the probe must remove its containers"


@pytest.mark.docker
@pytest.mark.arm64
@needs_root
def test_enable_replaces_registration_without_f(client: Any, arm64_image: str) -> None:
    """Debian-style registration without F (interpreter absent in containers) gets replaced."""
    try:
        disable_arm64_emulation()
        (BINFMT_DIR / "register").write_text(
            f":{QEMU_ENTRY}:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
            "\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff"
            "\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:P"
        )
        without_f = check_arm64_emulation(client)
        assert not without_f.ok and "without the F flag" in without_f.details
        enable_arm64_emulation()
        entry = find_aarch64_entry(BINFMT_DIR)
        assert entry is not None and entry.fix_binary and entry.interpreter == "/usr/bin/qemu-aarch64-static"
    finally:
        enable_arm64_emulation()
    assert check_arm64_emulation(client).ok


@pytest.mark.docker
def test_doctor_with_engine(client: Any) -> None:
    checks = {check.name: check for check in doctor_report(client)}
    assert checks["docker"].ok and str(client.version()["Version"]) in checks["docker"].detail
    assert checks["bootstrap tool"].ok == any(
        (Path(d) / tool).exists()
        for d in os.environ["PATH"].split(":")
        for tool in ("mmdebstrap", "debootstrap")
    )
    for check in checks.values():
        assert check.ok or check.fix, f"{check.name} failed without a fix"


def test_foreign_bootstrap_without_arch_test_is_a_clear_environment_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.errors import EnvironmentProblem

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no arch-test
    rootfs.require_arch_test(rootfs.host_debian_arch())  # the host's own arch needs none
    with pytest.raises(EnvironmentProblem) as raised:
        rootfs.require_arch_test("arm64" if rootfs.host_debian_arch() != "arm64" else "amd64")
    assert raised.value.exit_code == 3 and "arch-test" in raised.value.render()
    check = doctor.check_bootstrap()
    assert not check.ok
