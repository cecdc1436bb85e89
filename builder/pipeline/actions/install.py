"""Stage pipeline: the Python requirements step, by pip or by uv, with the same meaning.

Both installers get the same instructions: wheels only except `build_from_source` (built from
their sdist), build isolation on or off, the recipe's indexes (through the environment, never the
command line), the wheel cache keyed like pip's (context.wheel_cache_dir), the parallel compile
hook, and in cross mode the target's platform tags. Each leaves a provenance file in REPORTS
(pip's `--report` JSON, uv's PEP 751 `pylock.toml`) that the SBOM is made from. The local build
images carry uv; on other images it is installed on first use with the image's pip, pinned by
version and hashes, into the per-arch cache volume (so once per engine and arch).

Actions run what the context says; they never choose an image, a mode or a policy.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.engine import private
from builder.errors import UserError
from builder.pipeline import built_wheels, cross_pip
from builder.pipeline.context import (
    CACHE,
    PYSRC,
    REPORTS,
    REQS,
    UV_IN_IMAGE,
    UV_REQUIREMENTS,
    UV_VERSION,
    BuildContext,
    built_wheel_inputs,
    pip_env,
    uv_env,
)
from builder.pipeline.scripts import PATH_PREFIX, PIP_CACHE_LINKS, hook_script
from builder.pipeline.secrets import SECRETS_DIR, pinned, pinned_text
from builder.recipe import sources
from builder.recipe.model import is_local_project
from builder.runtimes import UNAME_MACHINE
from builder.tarsafe import tar_bytes, tar_from_dir

PIP_REPORT = f"{REPORTS}/pip-report.json"
UV_LOCK = f"{REPORTS}/pylock.toml"
WHEELS = cross_pip.WHEELS  # target wheels built before the install (cross_pip)

# The uv step's shell, in two parts ({python} is filled in per build).
UV_INDEX_ENV = """\
# uv reads no pip.conf: the index settings (credentials included) on the secrets tmpfs become uv's
# variables inside this shell only, never the exec's environment that `docker inspect` shows
if [ -n "${PIP_CONFIG_FILE:-}" ] && [ -f "$PIP_CONFIG_FILE" ]; then
  eval "$({python} -c 'import configparser, shlex, sys
c = configparser.RawConfigParser(); c.read(sys.argv[1])  # as pip reads it: % is literal
names = {"index-url": "UV_INDEX_URL", "extra-index-url": "UV_EXTRA_INDEX_URL", "trusted-host": "UV_INSECURE_HOST"}
for key, var in names.items():
    value = " ".join(c.get("global", key, fallback="").split())
    if value:
        print(f"export {var}={shlex.quote(value)}")' "$PIP_CONFIG_FILE" 2>/dev/null)"  # never echo it
fi
"""

# uv itself, as $UV: the local build images' own, else from the index with the image's pip, once per
# cache volume (a temp folder renamed into place: two builds installing at once both end with a
# whole uv); without the volume (--no-cache) into the container
UV_LOCATE = f"""\
if [ -d {CACHE} ] && [ -z "${{PIP_NO_CACHE_DIR:-}}" ]; then tools={CACHE}/tools; else tools=/lb/tools; fi
UV="$tools/uv-{UV_VERSION}/bin/uv"
if [ -x {UV_IN_IMAGE}/bin/uv ]; then UV={UV_IN_IMAGE}/bin/uv
elif [ ! -x "$UV" ]; then
  echo "installing uv {UV_VERSION} (once per engine and architecture)"
  mkdir -p "$tools"; tmp=$(mktemp -d "$tools/.uv-XXXXXX")
  {{python}} -m pip install -q --timeout 120 --no-deps --only-binary=:all: --require-hashes --target "$tmp" \\
    -r {UV_REQUIREMENTS} || {{ rm -rf "$tmp"; exit 1; }}
  mv -T "$tmp" "$tools/uv-{UV_VERSION}" 2>/dev/null || rm -rf "$tmp"
fi
"""

# the installed distributions pinned (name==version), minus those that came from a path or URL,
# whose direct_url.json already says where they came from: what `uv pip compile` looks up again
PINS = r"""
import email.parser, json, os, sys
root = sys.argv[1]
for d in sorted(os.listdir(root)):
    if not d.endswith(".dist-info") or os.path.exists(os.path.join(root, d, "direct_url.json")):
        continue
    with open(os.path.join(root, d, "METADATA"), encoding="utf-8", errors="replace") as f:
        meta = email.parser.Parser().parse(f, headersonly=True)
    print(f"{meta['Name']}=={meta['Version']}")
"""

# what uv leaves that pip does not and no Lambda reads: the target folder's lock file, and its
# cache records in dist-info (uv_cache.json holds the install time: no two zips would match),
# taken out of RECORD too
UV_TIDY = r"""
import os, sys
root = sys.argv[1]
lock = os.path.join(root, ".lock")
if os.path.isfile(lock):
    os.remove(lock)
