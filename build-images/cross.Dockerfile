# Cross toolchains for building arm64 (and old-glibc x86_64) artifacts on an x86_64 engine
# without qemu: zig (C/C++, glibc version pinned per Lambda runtime) and Debian's aarch64 gcc
# plus the arm64 Python headers/sysconfig (Python extensions). About 15x faster than emulation.
#
# Build context: this file as Dockerfile, plus `lb-ca.crt` (the host CA bundle, or empty):
# HTTPS from build containers may go through a TLS-intercepting proxy that only it trusts.
ARG BASE=lambda-builder/build:bookworm-x86_64
FROM ${BASE}

# Python version whose arm64 headers and _sysconfigdata are installed ("3" = the release's default).
ARG PYTHON=3
# HTTP_PROXY and friends are Docker's predefined build args: usable in RUN without an ARG line,
# and kept out of `docker history` only while undeclared (a proxy URL can hold user:password).

RUN dpkg --add-architecture arm64 \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu \
      "libpython${PYTHON}-dev:arm64" python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /opt/lb-cross/include \
 && ln -s /usr/include/aarch64-linux-gnu /opt/lb-cross/include/aarch64-linux-gnu
# ^ zig searches no /usr/include; Debian's pyconfig.h includes <aarch64-linux-gnu/python3.X/pyconfig.h>,
#   so `-idirafter /opt/lb-cross/include` exposes just the arm64 multiarch headers after zig's libc.

COPY lb-ca.crt /opt/lb-cross/host-ca.crt
# zig lives in its own venv so it never conflicts with what recipes pip-install system-wide.
RUN python3 -m venv /opt/lb-cross/venv \
 && if [ -s /opt/lb-cross/host-ca.crt ]; then export PIP_CERT=/opt/lb-cross/host-ca.crt; fi \
 && /opt/lb-cross/venv/bin/pip install --no-cache-dir --disable-pip-version-check ziglang

# zig builds its libc stubs and compiler-rt once per target; do it now for every Lambda target
# so builds do not pay ~15 s each. The cache stays writable for whichever user builds.
ENV ZIG_GLOBAL_CACHE_DIR=/opt/lb-cross/zig-cache ZIG_LOCAL_CACHE_DIR=/opt/lb-cross/zig-cache
RUN printf 'int main(void){return 0;}\n' > /tmp/warm.c \
 && for t in aarch64-linux-gnu.2.26 aarch64-linux-gnu.2.34 x86_64-linux-gnu.2.26 x86_64-linux-gnu.2.34; do \
      /opt/lb-cross/venv/bin/python3 -m ziglang cc -target "$t" /tmp/warm.c -o /tmp/warm || exit 1; \
    done \
 && rm -f /tmp/warm /tmp/warm.c \
 && chmod -R a+rwX /opt/lb-cross/zig-cache

# The package lists of both architectures stay in the image (with apt's binary cache of them), so
# a cross build's multiarch install (libpq-dev:arm64, ...) needs no `apt-get update` (10-20 s, far
# more on a busy machine) unless they went stale, as in the build image. A step of its own, last,
# so the layers above (the zig warm-up above all) stay cached.
# The same step gives the target the build image's own libraries (the arm64 twin of every installed
# Multi-Arch: same lib* package, less the compiler's internals and x86-only libquadmath): a native
# build finds gnutls, ldap, sasl, krb5, icu, ... already installed, so a cross build should too, and
# its multiarch install adds what the native one adds (libpq-dev: 3 packages, not 16). If the mirror
# lacks a twin (an update published for one architecture first), the one-by-one fallback skips that
# one, not the image (slowly: one apt-get per package, so the list above must not name a package
# arm64 does not have).
RUN apt-get update && rm -f /var/lib/apt/lists/*Translation* \
 && twins=$(dpkg-query -W -f='${binary:Package} ${Multi-Arch} ${db:Status-Status}\n' \
      | awk '$2 == "same" && $3 == "installed" && $1 ~ /^lib/ {sub(/:amd64$/, ":arm64", $1); print $1}' \
      | grep -Ev '^lib(a|l|t|ub|hwa)san|^lib(cc1|ctf|gprofng|binutils|isl|mpc|mpfr|quadmath|apt-pkg|debconfclient|pam|perl)' \
      | grep -Ev '^lib(gcc|stdc\+\+)-[0-9]+-dev') \
 && export DEBIAN_FRONTEND=noninteractive \
 && { apt-get install -y --no-install-recommends $twins \
      || for p in $twins; do apt-get install -y --no-install-recommends "$p" || echo "skipped $p"; done; } \
 && apt-get clean && apt-cache gencaches

LABEL org.lambda-builder.cross=aarch64
