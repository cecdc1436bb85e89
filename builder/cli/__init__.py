"""The `lambda-builder` command: parse arguments, call a stage, turn errors into exit codes.

Exit codes: 0 ok; 1 a build/test/publish ran and failed; 2 bad input (recipe, arguments,
files); 3 the machine lacks something (Docker engine, emulation, bootstrap tool); 130 interrupted.

Top of the stack: parses arguments and maps errors to exit codes; must not do a stage's work itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from builder import __version__, boundary, interrupts
from builder.cli.common import ENGINE_HELP
from builder.cli.common import echo_err as _echo_err
from builder.errors import LambdaBuilderError, UserError
from builder.runtimes import parse_arches

F = TypeVar("F", bound=Callable[..., Any])




def main(argv: Sequence[str] | None = None) -> None:
    interrupts.install()  # SIGTERM unwinds like Ctrl-C, so every `with Container(...)` removes its container
    args = list(argv) if argv is not None else sys.argv[1:]
    code: int | str | None = 0
    try:
        cli.main(args=args, standalone_mode=False, obj={"argv": args})
    except click.exceptions.Abort as exc:  # click's name for a KeyboardInterrupt
        code = boundary.report(exc.__cause__ or KeyboardInterrupt(), _echo_err)
    except click.ClickException as exc:
        exc.show()
        code = 2
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # the one boundary: engine, disk and archive errors included
        code = boundary.report(exc, _echo_err)
    interrupts.settle()
    sys.exit(code)


def _argv() -> list[str] | None:
    """The command line as main() received it (names the no-op stamp)."""
    argv: list[str] | None = (click.get_current_context().find_root().obj or {}).get("argv")
    return argv


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lambda-builder")
def cli() -> None:
    """Build native dependencies for AWS Lambda into zips that load."""


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(recipes: tuple[Path, ...]) -> None:
    """Check recipes (and SAM templates) against the schema; report every problem with file, line and field."""
    from builder.recipe import checks, loader, samtemplate

    failures: list[LambdaBuilderError] = []
    for path in recipes:
        try:
            if samtemplate.is_template(path):
                template = samtemplate.load(path)
                click.echo(f"{path}: ok (template; builds {', '.join(r.logical_id for r in template.resources)})")
                continue
            loaded = loader.load(path)
            checks.check_requirement_files(loaded)
            if loaded.code is not None:  # what a build would pack from it (with the default --out)
                from builder.pipeline.withcode import code_files

                code_files(loaded, loaded.runtimes[0], Path("dist"))
            click.echo(
                f"{path}: ok ({loaded.name} {loaded.version}; runtimes {', '.join(loaded.runtimes)}; "
                f"arch {', '.join(loaded.architectures)})"
            )
        except UserError as exc:
            failures.append(exc)
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise UserError("\n".join(f.render() for f in failures))


@cli.command()
@click.argument("recipe_paths", metavar="RECIPE...|TEMPLATE", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--arch", "arches", multiple=True, help="x86_64, arm64, all, or a comma list (default: the recipe's).")
@click.option("--runtime", "runtimes", multiple=True, help="Build only these of the recipe's runtimes.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Folder for the zips and manifests.",
)
@click.option("--image", default=None, help="Build image to use instead of the default family.")
@click.option("--engine", "engine_flags", multiple=True, metavar="ARCH=ENGINE", help=ENGINE_HELP)
@click.option("--no-cache", is_flag=True, help="Build from scratch: read no cache (results are still stored).")
@click.option("--refresh", is_flag=True, help="Resolve requirements again: the cached dependencies are not read.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "emulate", "cross"]),
    default=None,
    help="How arm64 is built on an x86_64 machine (default: the recipe's, else auto).",
)
@click.option(
    "--installer", type=click.Choice(["auto", "pip", "uv"]), help="pip, uv or auto (default: the recipe's, else auto)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zip", "image"]),
    default="zip",
    show_default=True,
    help="image: also make a Lambda container image of each zip (runtime image + artifact).",
)
@click.option("--push", "push_uri", default=None, help="With --format image: ECR repository URI to push to.")
@click.option(
    "-j",
    "--jobs",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Builds run at once (several targets).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the result lines.")
@click.option("--timings", is_flag=True, help="Print where each build's time went, phase by phase.")
@click.option("--artifacts-dir", type=click.Path(path_type=Path), default=None,
              help="Also unpack the one built artifact here (SAM's $(ARTIFACTS_DIR) in a makefile build).")
@click.option(
    "--step-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds any one build step may run (default: the recipe's `timeout:`, else 3600).",
)
@click.option(
    "--secret", "secret_specs", multiple=True, metavar="id=NAME,src=PATH|env=VAR",
    help="A secret the recipe lists, as the file /run/secrets/NAME during the steps that use it.",
)  # fmt: skip
@click.option("--ssh", "ssh_specs", multiple=True, metavar="NAME[=SOCKET]", help="Forward your ssh agent for NAME.")
@click.option("--no-host-pip-config", is_flag=True, help="Do not hand the host's pip.conf, PIP_*INDEX_URL and netrc.")
def build(
    recipe_paths: tuple[Path, ...],
    arches: tuple[str, ...],
    runtimes: tuple[str, ...],
    out: Path,
    image: str | None,
    engine_flags: tuple[str, ...],
    no_cache: bool,
    refresh: bool,
    mode: str | None,
    installer: str | None,
    fmt: str,
    push_uri: str | None,
    jobs: int,
    quiet: bool,
    timings: bool,
    artifacts_dir: Path | None,
    step_timeout: float | None,
    secret_specs: tuple[str, ...],
    ssh_specs: tuple[str, ...],
    no_host_pip_config: bool,
) -> None:
    """Build recipes into one zip + manifest per runtime and architecture, or a SAM template into
    .aws-sam/build (and zips in --out)."""
    from builder.recipe import loader, samtemplate

    template = samtemplate.requested(recipe_paths, runtimes, arches, out=out, fmt=fmt, artifacts_dir=artifacts_dir)
    wanted = [] if template else loader.requested(recipe_paths, runtimes, arches, out=out)
    from builder.engine.engines import parse_flags
    from builder.pipeline import command  # after the recipes: bad input is answered without it
    from builder.pipeline.plan import BuildOptions, BuildRequest
    from builder.pipeline.secrets import from_options

    given = from_options(secret_specs, ssh_specs, host_pip_config=not no_host_pip_config, environ=os.environ)
    options = BuildOptions(
        out=out, image=image, use_cache=not no_cache, refresh=refresh, mode=mode, step_timeout=step_timeout,
        engines=tuple(sorted(parse_flags(engine_flags).items())), secrets=given, installer=installer,  # type: ignore[arg-type]  # click.Choice
    )
    if template:
        ok = command.run_template(template, options, arches=arches, runtimes=runtimes, jobs=jobs, quiet=quiet,
                                  echo=click.echo, echo_err=_echo_err)
    else:
        ok = command.run_builds(
            [BuildRequest(*w) for w in wanted], options, fmt=fmt, push_uri=push_uri, jobs=jobs, quiet=quiet,
            timings=timings, argv=_argv(), echo=click.echo, echo_err=_echo_err, artifacts_dir=artifacts_dir,
        )
    if not ok:
        raise SystemExit(1)


@cli.group()
def images() -> None:
    """Build and list the build and runtime images."""


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
def images_list(as_json: bool) -> None:
    """Images lambda-builder made or uses that are on the engine."""
    from builder.engine.images import list_images

    rows = list_images()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<48} {row['id']:<14} {row['arch']:<7} {row['size_mb']:>6} MB  {row['created']}")


@images.command("build")
@click.option("--runtime", "runtimes", multiple=True, default=("python3.11",), show_default=True)
@click.option("--arch", "arches", multiple=True)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(["build", "runtime", "cross"]),
    default=("build", "runtime"),
    show_default=True,
)
@click.option("--engine", "engine_flags", multiple=True, metavar="ARCH=ENGINE", help=ENGINE_HELP)
def images_build(
    runtimes: tuple[str, ...], arches: tuple[str, ...], kinds: tuple[str, ...], engine_flags: tuple[str, ...]
) -> None:
    """Make the local image family (bootstrapped from Debian) for these runtimes, on each arch's engine."""
    from builder.engine.engines import parse_flags
    from builder.pipeline.command import make_local_images

    arch_list = parse_arches(arches, ("x86_64",))
    make_local_images(runtimes, arch_list, kinds, echo=click.echo, engines=parse_flags(engine_flags))


