"""Secrets out of what is shown: URL credentials and query values, wherever a URL or an
environment value is printed, logged, raised or written.

The vocabulary every stage shares (the lowest layer, standard library only, so `errors` and the
no-op path can use it). `https://user:token@host/p?X-Amz-Signature=s` is shown as
`https://***@host/p?X-Amz-Signature=***`: enough to tell which URL it was, nothing to reuse.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,;:)\]}]")


def redact_url(url: str) -> str:
    """The URL without its user:password and with every query value masked; other text unchanged."""
    if "://" not in url:  # a proxy variable without a scheme: user:password@host:port
        return f"{MASK}@{url.rpartition('@')[2]}" if "@" in url else url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(_mask_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return url
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    return f"{name}={MASK}" if eq and value else pair


def redact_text(text: str) -> str:
    """Every URL inside free text (an error, a log line, an engine's message) redacted."""
    if "://" not in text and "@" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def url_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without user:password, "user:password" or None): credentials travel in a header
    that is never logged nor sent on to a redirect's host, not in the URL that gets shown."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, urllib.parse.unquote(userinfo)
