# The local build image: a Debian release with a C/C++ toolchain and the Python headers of the
# runtime, standing in for public.ecr.aws/sam/build-<runtime> where no registry can be reached.
# It carries the headers the most common native Python packages build against (psycopg2: libpq;
# lxml: libxml2/libxslt; cffi: libffi; cryptography and others: OpenSSL; zlib), as a build image
# meant for them does: a recipe that names them finds them installed and runs no apt at all.
ARG BASE
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
# Builds install their system packages into throwaway containers: dpkg need not fsync every file
# (costly on overlay storage), and docs/man pages are never packaged. The package lists stay in
# the image with apt's binary cache of them (building it costs 1.5 s), so a build's `apt-get install`
# needs no `apt-get update` (4-5 s) unless they went stale. Translations are never fetched.
RUN set -eux; \
    echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/lambda-builder-unsafe-io; \
    echo 'Acquire::Languages "none";' > /etc/apt/apt.conf.d/lambda-builder-no-translations; \
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        > /etc/dpkg/dpkg.cfg.d/lambda-builder-nodoc; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        build-essential autoconf automake libtool pkg-config cmake ninja-build make \
        python3 python3-dev python3-pip python3-venv python3-setuptools python3-wheel \
        ccache patchelf file binutils ca-certificates curl xz-utils bzip2 unzip zip git \
        libpq-dev libxml2-dev libxslt1-dev libffi-dev libssl-dev zlib1g-dev; \
    rm -f /var/cache/apt/archives/*.deb /var/lib/apt/lists/*Translation*; \
    apt-cache gencaches; \
    mkdir -p /opt/lambda-builder/ccache; \
    ln -s /usr/bin/ccache /opt/lambda-builder/ccache/cc; ln -s /usr/bin/ccache /opt/lambda-builder/ccache/c++
# (the last line: Debian's ccache masquerade folder, /usr/lib/ccache, has gcc and g++ but not cc and
# c++, which make's default CC, CMake and many build scripts call: links of our own, on the builds' PATH)
# uv for the uv installer (and `installer: auto`, which picks it here), from uv-requirements.txt (the
# build arg: the pin, public) with hashes required, so no build has to install it first; the
# context's lb-ca.crt is the host's CA bundle (or empty), for a TLS-intercepting proxy
ARG UV_REQUIREMENTS
COPY lb-ca.crt /tmp/lb-ca.crt
RUN set -eu; printf '%s\n' "$UV_REQUIREMENTS" > /tmp/uv.txt; \
    version=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' /tmp/uv.txt); \
    if [ -s /tmp/lb-ca.crt ]; then export PIP_CERT=/tmp/lb-ca.crt; fi; \
    python3 -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps --only-binary=:all: \
        --require-hashes --target "/opt/lambda-builder/uv-$version" -r /tmp/uv.txt; \
    "/opt/lambda-builder/uv-$version/bin/uv" --version; rm /tmp/uv.txt /tmp/lb-ca.crt
LABEL org.lambda-builder.role="build"
