"""Getting each recipe source onto the host, verified and cached (then its digest and tar stream
come from recipe.sourcetree, re-exported here for the stages that use them).

Sources reach the build container with `put_archive`, never via bind mounts, so a remote
DOCKER_HOST works. Remote content is trusted only through its sha256: downloads land under
a temporary name and are renamed into the content-addressed cache only once the hash matched,
so the cache never holds a file that was not verified.

Stage recipe: fetches on the host (path, url, PyPI); must not know Docker, images or builds.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json
import os
import re
import ssl
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, cast

from builder import __version__
from builder.digest import file_sha256
from builder.errors import UserError
from builder.recipe.model import Source
from builder.recipe.sourcetree import CHUNK, unpack_archive
from builder.recipe.sourcetree import SKIP_NAMES as SKIP_NAMES  # what callers import from here
from builder.recipe.sourcetree import source_digest as source_digest
from builder.recipe.sourcetree import source_tar as source_tar
from builder.redact import redact_text, redact_url, url_credentials

Progress = Callable[[str], None]

PYPI_URL_ENV = "LAMBDA_BUILDER_PYPI_URL"
DEFAULT_PYPI_URL = "https://pypi.org"
HTTP_TIMEOUT = 60.0  # seconds without data before a download is given up
USER_AGENT = f"lambda-builder/{__version__}"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PIN = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")


def fetch_source(
    src: Source,
    download_dir: Path,
    *,
    progress: Progress | None = None,
    recipe_dir: Path | None = None,
    authorization: str | None = None,
) -> Path:
    """The host path of `src`: the folder itself, or the verified archive in `download_dir`.

    `authorization` is an Authorization header value for a url source (from a secret or the
    netrc), sent to that URL's host only and never shown.

    `download_dir` is a content-addressed cache (file names start with the sha256), so a
    second fetch of the same content does no network I/O. `recipe_dir` only makes error
    messages show local paths the way the recipe wrote them.
    """
    say = progress or (lambda _msg: None)
    kinds = [k for k, v in (("path", src.path), ("url", src.url), ("pypi", src.pypi)) if v]
    if len(kinds) != 1:
        raise UserError(f"source {src.name!r}: set exactly one of path, url, pypi (got {kinds or 'none'})")
    download_dir.mkdir(parents=True, exist_ok=True)
    if src.path is not None:
        return _fetch_local(src, src.path, download_dir, recipe_dir)
    if src.url is not None:
        if not src.sha256:
            raise UserError(
                f"source {src.name!r}: url {src.url} has no sha256",
                hint="add `sha256: <hex>` (e.g. from `sha256sum` of the downloaded file)",
            )
        expected = _check_sha(src, src.sha256)
        return _download(src, src.url, expected, _file_name(src.url), download_dir, say, authorization)
    assert src.pypi is not None
    return _fetch_pypi(src, src.pypi, download_dir, say)


def _check_sha(src: Source, value: str) -> str:
    sha = value.strip().lower()
    if not _SHA256.match(sha):
        raise UserError(f"source {src.name!r}: sha256 {value!r} is not 64 hexadecimal characters")
    return sha


def _shown(path: Path, recipe_dir: Path | None) -> str:
    if recipe_dir is None:
        return str(path)
    return os.path.relpath(path, recipe_dir)


def _fetch_local(src: Source, path: Path, download_dir: Path, recipe_dir: Path | None) -> Path:
    if path.is_dir():
        return path
    if not path.is_file():
        raise UserError(
            f"source {src.name!r}: path {_shown(path, recipe_dir)} does not exist",
            hint="paths are relative to the recipe's folder",
        )
    if not (zipfile.is_zipfile(path) or _is_tar(path)):
        raise UserError(
            f"source {src.name!r}: {_shown(path, recipe_dir)} is neither a folder nor an archive",
            hint="supported archives: .tar.gz .tgz .tar.xz .tar.bz2 .tar .zip",
        )
    actual = file_sha256(path)
    if src.sha256 and _check_sha(src, src.sha256) != actual:
        raise UserError(
            f"source {src.name!r}: sha256 mismatch for {_shown(path, recipe_dir)}: "
            f"expected {_check_sha(src, src.sha256)}, got {actual}"
        )
    final = download_dir / f"{actual}-{_safe_name(path.name)}"
    if not final.exists():
        with path.open("rb") as data:
            _store(data, final, actual, src, str(path), None)
    return final


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError):
        return False


def _fetch_pypi(src: Source, spec: str, download_dir: Path, say: Progress) -> Path:
    match = _PIN.match(spec)
    if not match:
        raise UserError(
            f"source {src.name!r}: pypi {spec!r} is not pinned to one version",
            hint='pin the version, e.g. `pypi: "name==1.2.3"`, so the build is reproducible',
        )
    name, version = match.groups()
    pin = _check_sha(src, src.sha256) if src.sha256 else None
    if pin:
        cached = _cached(download_dir, pin)
        if cached:
            return cached
    url, sha, filename = _resolve_sdist(src, name, version, download_dir)
    if pin and pin != sha:
        raise UserError(
            f"source {src.name!r}: sha256 mismatch for pypi {name}=={version} ({url}): "
            f"expected {pin}, the index lists {sha}"
        )
    return _download(src, url, sha, filename, download_dir, say)


def _resolve_sdist(src: Source, name: str, version: str, download_dir: Path) -> tuple[str, str, str]:
    """(url, sha256, filename) of the sdist; remembered next to the downloads, as releases are immutable."""
    index = os.environ.get(PYPI_URL_ENV, DEFAULT_PYPI_URL).rstrip("/")
    normalized = re.sub(r"[-_.]+", "-", name).lower()
    memo = download_dir / f"pypi-{normalized}-{_safe_name(version)}.json"
    key = hashlib.sha256(index.encode()).hexdigest()[:16]
    try:
        remembered = json.loads(memo.read_text())[key]
        return str(remembered["url"]), str(remembered["sha256"]), str(remembered["filename"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    api = f"{index}/pypi/{urllib.parse.quote(name)}/{urllib.parse.quote(version)}/json"
    try:
        with _open(src, api) as response:
            release = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise UserError(f"source {src.name!r}: {name}=={version} is not on {index} ({api})") from None
        raise _http_error(src, api, exc) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _http_error(src, api, exc) from None
    except ValueError as exc:
        raise UserError(f"source {src.name!r}: {api} did not return JSON ({exc})") from None
    sdists = [u for u in release.get("urls", []) if isinstance(u, dict) and u.get("packagetype") == "sdist"]
    if not sdists:
        raise UserError(
            f"source {src.name!r}: {name}=={version} has no sdist on {index}",
            hint="use `url:` with the release tarball instead",
        )
    sdist = sdists[0]
    try:
        url, filename = str(sdist["url"]), str(sdist["filename"])
        sha = _check_sha(src, str(sdist["digests"]["sha256"]))
    except (KeyError, TypeError):
        raise UserError(f"source {src.name!r}: {api} lists an sdist without url/sha256/filename") from None
    try:
        entries = json.loads(memo.read_text()) if memo.exists() else {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = {"url": url, "sha256": sha, "filename": filename}
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    os.replace(tmp, memo)
    return url, sha, filename


def _cached(download_dir: Path, sha: str) -> Path | None:
    for candidate in sorted(download_dir.glob(f"{sha}-*")):
        if candidate.is_file():
            return candidate
    return None


def _download(
    src: Source, url: str, sha: str, filename: str, download_dir: Path, say: Progress, authorization: str | None = None
) -> Path:
    final = download_dir / f"{sha}-{_safe_name(filename)}"
    if final.is_file():
        return final
    cached = _cached(download_dir, sha)  # same content under another name (e.g. a mirror)
    if cached:
        return cached
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise UserError(f"source {src.name!r}: url {url} must be http:// or https://")
    say(f"downloading {src.name} from {redact_url(url)}")
    try:
        with _open(src, url, authorization) as response:
            _store(response, final, sha, src, redact_url(url), redact_url(url))
    except urllib.error.HTTPError as exc:
        raise _http_error(src, url, exc) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _http_error(src, url, exc) from None
    say(f"downloaded {src.name}: {final.stat().st_size / 1e6:.1f} MB")
    return final


def _store(data: IO[bytes], final: Path, sha: str, src: Source, origin: str, url: str | None) -> None:
    """Copy `data` into the cache as `final`, atomically and only if its sha256 is `sha`."""
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".part-", suffix=".tmp")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := data.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != sha:
            where = f" from {url}" if url else f" ({origin})"
            raise UserError(
                f"source {src.name!r}: sha256 mismatch for the download{where}: expected {sha}, got {actual}",
                hint="the file changed upstream or was tampered with; check it, then update sha256",
            )
        # unpack it once now, so a hostile archive is refused before any container starts and
        # the download cache holds only archives that unpack safely
        with tempfile.TemporaryDirectory(prefix="lambda-builder-check-") as check:
            unpack_archive(tmp, Path(check) / "tree", archive=f"{final.name.partition('-')[2]} (source {src.name!r})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _open(src: Source, url: str, authorization: str | None = None) -> http.client.HTTPResponse:
    """Open `url` honouring proxy env vars (urllib does) and a corporate CA bundle if configured.

    user:password in the URL (urllib would take it for part of the host name) becomes basic auth,
    in a header urllib never carries on to the host of a redirect (a presigned S3 URL, say)."""
    bare, credentials = url_credentials(url)
    request = urllib.request.Request(bare, headers={"User-Agent": USER_AGENT})
    if credentials is not None:
        token = base64.b64encode(credentials.encode()).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {token}")
    elif authorization is not None:
        request.add_unredirected_header("Authorization", authorization)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(),
        urllib.request.HTTPSHandler(context=_ssl_context(src)),
    )
    return cast(http.client.HTTPResponse, opener.open(request, timeout=HTTP_TIMEOUT))


def _ssl_context(src: Source) -> ssl.SSLContext:
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        bundle = os.environ.get(var)
        if not bundle:
            continue
        try:
            return _context_for(bundle)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"source {src.name!r}: cannot load CA bundle {var}={bundle} ({exc})") from None
    return _context_for(None)


@functools.lru_cache(maxsize=4)
def _context_for(bundle: str | None) -> ssl.SSLContext:
    """Loading a CA bundle costs ~0.1 s; a recipe with many sources should pay it once."""
    if bundle is None:
        return ssl.create_default_context()
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def _http_error(src: Source, url: str, exc: BaseException) -> UserError:
    if isinstance(exc, urllib.error.HTTPError):
        why = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        why = str(exc.reason)
    else:
        why = redact_text(str(exc)) or type(exc).__name__
    hint: str | None = "check the network, or HTTPS_PROXY/HTTP_PROXY/NO_PROXY if you are behind a proxy"
    if "CERTIFICATE_VERIFY_FAILED" in why:
        hint = "behind a TLS-intercepting proxy? set SSL_CERT_FILE to your company's CA bundle"
    elif isinstance(exc, urllib.error.HTTPError) and exc.code == 401:
        hint = (
            "the server wants credentials: list a secret with `url:` for it in the recipe's secrets "
            "and pass --secret, or add its host to ~/.netrc"
        )
    elif isinstance(exc, urllib.error.HTTPError):
        hint = "check the url" if exc.code in (403, 404, 410) else None
    return UserError(f"source {src.name!r}: cannot download {redact_url(url)}: {why}", hint=hint)


def _file_name(url: str) -> str:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return PurePosixPath(path).name or "download"


def _safe_name(name: str) -> str:
    """A cache file name part: no separators or odd characters, archive suffix kept."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return cleaned[-100:] or "download"
