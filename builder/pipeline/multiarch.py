"""Stage pipeline: the shell scripts that give a cross build the TARGET's Debian packages (multiarch).

A cross build runs in the x86_64 cross image, but the libraries it links and the executables it
ships must be arm64. Debian's multiarch installs both side by side: `apt-get install libpq-dev:arm64`
puts the arm64 libpq in /usr/lib/aarch64-linux-gnu (where the aarch64 gcc, pkg-config's
PKG_CONFIG_LIBDIR and the bundling resolver look) and its headers in /usr/include; its -config
scripts (Debian's pg_config is a Perl script made for this, xml2-config and xslt-config are shell
scripts that print the multiarch paths) answer for the target. Executables (`binaries`) cannot be
installed for another architecture beside the build machine's, so their arm64 .debs are unpacked
into TARGET_ROOT and their libraries installed as above.

Text only: nothing here runs a command; the actions (pipeline/actions/steps.py) run the scripts.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

TARGET_ROOT = "/lb/target-root"  # the target's executables (binaries), unpacked from its .debs
DEB_ARCH = {"x86_64": "amd64", "arm64": "arm64"}

# Which packages are the target's: a library (Multi-Arch: same, or named lib* without a Multi-Arch
# field, as Debian names libraries and their -dev packages: libpq-dev has none) is installed as
# PKG:ARCH; a tool (cmake, g++, Multi-Arch: foreign/allowed) for the build machine, where it runs,
# unless it ships one of the recipe's `binaries`: then its target .deb is unpacked into the root
# instead (never installed over the build machine's). A binary no listed package ships comes from
# the installed package that holds it (dpkg -S), fetched for the target at the same version. The
# libraries the unpacked packages depend on (Multi-Arch: same) are installed for the target with the
# rest, in one apt-get, so bundling finds them in /usr/lib/TRIPLE. A name with an explicit :ARCH is
# taken as written. Lists missing or stale are fetched and the install retried, as natively.
PACKAGES = r"""
set -e
export DEBIAN_FRONTEND=noninteractive
arch={arch}; root={root}; debs=/lb/target-debs; binaries={binaries}
if ! ls /var/lib/apt/lists/*binary-"$arch"_Packages* >/dev/null 2>&1; then
  echo "fetching the package lists for $arch (apt-get update)"; apt-get update -qq
fi
download() {{ apt-get download -qq "$1" 2>/dev/null || {{ apt-get update -qq && apt-get download -qq "$1"; }}; }}
mkdir -p "$root" "$debs"; cd "$debs"
target=''; host=''
for p in {packages}; do
  case "$p" in *:*) host="$host $p"; continue ;; esac
  ma=$(apt-cache show --no-all-versions "$p:$arch" 2>/dev/null | sed -n 's/^Multi-Arch: //p' | head -n 1)
  case "$ma:$p" in
    same:*|:lib*) target="$target $p:$arch"; continue ;;
  esac
  if [ -n "$binaries" ]; then  # does its target package ship one of the binaries?
    download "$p:$arch"
    files=$(dpkg-deb -c "$(ls -t "$p"_*_"$arch".deb | head -n 1)" | awk '{{print substr($6, 2)}}')
    ships=''
    for b in $binaries; do printf '%s\n' "$files" | grep -qxF "$b" && ships=yes; done
    if [ -n "$ships" ]; then echo "unpacking $p:$arch for its executables"; continue; fi
    rm -f "$p"_*_"$arch".deb
  fi
  host="$host $p"
done
for b in $binaries; do
  [ -e "$root$b" ] && continue
  for deb in *.deb; do [ -e "$deb" ] && dpkg-deb -x "$deb" "$root"; done
  [ -e "$root$b" ] || [ -L "$root$b" ] && continue
  owner=$(dpkg -S "$b" 2>/dev/null || dpkg -S "$(readlink -f "$b")" 2>/dev/null || true)
  pkg=$(printf '%s\n' "$owner" | head -n 1 | cut -d: -f1 | cut -d, -f1)
  if [ -z "$pkg" ]; then
    echo "binary $b: no package of system_packages ships it and none installed holds it" >&2
    echo "hint: list the Debian package that ships $b under system_packages.apt" >&2
    exit 3
  fi
  echo "unpacking $pkg:$arch for $b"
  download "$pkg:$arch=$(dpkg-query -W -f='${{Version}}' "$pkg")"
done
for deb in *.deb; do
  [ -e "$deb" ] || continue
  dpkg-deb -x "$deb" "$root"
  for d in $(dpkg-deb -f "$deb" Pre-Depends Depends | sed 's/^[A-Za-z-]*: //' | tr ',' '\n' \
             | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g'); do
    ma=$(apt-cache show --no-all-versions "$d:$arch" 2>/dev/null | sed -n 's/^Multi-Arch: //p' | head -n 1)
    [ "$ma" = same ] && target="$target $d:$arch"
  done
done
echo "for the target ($arch):${{target:- none}}"
echo "for the build machine:${{host:- none}}"
if [ -n "$target$host" ]; then
  install="apt-get install -y -qq --no-install-recommends $target $host"
  if ! $install; then
    echo 'refreshing the package lists (apt-get update)'
    apt-get update -qq && $install
  fi
fi
"""


def packages_script(packages: Sequence[str], binaries: Sequence[str], target_arch: str) -> str:
    """Install the recipe's apt packages in the cross image (libraries for the target, tools for
    the build machine) and unpack the target's packages of `binaries` into TARGET_ROOT."""
    return PACKAGES.format(
        arch=DEB_ARCH[target_arch],
        root=TARGET_ROOT,
        packages=" ".join(shlex.quote(p) for p in packages),
        binaries=shlex.quote(" ".join(binaries)),
    )
