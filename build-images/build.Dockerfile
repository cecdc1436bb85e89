# The local build image: a Debian release with a C/C++ toolchain and the Python headers of the
# runtime, standing in for public.ecr.aws/sam/build-<runtime> where no registry can be reached.
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
        ccache patchelf file binutils ca-certificates curl xz-utils bzip2 unzip zip git; \
    rm -f /var/cache/apt/archives/*.deb /var/lib/apt/lists/*Translation*; \
    apt-cache gencaches
LABEL org.lambda-builder.role="build"