@cli.command()
@click.option(
    "--fix-emulation",
    is_flag=True,
    help="Register qemu-aarch64 (F flag) in binfmt_misc so arm64 containers run (root, Linux).",
)
@click.option("--engine", "engine_flags", multiple=True, metavar="ARCH=ENGINE", help=ENGINE_HELP)
def doctor(fix_emulation: bool, engine_flags: tuple[str, ...]) -> None:
    """Check the engines, arm64 emulation, bootstrap tools, CA bundle and proxies; say how to fix each."""
    from builder.doctor import check_engines, doctor_report, engine_client
    from builder.engine.emulation import enable_arm64_emulation
    from builder.engine.engines import parse_flags

    flags = parse_flags(engine_flags)
    if fix_emulation:
        enable_arm64_emulation()
        click.echo("arm64 emulation registered (qemu-aarch64, flags F)")
    checks = doctor_report(engine_client()) + check_engines(flags)
    for check in checks:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        if not check.ok and check.fix:
            click.echo(f"       fix: {check.fix}")
    if not all(c.ok for c in checks):
        raise SystemExit(3)


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["github", "json"]), default="github", show_default=True)
@click.option(
    "--arm64-runner",
    default="ubuntu-24.04-arm",
    show_default=True,
    help="Runner label for native arm64 jobs.",
)
@click.option("--no-native-arm64", is_flag=True, help="Build arm64 on x86_64 runners (cross/emulated).")
def matrix(recipes: tuple[Path, ...], fmt: str, arm64_runner: str, no_native_arm64: bool) -> None:
    """Print a CI matrix (recipe x runtime x arch), e.g. for GitHub Actions' $GITHUB_OUTPUT."""
    from builder.pipeline.ci_matrix import matrix_entries, render_matrix
    from builder.recipe import loader

    loaded = [loader.load(p) for p in recipes]
    entries = matrix_entries(
        [(r.name, p, r.runtimes, r.architectures) for r, p in zip(loaded, recipes, strict=True)],
        arm64_runner=None if no_native_arm64 else arm64_runner,
        relative_to=Path.cwd(),
    )
    click.echo(render_matrix(entries, fmt))  # type: ignore[arg-type]


