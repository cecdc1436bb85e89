"""The recipe's `secrets:` field: which secrets a build needs (by id) and what each is for.

Stage recipe: values only. A value never appears in a recipe (it is given at build time with
--secret), so nothing here reads one; must not know Docker, images or builds.
"""

from __future__ import annotations

from typing import Any

from builder.recipe.model import SecretUse


def secret_use(raw: str | dict[str, Any]) -> SecretUse:
    if isinstance(raw, str):
        return SecretUse(raw)
    return SecretUse(
        raw["id"],
        url=raw.get("url"),
        auth=raw.get("auth", "basic"),
        ssh=raw.get("ssh"),
        known_hosts=raw.get("known_hosts"),
        known_hosts_secret=raw.get("known_hosts_secret"),
    )


def secret_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """What the schema cannot say, as (field path, message): one entry per id, a host key for every
    SSH key (no trust on first use), a whole-header secret only for URLs."""
    listed = data.get("secrets")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: set[Any] = set()
    for i, raw in enumerate(listed if isinstance(listed, list) else []):
        where: tuple[str | int, ...] = ("secrets", i)
        entry = raw if isinstance(raw, dict) else {"id": raw}
        name = entry.get("id")
        if isinstance(name, str) and name in seen:
            problems.append((where, f"the secret {name!r} is already listed; keep one entry per id"))
        seen.add(name)
        if entry.get("ssh") and not (entry.get("known_hosts") or entry.get("known_hosts_secret")):
            problems.append(
                (where, "an ssh key needs the host's public key: add known_hosts (the lines `ssh-keyscan HOST` "
                 "prints) or known_hosts_secret")
            )
        if entry.get("auth") == "header" and not entry.get("url"):
            problems.append((where, "auth: header needs url: (the URLs the header is sent to)"))
    return problems
