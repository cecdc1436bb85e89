# The local build image: a Debian release with a C/C++ toolchain and the Python headers of the
# runtime, standing in for public.ecr.aws/sam/build-<runtime> where no registry can be reached.
ARG BASE
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        build-essential autoconf automake libtool pkg-config cmake ninja-build make \
        python3 python3-dev python3-pip python3-venv python3-setuptools python3-wheel \
        ccache patchelf file binutils ca-certificates curl xz-utils bzip2 unzip zip git; \
    rm -rf /var/lib/apt/lists/*
LABEL org.lambda-builder.role="build"
