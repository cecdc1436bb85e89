# The local clean runtime image: Python and nothing else (no compiler, no -dev or library
# packages), so an artifact that loads here carries its own libraries, as it must on Lambda.
ARG BASE
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    mkdir -p /var/task /opt
ENV LAMBDA_TASK_ROOT=/var/task
WORKDIR /var/task
LABEL org.lambda-builder.role="runtime"
