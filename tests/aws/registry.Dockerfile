# An image registry for the push test, from Debian's docker-registry package (no registry to pull from).
# It checks basic auth against the login the AWS emulator's ECR GetAuthorizationToken hands out
# (user AWS, password ACCOUNT-auth-token), so a push only succeeds with the ECR credentials.
ARG BASE=lambda-builder/base:bookworm-x86_64
FROM ${BASE}
ARG HTTP_PROXY
ARG HTTPS_PROXY
ARG NO_PROXY
ARG ECR_PASSWORD=123456789012-auth-token
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry apache2-utils \
 && rm -rf /var/lib/apt/lists/* \
 && htpasswd -Bbn AWS "${ECR_PASSWORD}" > /etc/docker/registry/htpasswd
ENV REGISTRY_AUTH_HTPASSWD_PATH=/etc/docker/registry/htpasswd
EXPOSE 5000
CMD ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]