for d in sorted(os.listdir(root)):
    if not d.endswith(".dist-info"):
        continue
    gone = [f for f in ("uv_cache.json", "uv_build.json") if os.path.isfile(os.path.join(root, d, f))]
    for f in gone:
        os.remove(os.path.join(root, d, f))
    record = os.path.join(root, d, "RECORD")
    if gone and os.path.isfile(record):
        with open(record, encoding="utf-8") as fh:
            lines = fh.readlines()
        kept = [line for line in lines if not any(line.startswith(f"{d}/{f},") for f in gone)]
        with open(record, "w", encoding="utf-8") as fh:
            fh.writelines(kept)
"""


@dataclass(frozen=True)
class PipInstall:
    """The recipe's Python requirements into the artifact, by the build's installer."""

    name: str = "pip install"

    def run(self, ctx: BuildContext) -> None:
        spec = ctx.recipe.python
        found = ctx.requirements
        if not spec.requirements and found is None:
            return
        if ctx.runtime.python is None:
            raise UserError(
                f"{ctx.recipe.path}: python.requirements given, but {ctx.runtime.name} has no Python",
                hint="use a python3.x runtime, or drop python.requirements",
            )
        args: list[str] = []
        for i, req in enumerate(spec.requirements):
            if is_local_project(req):
                tar = tar_from_dir(Path(req), str(i), exclude=sources.SKIP_NAMES)
                with tar:
                    ctx.container.put_tar(PYSRC, tar.read())
                args.append(f"{PYSRC}/{i}")
            else:
                args.append(pinned(req, *ctx.git[req]) if req in ctx.git else req)
        if found is not None:  # the files as read for the key, under neutral names (-r/-c rewritten, git pinned)
            texts = {name: (pinned_text(text, ctx.git).encode(), 0o644) for name, text in found.files}
            ctx.container.put_tar(REQS, tar_bytes(texts))
            for root in found.roots:
                args += ["-r", f"{REQS}/{root}"]
        local = [a for a in args if a.startswith(PYSRC)]
        script = f"mkdir -p {REPORTS}\n{PATH_PREFIX}"
        if ctx.target.cross and (local or spec.build_from_source):
            # local projects and build_from_source sdists become target wheels with the cross
            # toolchain and build isolation (pipeline/cross_pip.py), installed as files
            names = [a for a in args if not a.startswith(PYSRC)]  # "-r", "/lb/reqs/0.txt" pairs stay together
            build = cross_pip.wheel_command(
                ctx.python, local, names, spec.build_from_source, isolation=spec.build_isolation
            )
            if build is not None:
                build_machine = UNAME_MACHINE[ctx.target.engine_arch]
                script += hook_script(ctx.python) + shlex.join(build) + "\n"
                script += cross_pip.check_built(build_machine, UNAME_MACHINE[ctx.arch])
                built = cross_pip.built_wheels(UNAME_MACHINE[ctx.arch])
                args = [*cross_pip.left_to_install(names, spec.build_from_source), built]
        if ctx.target.installer == "uv":
            env = uv_env(ctx)
            script += self._uv(ctx, args, local)
        else:
            env = pip_env(ctx)
            script += self._pip(ctx, args, env)
        with private.present(ctx.container, SECRETS_DIR, ctx.secret_files):
            ctx.container.run(script, step=self.name, env=env, workdir="/")
        ctx.provenance = self._read_provenance(ctx)

    def _options(self, ctx: BuildContext, no_binary: Sequence[str]) -> list[str]:
        """What both installers are told: wheels only but for build_from_source, isolation."""
        spec = ctx.recipe.python
        options = ["--only-binary=:all:"]
        if no_binary:
            options.append("--no-binary=" + ",".join(no_binary))
        if not spec.build_isolation:
            options.append("--no-build-isolation")
        return options

    def _pip(self, ctx: BuildContext, args: list[str], env: dict[str, str]) -> str:
        spec = ctx.recipe.python
        built = ""
        no_binary: Sequence[str] = () if ctx.target.cross else spec.build_from_source  # cross: built before
        if not ctx.target.cross:
            # pinned build_from_source wheels are built once and reused (pipeline/built_wheels.py)
            prebuilt = built_wheels.plan(
                args, spec.build_from_source, python=ctx.python, cache_root=f"{CACHE}/built-wheels",
                key_inputs=built_wheel_inputs(ctx, env), isolation=spec.build_isolation,
            )  # fmt: skip
            built, args, no_binary = prebuilt.script + "\n", list(prebuilt.args), prebuilt.no_binary
        options = ["--no-compile", "--target", ctx.target_dir, *self._options(ctx, no_binary)]
        if no_binary and not ctx.target.cross:
            # Debian's pip would otherwise fall back to the deprecated `setup.py install`
            options.append("--use-pep517")
        if ctx.target.cross:
            machine = "aarch64" if ctx.arch == "arm64" else "x86_64"
            platforms = [f"--platform={tag}" for tag in cross_pip.manylinux_platforms(ctx.runtime.glibc, machine)]
            options += [*platforms, "--implementation", "cp", "--python-version", str(ctx.runtime.python)]
            options += ["--find-links", WHEELS, *(["--no-index"] if ":all:" in spec.build_from_source else [])]
        # pip >= 22.2 writes what it installed from where (pip 23 made the format stable)
        report = (
            f'if {ctx.python} -c "import pip, sys; sys.exit(int(pip.__version__.split(\'.\')[0]) < 23)"; then '
            f"report='--report {PIP_REPORT}'; else report=''; fi\n"
        )
        hook = PIP_CACHE_LINKS if ctx.target.cross else hook_script(ctx.python)
        command = shlex.join([ctx.python, "-m", "pip", "install", *options])
        return f"mkdir -p {WHEELS}\n{hook}{built}{report}{command} $report {_words(args)}\n"

    def _uv(self, ctx: BuildContext, args: list[str], local: list[str]) -> str:
        python_version = str(ctx.runtime.python)
        # uv reuses its own builds (its cache: context.uv_env); cross builds built them before
        no_binary = () if ctx.target.cross else ctx.recipe.python.build_from_source
        options = ["--python", ctx.python, "--target", ctx.target_dir, *self._options(ctx, no_binary)]
        if ctx.requirements is not None and ctx.requirements.hashes:
            options.append("--require-hashes")  # pip's hash-checking mode: every requirement hashed, not just some
        build = ""
        if local and not ctx.target.cross:
            # uv's --only-binary=:all: refuses to build local projects too (pip builds them): they
            # become wheels first, with the same isolation, and install as wheels
            isolation = [] if ctx.recipe.python.build_isolation else ["--no-build-isolation"]
            for project in local:
                command = shlex.join(["$UV", "build", "--wheel", "-o", WHEELS, "--python", ctx.python, *isolation])
                command += " " + shlex.quote(project)
                build += command.replace("'$UV'", '"$UV"') + "\n"
            args = [a for a in args if not a.startswith(PYSRC)] + [f"{WHEELS}/*.whl"]
        platform: list[str] = []
        if ctx.target.cross:
            machine = "aarch64" if ctx.arch == "arm64" else "x86_64"
            platform = ["--python-platform", uv_platform(ctx.runtime.glibc, machine)]
            options += [*platform, "--python-version", python_version, "--find-links", WHEELS]
        install = shlex.join(["$UV", "pip", "install", *options]).replace("'$UV'", '"$UV"')
        pins = shlex.join([ctx.python, "-c", PINS, ctx.target_dir])
        lock = shlex.join(["pip", "compile", "-", "--no-deps", "--format", "pylock.toml", "--no-header",
                           "--quiet", "--python-version", python_version, *platform, "-o", UV_LOCK])  # fmt: skip
        return (
            f"mkdir -p {WHEELS}\n"
            + (UV_INDEX_ENV + UV_LOCATE).replace("{python}", ctx.python)
            + build
            + f"{install} {_words(args)}\n"
            + shlex.join([ctx.python, "-c", UV_TIDY, ctx.target_dir]) + "\n"
            # where each distribution came from (uv has no --report): looked up again, no deps, in the
            # index pages the install just read (offline: 0.02 s against 0.2 s for 31 pins where a
            # proxy keeps uv from caching them), else online
            + f'{{ {pins} | "$UV" {lock} --offline 2>/dev/null || {pins} | "$UV" {lock}; }} '
            + '|| echo "warning: could not record where the distributions came from"\n'
        )

    def _read_provenance(self, ctx: BuildContext) -> dict[str, str]:
        """The installer's provenance file(s), as text, for the SBOM (absent ones are left out); one exec."""
        script = "".join(
            f'[ ! -f {p} ] || {{ echo "@@file {Path(p).name}"; cat {p}; echo; }}\n' for p in (PIP_REPORT, UV_LOCK)
        )
        found: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in ctx.container.run(script, step="read install report", quiet=True, max_output=None).splitlines():
            if line.startswith("@@file "):
                current = found.setdefault(line[7:], [])
            elif current is not None:
                current.append(line)
        return {name: "\n".join(lines) for name, lines in found.items()}


def _words(args: list[str]) -> str:
    """Requirement arguments for the shell: quoted, but a wheels glob and built wheels' `$(ls ...)`
    left to expand."""
    return " ".join(a if a == f"{WHEELS}/*.whl" or a.startswith("$(ls ") else shlex.quote(a) for a in args)


# the manylinux levels uv's --python-platform names (uv 0.13): 2_17, then 2_28 and 2_31..2_40
UV_MANYLINUX = (17, 28, *range(31, 41))


def uv_platform(glibc: str, machine: str) -> str:
    """uv's --python-platform for a glibc: the highest level uv can name that does not exceed it.
    uv names no 2_26 (Amazon Linux 2), so there wheels tagged manylinux_2_24..2_26 are not taken
    (pip takes them): uv then fails to find a wheel rather than installing a wrong one."""
    minor = int(glibc.split(".")[1])
    level = max(m for m in UV_MANYLINUX if m <= minor)
    return f"{machine}-manylinux_2_{level}"

