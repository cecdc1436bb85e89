"""Stage pipeline: the shell scripts the build's actions run in the build container.

Text only: nothing here runs a command or touches Docker; the actions (pipeline/actions/) run them.
"""

from __future__ import annotations

import shlex

from builder.pipeline.context import CCACHE_LINKS, DEPS, HOOKS, PARALLEL_CC, PREFIX, STAGE, WHEELS_SCRIPT
from builder.recipe.model import Recipe

# the prefix's tools first (then the used libraries': pg_config, xml2-config); then the ccache
# masquerade folders (the local build image's cc and c++, Debian's gcc, g++ and triplets), so
# compilers go through ccache where the image has it
PATH_PREFIX = f'export PATH="{PREFIX}/bin:{DEPS}/bin:{CCACHE_LINKS}:/usr/lib/ccache:$PATH"\n'


def packages_for(wanted: dict[str, tuple[str, ...]], key: str) -> tuple[str, ...] | None:
    """The recipe's packages for a package manager; dnf takes the yum names when none are given."""
    return wanted.get(key) or (wanted.get("yum") if key == "dnf" else None)


def detect_and_check(wanted: dict[str, tuple[str, ...]]) -> str:
    """A script printing `MANAGER installed|missing` (or `none`): the first of apt-get, dnf, yum
    found, and whether the recipe's packages for it are all installed."""
    checks: dict[str, str] = {}
    for manager, key in (("apt-get", "apt"), ("dnf", "dnf"), ("yum", "yum")):
        packages = packages_for(wanted, key) or ()
        names = " ".join(shlex.quote(p) for p in packages)
        if not packages:
            checks[manager] = "false"
        elif key == "apt":
            checks[manager] = (
                f"! dpkg-query -W -f='${{Status}}\\n' {names} 2>/dev/null | grep -vq '^install ok installed$' "
                f"&& [ $(dpkg-query -W {names} 2>/dev/null | wc -l) -eq {len(packages)} ]"
            )
        else:
            checks[manager] = f"rpm -q {names} >/dev/null 2>&1"
    cases = "".join(
        f"  {m}) if {check}; then echo '{m} installed'; else echo '{m} missing'; fi ;;\n" for m, check in checks.items()
    )
    return (
        "for m in apt-get dnf yum; do command -v $m >/dev/null 2>&1 && break; m=none; done\n"
        f"case $m in\n{cases}  *) echo none ;;\nesac"
    )


def hook_script(python: str) -> str:
    """Shell lines that put builder/resources/parallel_cc.py, with a .pth that starts it, into the site-packages
    of the build image's `python` (see that module for why a .pth)."""
    site = f"$({python} -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
    return (
        f'site="{site}"\nmkdir -p "$site"\ncp {HOOKS}/{PARALLEL_CC}.py "$site/"\n'
        f'echo "import {PARALLEL_CC}; {PARALLEL_CC}.install()" > "$site/{PARALLEL_CC}.pth"\n'
    ) + PIP_CACHE_LINKS


# pip's cache folder is keyed by what a built wheel depends on (context.wheel_cache_dir); downloads
# do not depend on it, so its http caches are links to one folder every key shares
PIP_CACHE_LINKS = (
    'if [ -n "${PIP_CACHE_DIR:-}" ] && [ -z "${PIP_NO_CACHE_DIR:-}" ]; then\n'
    '  shared="$(dirname "$PIP_CACHE_DIR")/shared"; mkdir -p "$PIP_CACHE_DIR"\n'
    '  for d in http http-v2; do\n'
    '    mkdir -p "$shared/$d"; [ -e "$PIP_CACHE_DIR/$d" ] || ln -s "$shared/$d" "$PIP_CACHE_DIR/$d"\n'
    "  done\n"
    "fi\n"
)


COLLECT = r"""
mkdir -p {stage}/lib {stage}/bin
for d in {prefix}/lib {prefix}/lib64; do
  [ -d "$d" ] || continue
  for f in "$d"/*.so*; do
    [ -e "$f" ] || continue
    readelf -h "$f" >/dev/null 2>&1 || continue
    so=$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    if [ -n "$so" ]; then
      [ "$(basename "$f")" = "$so" ] && cp -L "$f" "{stage}/lib/$so"
    elif [ ! -L "$f" ]; then
      cp "$f" {stage}/lib/  # no SONAME: consumers name the file itself
    fi
  done
done
if [ -d {prefix}/bin ]; then
  for f in {prefix}/bin/*; do
    [ -f "$f" ] && readelf -h "$f" >/dev/null 2>&1 && cp -L "$f" {stage}/bin/
  done
fi
for b in {binaries}; do
  f="{root}$b"; n=0  # links resolve inside {root} (the target's unpacked packages in cross builds)
  while [ -L "$f" ] && [ $n -lt 40 ]; do
    t=$(readlink "$f"); case "$t" in /*) f="{root}$t" ;; *) f="$(dirname "$f")/$t" ;; esac; n=$((n + 1))
  done
  [ -e "$f" ] || {{ echo "binary $b does not exist in the build image" >&2; exit 3; }}
  cp "$f" "{stage}/bin/$(basename "$b")"
done
rmdir {stage}/lib {stage}/bin 2>/dev/null || true
"""


def prune_script(recipe: Recipe) -> str:
    rules = []
    p = recipe.prune
    if p.pycache:
        rules += [
            "find {s} -name __pycache__ -type d -prune -exec rm -rf {{}} +",
            "find {s} -name '*.py[co]' -delete",
        ]
    if p.tests:
        # test folders inside packages (depth >= 2), never a top-level package that is named test,
        # nor one that code outside the tests imports (builder/artifact/wheels.py: numpy 2.1 does)
        rules.append(
            "if command -v python3 >/dev/null 2>&1; then\n"
            f"  python3 {WHEELS_SCRIPT} prunable-test-dirs {{s}} | while read -r d; do rm -rf \"$d\"; done\n"
            "else\n"
            "  find {s} -mindepth 2 -type d \\( -name tests -o -name test \\) "
            "-not -path '*.dist-info*' -prune -exec rm -rf {{}} +\n"
            "fi"
        )
    if p.static_libs:
        rules.append("find {s} -type f \\( -name '*.a' -o -name '*.la' \\) -delete")
    if p.headers:
        rules.append("find {s} -type f \\( -name '*.h' -o -name '*.hpp' -o -name '*.hh' \\) -delete")
    if p.docs:
        rules.append("rm -rf {s}/share/man {s}/share/doc {s}/share/info {s}/man {s}/doc")
    rules.append("find {s} -mindepth 1 -depth -type d -empty -delete")
    return "\n".join(r.format(s=STAGE) for r in rules)


# ELF files are shared objects (*.so, *.so.N) or executables: only those are looked at, so a
# package of thousands of .py files does not cost a readelf each. Files of prebuilt wheels are left
# byte for byte (builder/artifact/wheels.py says why and which); without a Python there are no wheels.
STRIP = r"""
if command -v python3 >/dev/null 2>&1; then
  python3 {wheels} strip-candidates {stage}
else
  find {stage} -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \)
fi | while read -r f; do
  if readelf -h "$f" >/dev/null 2>&1; then ${{STRIP:-strip}} --strip-unneeded "$f" 2>/dev/null || true; fi
done
"""

