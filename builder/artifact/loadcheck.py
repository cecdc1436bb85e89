"""What Lambda's dynamic loader would say about an artifact, without Lambda.

The local runtime image (Debian, glibc 2.36) loads files that Lambda's Amazon Linux (glibc 2.26
or 2.34) refuses, so `test` asks the audit which files would not load there and words each
failure as ld.so does (glibc's dl-version.c and dl-load.c), naming the paths as they would be
on Lambda (`/var/task/...` or `/opt/...`):

    /lib64/libc.so.6: version `GLIBC_2.34' not found (required by /var/task/lib/libpq.so.5)
    libfoo.so.1: cannot open shared object file: No such file or directory

ld.so stops at the first version it cannot match in a file's .gnu.version_r, in that order; so
does this, one message per file that would not load.

Stage artifact: reads files on the host only; must not touch Docker or the engine.
"""

from __future__ import annotations

from pathlib import Path

from builder.artifact.audit import audit_tree
from builder.artifact.elf import read_elf, version_key
from builder.artifact.policy import Policy
from builder.artifact.repair import PREFIX_PROVIDER

SYSTEM_LIBDIR = "/lib64"  # where Amazon Linux keeps libc, libstdc++, libgcc_s (both arches)
NO_FILE = "cannot open shared object file: No such file or directory"


def loader_errors(root: Path, policy: Policy, mount: str, lib_dirs: tuple[str, ...] = ("lib",)) -> list[str]:
    """ld.so's message for every ELF file under `root` (unpacked at `mount` on Lambda) that would
    not load on the platform `policy` describes; empty when every one loads."""
    root = root.resolve()
    report = audit_tree(root, policy, lib_dirs)
    messages: list[str] = []
    for file in report.files:
        if file.verdict == "ok":
            continue
        where = f"{mount.rstrip('/')}/{file.path}"
        info = read_elf(root / file.path)
        if file.verdict == "wrong-arch":
            machine = f"wrong ELF machine ({file.arch}, not {report.arch})"
            messages.append(f"{where}: cannot open shared object file: {machine}")
            continue
        missing = [soname for soname, status in file.needed if status == "missing"]
        if missing:  # the first one the loader looks for and cannot find
            if info.is_executable:
                messages.append(f"{where}: error while loading shared libraries: {missing[0]}: {NO_FILE}")
            else:
                messages.append(f"{missing[0]}: {NO_FILE} (needed by {where})")
            continue
        bundled = {soname for soname, status in file.needed if status == "bundled"}
        for needed, version in info.version_needs:
            prefix, _, number = version.partition("_")
            limit = policy.max_versions.get(prefix)
            if limit is None or PREFIX_PROVIDER.get(prefix) in bundled or needed in bundled:
                continue
            if number and number[0].isdigit() and version_key(number) > version_key(limit):
                messages.append(f"{SYSTEM_LIBDIR}/{needed}: version `{version}' not found (required by {where})")
                break
    return messages
