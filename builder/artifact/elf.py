"""Read what the dynamic loader will need from an ELF file, without running it.

pyelftools parses the file directly, so this works for any architecture on any host (an
arm64 extension is analysed on an x86_64 laptop) and never executes untrusted code the
way `ldd` would.

Stage artifact: reads ELF files on the host only; must not touch Docker or the engine.
"""

from __future__ import annotations

import array
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection, DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection
from elftools.elf.sections import SymbolTableSection
from elftools.elf.segments import InterpSegment

from builder.errors import UserError

ELF_MAGIC = b"\x7fELF"

# Symbol-version prefixes that encode "needs at least this toolchain runtime".
VERSION_PREFIXES: tuple[str, ...] = ("GLIBC", "GLIBCXX", "CXXABI", "GCC")
_VERSION_RE = re.compile(r"^(GLIBC|GLIBCXX|CXXABI|GCC)_(\d+(?:\.\d+)*)$")

# ELF e_machine -> the Lambda architecture name (others keep their lowercased machine name).
_ARCH_NAMES: dict[str, str] = {"EM_X86_64": "x86_64", "EM_AARCH64": "arm64", "EM_386": "i386"}


def version_key(version: str) -> tuple[int, ...]:
    """Numeric sort key, because as strings "2.9" > "2.17" but glibc 2.9 is older."""
    return tuple(int(part) for part in version.split("."))


def is_elf(path: Path) -> bool:
    """True when the file starts with the ELF magic: cheap enough to call on every file."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class ElfInfo:
    """What one ELF file asks of the loader and of the C/C++ runtime."""

    path: Path
    arch: str
    soname: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    versions: dict[str, str]
    version_symbols: dict[str, str]
    is_executable: bool
    interpreter: str | None
    elf_type: str = "ET_DYN"  # ET_DYN, ET_EXEC, ET_REL, ET_CORE
    is_dynamic: bool = True  # has a PT_DYNAMIC segment (static binaries and .o files do not)
    elf_class: int = 64
    # Every required version (prefix -> all versions seen), for a full picture in audits.
    all_versions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # (needed file, version name) in .gnu.version_r order: the order ld.so checks them in
    version_needs: tuple[tuple[str, str], ...] = ()

    @property
    def loadable(self) -> bool:
        """Whether the loader resolves DT_NEEDED for it (shared library or dynamic executable)."""
        return self.is_dynamic and self.elf_type in ("ET_DYN", "ET_EXEC")


def _arch(machine: str) -> str:
    return _ARCH_NAMES.get(machine, machine.removeprefix("EM_").lower())


def _split_paths(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.split(":") if part)


def _dynamic_tags(elf: ELFFile) -> tuple[str | None, list[str], list[str], list[str], bool]:
    """(soname, needed, rpath, runpath, has_dynamic) from the dynamic section or segment."""
    dynamic: DynamicSection | DynamicSegment | None = None
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            dynamic = section
            break
    if dynamic is None:  # section headers stripped: fall back to the program header
        for segment in elf.iter_segments():
            if isinstance(segment, DynamicSegment):
                dynamic = segment
                break
    soname: str | None = None
    needed: list[str] = []
    rpath: list[str] = []
    runpath: list[str] = []
    if dynamic is None:
        return soname, needed, rpath, runpath, False
    for tag in dynamic.iter_tags():
        kind = tag.entry.d_tag
        # pyelftools sets the decoded string as an attribute named after the tag.
        if kind == "DT_NEEDED":
            needed.append(str(getattr(tag, "needed")))  # noqa: B009
        elif kind == "DT_SONAME":
            soname = str(getattr(tag, "soname"))  # noqa: B009
        elif kind == "DT_RPATH":
            rpath.extend(_split_paths(str(getattr(tag, "rpath"))))  # noqa: B009
        elif kind == "DT_RUNPATH":
            runpath.extend(_split_paths(str(getattr(tag, "runpath"))))  # noqa: B009
    return soname, needed, rpath, runpath, True


def _required_versions(
    elf: ELFFile,
) -> tuple[dict[str, str], dict[str, str], dict[str, tuple[str, ...]], tuple[tuple[str, str], ...]]:
    """Highest required version per prefix, one symbol needing it, and every version seen.

    .gnu.version_r lists the versions; .gnu.version maps each .dynsym entry to a version
    index, which is how a version is tied to the symbol that needs it.
    """
    verneed = next((s for s in elf.iter_sections() if isinstance(s, GNUVerNeedSection)), None)
    if verneed is None:
        return {}, {}, {}, ()
    by_index: dict[int, tuple[str, str]] = {}
    seen: dict[str, set[str]] = {}
    needs: list[tuple[str, str]] = []
    for need, auxiliaries in verneed.iter_versions():
        for aux in auxiliaries:
            needs.append((str(need.name), str(aux.name)))
            match = _VERSION_RE.match(aux.name)
            if match:
                prefix, number = match.group(1), match.group(2)
                by_index[int(aux["vna_other"]) & 0x7FFF] = (prefix, number)
                seen.setdefault(prefix, set()).add(number)
    highest = {p: max(v, key=version_key) for p, v in seen.items()}
    symbols: dict[str, str] = {}
    versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
    dynsym = next(
        (s for s in elf.iter_sections() if isinstance(s, SymbolTableSection) and s.name == ".dynsym"),
        None,
    )
    if versym is not None and dynsym is not None:
        # .gnu.version is a plain array of 16-bit indexes: read it whole rather than through
        # pyelftools' per-symbol parsing (tens of thousands of calls for a library like libicu)
        indexes = array.array("H", versym.data())
        if elf.little_endian != (sys.byteorder == "little"):
            indexes.byteswap()
        wanted = {i: pv for i, pv in by_index.items() if pv[1] == highest[pv[0]]}
        for index in range(min(len(indexes), dynsym.num_symbols())):
            hit = wanted.get(indexes[index] & 0x7FFF)
            if hit and hit[0] not in symbols:
                symbols[hit[0]] = dynsym.get_symbol(index).name
                if len(symbols) == len({p for p, _ in wanted.values()}):
                    break
    ordered = {p: highest[p] for p in VERSION_PREFIXES if p in highest}
    all_versions = {p: tuple(sorted(seen[p], key=version_key)) for p in VERSION_PREFIXES if p in seen}
    return ordered, symbols, all_versions, tuple(needs)


def read_elf(path: Path) -> ElfInfo:
    """Parse `path`; a file that claims to be ELF but cannot be parsed is a UserError."""
    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            machine = str(elf.header["e_machine"])
            elf_type = str(elf.header["e_type"])
            interpreter: str | None = None
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    interpreter = segment.get_interp_name()
            soname, needed, rpath, runpath, has_dynamic = _dynamic_tags(elf)
            versions, symbols, all_versions, needs = _required_versions(elf)
            elf_class = int(elf.elfclass)
    except (ELFError, OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: not a readable ELF file ({exc})") from exc
    return ElfInfo(
        path=path,
        arch=_arch(machine),
        soname=soname,
        needed=tuple(needed),
        rpath=tuple(rpath),
        runpath=tuple(runpath),
        versions=versions,
        version_symbols=symbols,
        is_executable=elf_type == "ET_EXEC" or (elf_type == "ET_DYN" and interpreter is not None),
        interpreter=interpreter,
        elf_type=elf_type,
        is_dynamic=has_dynamic,
        elf_class=elf_class,
        all_versions=all_versions,
        version_needs=needs,
    )
