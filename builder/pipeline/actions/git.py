"""Stage pipeline: the commit each git+ requirement's ref names, resolved in the build container
(where its credentials are: a token through git's credential helper, an SSH key or agent) before
pip runs, so pip installs exactly that commit and the cache key and manifest can name it.

Runs only through the Container, with the secrets present for this one step; must not choose an
image, a mode or a policy.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from builder.engine import private
from builder.errors import BuildFailed, UserError
from builder.pipeline.context import BuildContext
from builder.pipeline.secrets import SECRETS_DIR, is_commit
from builder.recipe.requirements import GitPin, GitRequirement
from builder.redact import redact_url


def resolve_refs(ctx: BuildContext, wanted: Sequence[GitRequirement]) -> dict[str, GitPin]:
    """requirement -> (repository, ref, commit) for each git requirement; a full commit is taken as
    written, any other ref (branch, tag, none: HEAD) is asked of the repository."""
    out: dict[str, GitPin] = {}
    script = ["command -v git >/dev/null || { echo 'git is not in the build image'; exit 3; }"]
    asked: list[GitRequirement] = []
    for req, repo, ref in wanted:
        if is_commit(ref):
            out[req] = (repo, ref, str(ref))
            continue
        if repo.startswith("ssh://"):
            script.append("command -v ssh >/dev/null || { echo 'ssh is not in the build image'; exit 4; }")
        name = ref or "HEAD"
        script.append(f"echo '@@ {len(asked)}'")
        script.append(f"git ls-remote -- {shlex.quote(repo)} {shlex.quote(name)} {shlex.quote(name + '^{}')}")
        asked.append((req, repo, ref))
    if not asked:
        return out
    with private.present(ctx.container, SECRETS_DIR, ctx.secret_files):
        try:
            text = ctx.container.run(
                "\n".join(script), step="resolve git refs", env={**ctx.env, **ctx.secret_env}, quiet=True,
                max_output=None,
            )  # fmt: skip
        except BuildFailed as exc:
            if "ssh is not in the build image" in exc.tail:
                raise UserError(
                    f"{ctx.recipe.path}: a git+ssh requirement needs ssh, which {ctx.image.name} lacks",
                    hint="add openssh-client to system_packages.apt (or openssh-clients to .dnf)",
                ) from None
            raise
    found: dict[int, list[tuple[str, str]]] = {}
    current = -1
    for line in text.splitlines():
        if line.startswith("@@ "):
            current = int(line[3:])
            found[current] = []
        elif "\t" in line and current >= 0:
            commit, _, name = line.partition("\t")
            found[current].append((commit.strip(), name.strip()))
    for i, (req, repo, ref) in enumerate(asked):
        refs = found.get(i, [])
        peeled = [c for c, n in refs if n.endswith("^{}")]  # an annotated tag: the commit it names
        commits = peeled or [c for c, _ in refs]
        if not commits:
            raise UserError(
                f"{ctx.recipe.path}: {redact_url(repo)} has no branch or tag {ref or 'HEAD'!r}",
                hint="check the name after '@' in the requirement, or pin a full 40-digit commit",
            )
        if len(set(commits)) > 1:
            raise UserError(
                f"{ctx.recipe.path}: {ref!r} names several refs in {redact_url(repo)}",
                hint="write the full name (refs/heads/NAME or refs/tags/NAME) or a commit",
            )
        out[req] = (repo, ref, commits[0])
    return out


def manifest_field(pins: dict[str, GitPin]) -> dict[str, str]:
    """`repository@ref` (credentials masked) -> commit, for the manifest's `git`."""
    return {f"{redact_url(repo)}@{ref or 'HEAD'}": commit for repo, ref, commit in sorted(pins.values())}
