"""Image references (`[registry[:port]/]path[:tag][@digest]`) and why a pull of one failed.

Stage 2 (engine). The one place a reference is split: a colon is a tag only after the last `/`,
so `reg:5000/img` is a registry with a port, not image `reg` tag `5000/img`. Pull failures are
sorted by the engine's own error text, because only an unreachable registry may send a build to
the local family (whose glibc Lambda lacks); everything else must stop the build and say why.
Pure functions of strings: no engine calls here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from builder.errors import EnvironmentProblem, LambdaBuilderError, UserError

DEFAULT_TAG = "latest"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference; `str()` gives it back in canonical form (tag `latest` when none)."""

    registry: str | None  # host[:port]; None for Docker Hub
    path: str  # e.g. sam/build-python3.11
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """What the engine calls the repository: registry/path (no tag, no digest)."""
        return f"{self.registry}/{self.path}" if self.registry else self.path

    @property
    def pull_tag(self) -> str:
        """The `tag` argument of a pull: the digest when pinned, else the tag (default latest)."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def registry_host(self) -> str:
        return self.registry or "docker.io"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}{':' + self.tag if self.tag else ''}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"


def parse_reference(text: str, *, what: str = "image") -> ImageReference:
    """Split `text` per Docker's reference grammar; a UserError names it when it is malformed."""
    rest, _, digest = text.strip().partition("@")
    first, slash, remainder = rest.partition("/")
    registry = None
    # like Docker: the first component is a registry when it has a dot or a port, or is localhost
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    name, colon, tag = rest.rpartition(":") if ":" in rest.rsplit("/", 1)[-1] else (rest, "", "")
    problems = []
    if registry is not None and not _HOST.fullmatch(registry):
        problems.append(f"registry {registry!r} is not a host[:port]")
    if not name or not all(_COMPONENT.fullmatch(part) for part in name.split("/")):
        problems.append("the repository path must be lowercase letters, digits and . _ - separated by /")
    if colon and not _TAG.fullmatch(tag):
        problems.append(f"tag {tag!r} is not a valid tag")
    if digest and not _DIGEST.fullmatch(digest):
        problems.append(f"digest {digest!r} is not ALGORITHM:HEX (e.g. sha256:<64 hex digits>)")
    if problems:
        raise UserError(
            f"{what} {text!r} is not a valid image reference: " + "; ".join(problems),
            hint="use [REGISTRY[:PORT]/]PATH[:TAG][@sha256:DIGEST], e.g. 127.0.0.1:5000/team/build:1.0",
        )
    return ImageReference(registry, name, tag or None, digest or None)


PullProblem = Literal["unreachable", "auth", "not-found", "rate-limited", "other"]

# The engine reports a registry it cannot talk to with Go's net errors (dial, DNS, TLS, timeouts).
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "server misbehaving",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "i/o timeout",
    "tls handshake timeout",
    "connection reset by peer",
    "context deadline exceeded",
    "client.timeout exceeded",
    "dial tcp",
)
_RATE_LIMITED = ("toomanyrequests", "too many requests", "rate limit", "rate exceeded")
_AUTH = ("unauthorized", "authentication required", "no basic auth credentials", "denied", "forbidden")
_NOT_FOUND = ("manifest unknown", "not found", "name unknown", "does not exist", "no matching manifest")


def classify_pull_error(message: str, status: int | None = None) -> PullProblem:
    """Which kind of failure the engine's pull error describes (its text is all it gives us).

    Order matters: Docker Hub answers an unknown repository with "pull access denied ... does not
    exist", a not-found that mentions denial. Bare status numbers are not matched in the text: a
    URL's port could hold them; `status` is the engine's HTTP status (404 for an unknown image).
    """
    text = message.lower()
    if any(word in text for word in _RATE_LIMITED):
        return "rate-limited"
    if any(word in text for word in _UNREACHABLE):
        return "unreachable"
    if status == 429:
        return "rate-limited"
    if status == 404 or any(word in text for word in _NOT_FOUND):
        return "not-found"
    if any(word in text for word in _AUTH):
        return "auth"
    return "other"


def pull_error(
    ref: ImageReference, problem: PullProblem, detail: str, *, what: str = "image", also: str = ""
) -> LambdaBuilderError:
    """The error for an image that must be used and cannot be pulled: 2 when the reference or its
    credentials are wrong, 3 when the registry cannot be used from here right now."""
    host = ref.registry_host
    base = f"{what} {ref}: cannot pull it ({problem}): {detail}"
    hints = {
        "not-found": "check the name and tag (`docker images` lists what the engine has)",
        "auth": f"log in first (docker login {host}), or check the repository name",
        "rate-limited": f"{host} limits anonymous pulls: wait, or docker login {host}",
        "unreachable": f"{host} cannot be reached from the engine: check the network or proxy",
        "other": "",
    }
    hint = "; ".join(h for h in (hints[problem], also) if h) or None
    if problem in ("not-found", "auth"):
        return UserError(base, hint=hint)
    return EnvironmentProblem(base, hint=hint)
