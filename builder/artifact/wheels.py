"""Which files of a stage came from prebuilt wheels, and RECORD files made true again after strip and repair.

Stage: artifact (after pip install). Wheels from an index were built and repaired for manylinux
by their authors (auditwheel has already patched their RUNPATHs and vendored their libraries);
running strip or patchelf over them again can break them (numpy's OpenBLAS stops loading with
"ELF load command address/offset not page-aligned"). So files listed in the RECORD of a
distribution whose WHEEL carries a manylinux/musllinux platform tag are left byte for byte; only
what this build compiled (sdists, local projects: tagged `linux_*`) is stripped and patched, and
their RECORD is rewritten afterwards, as auditwheel's repair does.

This module runs in two places with one rule: on the host (repair, RECORD) and, as a script, in
the build container (which files strip may touch). Hence: standard library only, Python 3.7+
(annotations are never evaluated: it runs under the build image's own Python), no import of the
rest of builder. It touches no container itself.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import stat
import sys

PREBUILT_PLATFORMS = ("manylinux", "musllinux")


def dist_infos(root: str) -> list[str]:
    """Every `*.dist-info` folder pip left: at the top of its --target, which is root for a
    function and root/python for a layer; sorted."""
    tops = [root] + [os.path.join(root, d) for d in _folders(root) if not d.endswith(".dist-info")]
    return sorted(os.path.join(top, d) for top in tops for d in _folders(top) if d.endswith(".dist-info"))


def _folders(path: str) -> list[str]:
    try:
        return [e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def wheel_platforms(dist_info: str) -> list[str]:
    """The platform tags its WHEEL file names (`Tag: cp311-cp311-manylinux_2_17_x86_64`; a
    compressed tag set `a.b` counts as both)."""
    platforms: list[str] = []
    try:
        with open(os.path.join(dist_info, "WHEEL"), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() == "tag" and value.strip().count("-") >= 2:
                    platforms.extend(value.strip().rsplit("-", 1)[1].split("."))
    except OSError:
        pass
    return platforms


def is_prebuilt(dist_info: str) -> bool:
    return any(p.startswith(PREBUILT_PLATFORMS) for p in wheel_platforms(dist_info))


def record_paths(dist_info: str) -> list[str]:
    """The files its RECORD lists, as normalized paths (entries leading out of the install root,
    such as `../../bin/tool` scripts, included as they resolve)."""
    base = os.path.dirname(dist_info)
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [os.path.normpath(os.path.join(base, row[0])) for row in rows if row and row[0]]


def prebuilt_files(root: str) -> set[str]:
    """Paths (normalized, under root) of every file a prebuilt manylinux/musllinux wheel installed."""
    kept: set[str] = set()
    for dist_info in dist_infos(root):
        if is_prebuilt(dist_info):
            kept.update(record_paths(dist_info))
    return kept


def _elf_candidate(path: str, mode: int) -> bool:
    name = os.path.basename(path)
    return name.endswith(".so") or ".so." in name or bool(mode & stat.S_IXUSR)


def strip_candidates(root: str) -> list[str]:
    """Regular files strip may look at (shared objects by name, executables by mode), minus the
    prebuilt wheels' files, sorted."""
    kept = prebuilt_files(root)
    found: list[str] = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.normpath(os.path.join(dirpath, name))
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and _elf_candidate(path, info.st_mode) and path not in kept:
                found.append(path)
    return sorted(found)


TEST_DIRS = ("tests", "test")
_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)


def prunable_test_dirs(root: str) -> list[str]:
    """Test folders inside packages (below the top level, never a package that is itself named
    test) that no code outside a test folder imports. numpy 2.1's numpy.testing imports
    numpy._core.tests._natype, and scipy imports numpy.testing: pruning every `tests` folder
    broke `import scipy`. Sorted, outermost only."""
    candidates: list[str] = []
    code: list[str] = []
    for dirpath, dirnames, names in os.walk(root):
        depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
        for name in list(dirnames):
            if name in TEST_DIRS and depth >= 1 and not dirpath.endswith(".dist-info"):
                candidates.append(os.path.join(dirpath, name))
                dirnames.remove(name)
        code.extend(os.path.join(dirpath, n) for n in names if n.endswith(".py"))
    if not candidates:
        return []
    imported: set[str] = set()
    for path in code:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        if ".test" in text:
            imported.update(a or b for a, b in _IMPORT.findall(text))
    layer = os.path.join(root, "python")
    prunable = []
    for folder in candidates:
        base = layer if folder.startswith(layer + os.sep) else root
        dotted = os.path.relpath(folder, base).replace(os.sep, ".")
        if not any(name == dotted or name.startswith(dotted + ".") for name in imported):
            prunable.append(folder)
    return sorted(prunable)


def _digest(path: str) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
            size += len(block)
    return "sha256=" + base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode("ascii"), size


def rewrite_records(root: str) -> list[str]:
    """Make the RECORD of every distribution built here list the hashes and sizes its files have
    now (strip and RUNPATH patches change them); prebuilt wheels are never touched, and a RECORD
    that is already true is left byte for byte. Returns the RECORD files rewritten."""
    rewritten: list[str] = []
    for dist_info in dist_infos(root):
        if is_prebuilt(dist_info):
            continue
        record = os.path.join(dist_info, "RECORD")
        try:
            with open(record, "rb") as handle:
                raw = handle.read()
            rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        base = os.path.dirname(dist_info)
        changed = False
        for row in rows:
            if len(row) < 3 or not row[1]:
                continue  # the RECORD's own line, and entries listed without a hash
            path = os.path.normpath(os.path.join(base, row[0]))
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            digest, size = _digest(path)
            if [row[1], row[2]] != [digest, str(size)]:
                row[1], row[2] = digest, str(size)
                changed = True
        if changed:
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n" if b"\r\n" in raw else "\n")
            writer.writerows(rows)
            with open(record, "w", encoding="utf-8", newline="") as handle:
                handle.write(out.getvalue())
            rewritten.append(record)
    return rewritten


COMMANDS = {"strip-candidates": strip_candidates, "prunable-test-dirs": prunable_test_dirs}

if __name__ == "__main__":  # in the build container: `python3 wheels.py strip-candidates STAGE`
    if len(sys.argv) != 3 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: wheels.py {'|'.join(COMMANDS)} ROOT")
    for line in COMMANDS[sys.argv[1]](sys.argv[2]):
        print(line)
