# The local clean runtime image: Python and nothing else (no compiler, no -dev or library
# packages), so an artifact that loads here carries its own libraries, as it must on Lambda;
# plus, like public.ecr.aws/lambda/python, the runtime interface client (awslambdaric) as its
# entrypoint, so the image (and images made FROM it) speak Lambda's Runtime API.
#
# Build context: this file as Dockerfile, plus `lb-ca.crt` (the host CA bundle, or empty).
ARG BASE

FROM ${BASE} AS lb-python
ARG DEBIAN_FRONTEND=noninteractive
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    mkdir -p /var/task /opt

# awslambdaric from PyPI, pinned: prebuilt manylinux2014 wheels for x86_64 and aarch64 (its C
# extension is never compiled here, not even under emulation). Installed in a throwaway stage on
# the same Python (installed once: under emulation that costs minutes), so pip, its venv and apt's
# lists never reach the runtime image. 4.x needs Python 3.10+ (bullseye has 3.9: 4.0.4, its last).
FROM lb-python AS ric
COPY lb-ca.crt /tmp/lb-ca.crt
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; \
    python3 -m venv /tmp/pip; \
    if [ -s /tmp/lb-ca.crt ]; then export PIP_CERT=/tmp/lb-ca.crt; fi; \
    /tmp/pip/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile --only-binary :all: \
        --target /ric 'awslambdaric==4.2.2; python_version >= "3.10"' \
        'awslambdaric==4.0.4; python_version < "3.10"' 'simplejson==3.20.1' 'snapshot-restore-py==1.0.0'; \
    rm -rf /ric/bin

FROM lb-python
# /var/runtime comes last on sys.path, as on Lambda: the function's own packages win.
COPY --from=ric /ric /var/runtime
RUN set -eu; \
    v=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    printf '%s\n' '#!/bin/sh' \
        '# The handler: the first argument (an image CMD), else $_HANDLER (what Lambda sets for a zip).' \
        "export PYTHONPATH=\"\${PYTHONPATH:-/var/task:/opt/python/lib/python$v/site-packages:/opt/python}:/var/runtime\"" \
        'exec /usr/bin/python3 -m awslambdaric "${1:-$_HANDLER}"' > /var/runtime/bootstrap; \
    chmod 0755 /var/runtime/bootstrap; \
    PYTHONPATH=/var/runtime python3 -c 'import awslambdaric.bootstrap, runtime_client'
ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime
WORKDIR /var/task
ENTRYPOINT ["/var/runtime/bootstrap"]
LABEL org.lambda-builder.role="runtime"
