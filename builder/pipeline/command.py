"""Stage pipeline: the `build` command's work, from recipe paths to result lines and shipped zips.

One request builds in this thread with plain lines; several run at once with a live status and a
summary. The CLI only parses arguments into these calls; this module must not parse argv itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from builder.cache import noop
from builder.errors import UserError
from builder.pipeline import finish
from builder.pipeline.build import build_one
from builder.pipeline.plan import BuildOptions, BuildRequest
from builder.pipeline.timings import report
from builder.pipeline.withcode import check_code
from builder.recipe.samtemplate import Template

Echo = Callable[[str], None]


def run_builds(
    requests: Sequence[BuildRequest],
    options: BuildOptions,
    *,
    fmt: str,
    push_uri: str | None,
    jobs: int,
    quiet: bool,
    argv: Sequence[str] | None,
    timings: bool = False,
    echo: Echo,
    echo_err: Echo,
    artifacts_dir: Path | None = None,
) -> bool:
    """Build, then check Lambda's limits and ship; False when a build failed (each failure printed).
    `artifacts_dir`: unpack the one artifact there too (SAM's makefile builds hand over a folder)."""
    if artifacts_dir is not None and len(requests) != 1:
        raise UserError(f"--artifacts-dir takes one artifact; this build makes {len(requests)} "
                        "(narrow it with --arch and --runtime)")
    check_code(requests, options.out)
    from builder.pipeline.secrets import check_given

    check_given(list({id(r.recipe): r.recipe for r in requests}.values()), options.secrets)  # before any container
    if len(requests) == 1:
        log: Echo = (lambda _line: None) if quiet else echo
        result = build_one(requests[0], options, log)
        echo(noop.built_line(str(result.zip_path), result.seconds, result.step_seconds, result.cached))
        if timings:
            for line in report(requests[0].label, result.timings, result.seconds):
                echo(line)
        for line in result.warnings:
            echo_err(line)
        warnings = [*result.warnings]
        warnings += finish.check_and_ship([result.zip_path], fmt, push_uri, echo=echo, echo_err=echo_err)
        if artifacts_dir is not None:
            unpack_into(result.zip_path, artifacts_dir)
            echo(f"unpacked {result.zip_path.name} into {artifacts_dir}")
        elif fmt == "zip" and options.use_cache and not options.refresh:  # both ask for a real build every time
            finish.stamp_noop(argv, result, quiet=quiet, warnings=warnings)
        return True
    from rich.console import Console  # the live status of several builds; one build prints plain lines

    from builder.pipeline.parallel import run_all, summary

    console = Console()
    outcomes = run_all(requests, options, jobs=jobs, console=console, echo=(lambda _line: None) if quiet else echo)
    console.print(summary(outcomes))
    for o in outcomes:
        if timings and o.result is not None:
            for line in report(o.request.label, o.result.timings, o.result.seconds):
                echo(line)
    # the same requirement files warn once, not once per runtime and arch
    for line in dict.fromkeys(w for o in outcomes if o.result is not None for w in o.result.warnings):
        echo_err(line)
    failed = [o for o in outcomes if o.error is not None]
    for o in failed:
        echo_err(f"error: {o.request.label}: {o.error.render() if o.error else ''}\n  full log: {o.log_path}")
    if failed:
        return False
    finish.check_and_ship(
        [o.result.zip_path for o in outcomes if o.result], fmt, push_uri, echo=echo, echo_err=echo_err
    )
    return True


def unpack_into(zip_path: Path, folder: Path) -> None:
    """The zip's files into `folder` (made if missing), through the one safe extractor."""
    from builder.tarsafe.extract import extract_zip

    if folder.exists() and not folder.is_dir():
        raise UserError(f"--artifacts-dir {folder}: is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    extract_zip(zip_path, folder)


def run_template(
    template: Template,
    options: BuildOptions,
    *,
    arches: Sequence[str],
    runtimes: Sequence[str],
    jobs: int,
    quiet: bool,
    echo: Echo,
    echo_err: Echo,
) -> bool:
    """`build template.yaml`: what `sam build` writes, see pipeline.sam."""
    from builder.pipeline.sam import build_template
    from builder.pipeline.secrets import check_given

    check_given(list({id(r.recipe): r.recipe for r in template.resources}.values()), options.secrets)

    return build_template(template, options, arches=arches, runtimes=runtimes, jobs=jobs, quiet=quiet, echo=echo,
                          echo_err=echo_err)


def make_local_images(
    runtimes: Sequence[str], arches: Sequence[str], kinds: Sequence[str], *, echo: Echo,
    engines: Mapping[str, str] | None = None,
) -> None:
    """The `images build` command: the local image family (bootstrapped from Debian) per runtime,
    each architecture's on its engine (copied from the default engine when that has it)."""
    from builder.engine import engines as engine_choice
    from builder.engine.client import check_engine_arch
    from builder.engine.images import ensure_local
    from builder.runtimes import RUNTIMES

    for rt in runtimes:
        runtime = RUNTIMES.get(rt)
        if runtime is None:
            raise UserError(f"--runtime {rt}: unknown runtime; known: {', '.join(RUNTIMES)}")
        if runtime.debian is None:
            raise UserError(
                f"--runtime {rt}: no Debian release ships Python {runtime.python}; only the official images serve it"
            )
        for arch in arches:
            with engine_choice.using(engine_choice.for_arch(arch, engines)):
                check_engine_arch(arch)
                for kind in kinds:
                    ref = ensure_local(kind, runtime.debian, arch, progress=echo)  # type: ignore[arg-type]
                    echo(f"ready: {ref.name} {ref.id[:19]}")
