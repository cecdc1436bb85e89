"""Plain helpers the tests import directly (emulator.py is loaded as a pytest plugin instead)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REGION = "us-east-1"
REGISTRY_LOGIN = ("AWS", "123456789012-auth-token")  # what the emulator's ECR hands out


def isolate_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets counts: no host profile, no config file, and never the metadata service."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released), for the unreachable-endpoint case."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
