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
from builder.errors import LambdaBuilderError, UserError
from builder.runtimes import ARCHES, parse_arches

F = TypeVar("F", bound=Callable[..., Any])


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


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


ENGINE_HELP = (
    "Docker engine for one architecture: ARCH=tcp://HOST:PORT, ssh://USER@HOST, unix:///PATH, a Docker "
    "context name, or default (repeatable; over LAMBDA_BUILDER_ENGINE_<ARCH> and the settings file)."
)


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
@click.option("--installer", type=click.Choice(["pip", "uv"]), help="pip or uv (default: the recipe's, else pip).")
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


@cli.command("test")
@click.argument("zips", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--image", default=None, help="Runtime image to test in instead of the default.")
@click.option("--command", "command", default=None, help="Run this instead of the recipe's tests.")
@click.option("--engine", "engine_flags", multiple=True, metavar="ARCH=ENGINE", help=ENGINE_HELP)
@click.option(
    "--allow-incompatible", is_flag=True, help="Files Lambda's loader would refuse are a warning, not a failure."
)
def test_cmd(
    zips: tuple[Path, ...], image: str | None, command: str | None, engine_flags: tuple[str, ...],
    allow_incompatible: bool,
) -> None:
    """Unpack ZIP into a clean runtime container (on its architecture's engine) and run the recipe's tests there."""
    from builder.engine.engines import parse_flags
    from builder.ship.smoke import test_zip

    flags = parse_flags(engine_flags)
    for zip_path in zips:
        test_zip(
            zip_path, image=image, command=command, log=click.echo, engine_flags=flags,
            allow_incompatible=allow_incompatible,
        )


@cli.command("invoke")
@click.argument("target", metavar="ZIP|IMAGE|TEMPLATE")
@click.argument("function", required=False)
@click.option("--event", "-e", default=None, help="JSON event file, or - for stdin (default: {}).")
@click.option("--handler", default=None, help="MODULE.FUNCTION (default: the recipe's handler, or the image's CMD).")
@click.option("--env", multiple=True, metavar="KEY=VALUE", help="A variable for the function (repeatable).")
@click.option("--timeout", type=click.FloatRange(0, 900, min_open=True), default=None, help="Seconds (default 3).")
@click.option("--memory", type=click.IntRange(128, 10240), default=None, help="MB (default 128).")
@click.option("--image", default=None, help="Runtime image to run a zip in instead of its family's.")
def invoke_cmd(
    target: str, function: str | None, event: str | None, handler: str | None, env: tuple[str, ...],
    timeout: float | None, memory: int | None, image: str | None,
) -> None:  # fmt: skip
    """Call the handler with an event the way Lambda does; print its response (exit 1 on its error)."""
    from builder.pipeline.command import invoke_command

    ok = invoke_command(
        target, function, event=event, handler=handler, env=env, timeout=timeout, memory=memory, image=image,
        stdin=sys.stdin.buffer, echo=click.echo, echo_err=_echo_err,
    )  # fmt: skip
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
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--runtime", default=None, help="Audit against this Lambda runtime (default: the manifest's).")
@click.option("--arch", default=None, type=click.Choice(list(ARCHES)), help="Default: the manifest's.")
@click.option(
    "--policy",
    "policy_name",
    default=None,
    help="Audit against a named policy instead (al2, al2023, debian-bookworm, ...).",
)
@click.option("--json", "as_json", is_flag=True)
@click.option("--sbom", is_flag=True, help="Print the zip's CycloneDX SBOM (regenerated if none is beside it).")
def audit(
    zip_path: Path, runtime: str | None, arch: str | None, policy_name: str | None, as_json: bool, sbom: bool
) -> None:
    """Per ELF file: highest glibc/glibcxx needed, libraries bundled/provided/missing, a verdict."""
    if sbom:
        from builder.artifact.sbom_read import sbom_for_zip

        data, origin = sbom_for_zip(zip_path)
        _echo_err(origin)
        click.echo(data.decode(), nl=False)
        return
    from builder.artifact.audit import audit_artifact, render_text, to_json

    report = audit_artifact(zip_path, runtime=runtime, arch=arch, policy_name=policy_name)
    click.echo(json.dumps(to_json(report), indent=2) if as_json else render_text(report))
    if not report.ok:
        raise SystemExit(1)


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


@cli.command()
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--layer", default=None, help="Publish a new version of this layer.")
@click.option("--function", "function", default=None, help="Update this function's code.")
@click.option("--s3-bucket", default=None, help="Upload through this bucket (automatic over 50 MB).")
@click.option(
    "--with-layer",
    "with_layers",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Layer zips the function uses, counted in the 250 MB limit.",
)
@click.option("--publish", "publish_version", is_flag=True, help="Publish a numbered function version.")
@click.option("--dry-run", is_flag=True, help="Check everything, change nothing, say what would happen.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--profile", default=None)
@click.option("--region", default=None)
@click.option(
    "--allow-incompatible",
    is_flag=True,
    help="Publish even when the manifest says the zip needs a newer glibc than the Lambda runtime has.",
)
def publish(
    zip_path: Path,
    layer: str | None,
    function: str | None,
    s3_bucket: str | None,
    with_layers: tuple[Path, ...],
    publish_version: bool,
    dry_run: bool,
    as_json: bool,
    profile: str | None,
    region: str | None,
    allow_incompatible: bool,
) -> None:
    """Publish ZIP as a layer version or a function's code, within Lambda's limits."""
    from builder.ship.publish import publish  # the command is named after it

    result = publish(
        zip_path,
        layer=layer,
        function=function,
        with_layers=with_layers,
        s3_bucket=s3_bucket,
        dry_run=dry_run,
        publish_version=publish_version,
        profile=profile,
        region=region,
        allow_incompatible=allow_incompatible,
    )
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    what = result.get("layer_version_arn") or result.get("function_arn") or result.get("action")
    click.echo(
        f"{'would publish' if dry_run else 'published'} {zip_path.name}: {what} (upload: {result.get('upload')})"
    )
    for warning in result.get("warnings", []):
        _echo_err(f"warning: {warning}")


@cli.command()
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--base", default=None, help="Base image (default: the runtime image of the zip's family).")
@click.option("--tag", default=None)
@click.option("--handler", default=None, help="CMD of the image, e.g. app.handler.")
@click.option("--push", "push_uri", default=None, help="ECR repository URI[:TAG] to push to.")
@click.option("--profile", default=None)
@click.option("--region", default=None)
@click.option("--json", "as_json", is_flag=True)
def image(
    zip_path: Path,
    base: str | None,
    tag: str | None,
    handler: str | None,
    push_uri: str | None,
    profile: str | None,
    region: str | None,
    as_json: bool,
) -> None:
    """Make a Lambda container image from ZIP (and push it to ECR)."""
    from builder.ship.container_image import image_from_zip

    result = image_from_zip(
        zip_path, base, tag=tag, handler=handler, push_uri=push_uri, profile=profile, region=region, log=click.echo
    )
    summary = f"built {result['image']} ({result['id'][:19]}) on {result['base']}"
    click.echo(json.dumps(result, indent=2) if as_json else summary)
