"""The commands that take a built zip: test, invoke, audit, publish, image.

Top of the stack (the CLI layer): parses arguments and calls a stage (ship/, artifact/, pipeline/);
must not do a stage's work itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from builder.cli.common import ENGINE_HELP
from builder.cli.common import echo_err as _echo_err
from builder.runtimes import ARCHES


@click.command("test")
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


@click.command("invoke")
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


@click.command()
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


@click.command()
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


@click.command()
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--base", default=None, help="Base image (default: the runtime image of the zip's family).")
@click.option("--tag", default=None)
@click.option("--handler", default=None, help="CMD of the image, e.g. app.handler.")
@click.option("--push", "push_uri", default=None, help="ECR repository URI[:TAG] to push to.")
@click.option("--profile", default=None)
@click.option("--region", default=None)
@click.option("--json", "as_json", is_flag=True)
def image(zip_path: Path, as_json: bool, **options: str | None) -> None:
    """Make a Lambda container image from ZIP (and push it to ECR)."""
    from builder.ship.container_image import image_from_zip

    # base, tag, handler, push_uri, profile, region go on by name: one signature for them, image_from_zip's
    result = image_from_zip(zip_path, log=click.echo, **options)
    summary = f"built {result['image']} ({result['id'][:19]}) on {result['base']}"
    click.echo(json.dumps(result, indent=2) if as_json else summary)