@cli.group("cache")
def cache_group() -> None:
    """Inspect and prune the build cache."""


@cache_group.command("list")
def cache_list() -> None:
    """Cached builds, most recently used first, with the cache's total size."""
    from builder.cache.store import BuildCache, PrefixCache

    builds = BuildCache()
    for entry in builds.list_entries():
        m = entry.manifest
        click.echo(
            f"{entry.key[:12]}  {m.get('name')}-{m.get('version')} {m.get('runtime')} {m.get('arch')}  "
            f"{entry.size / 1e6:.2f} MB"
        )
    prefixes = PrefixCache()
    click.echo(
        f"total: builds {builds.total_bytes() / 1e6:.1f} MB, prefixes {prefixes.total_bytes() / 1e6:.1f} MB "
        f"in {builds.root.parent}"
    )


@cache_group.command("prune")
@click.option("--older-than", "older_than", type=float, default=None, help="Days since last use.")
@click.option("--max-size", "max_mb", type=float, default=None, help="Keep at most this many MB (LRU).")
@click.option("--all", "everything", is_flag=True, help="Remove every entry.")
def cache_prune(older_than: float | None, max_mb: float | None, everything: bool) -> None:
    """Remove cache entries (and debris of interrupted writes)."""
    from builder.cache.store import BuildCache, PrefixCache

    if older_than is None and max_mb is None and not everything:
        raise UserError("cache prune: pass --older-than DAYS, --max-size MB or --all")
    max_bytes = int(max_mb * 1e6) if max_mb is not None else None
    for store in (BuildCache(), PrefixCache()):
        result = store.prune(older_than_days=older_than, max_bytes=max_bytes, all=everything)
        click.echo(f"{store.root.name}: removed {result.removed} entries ({result.bytes / 1e6:.1f} MB)")


def _add_ship_commands() -> None:
    """The commands that take a built zip live in cli/ship.py (this module stays a readable size)."""
    from builder.cli import ship

    for command in (ship.test_cmd, ship.invoke_cmd, ship.audit, ship.publish, ship.image):
        cli.add_command(command)


_add_ship_commands()
