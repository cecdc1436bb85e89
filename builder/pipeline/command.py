"""Stage pipeline: the `build` command's work, from recipe paths to result lines and shipped zips.

One request builds in this thread with plain lines; several run at once with a live status and a
summary. The CLI only parses arguments into these calls; this module must not parse argv itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from builder.cache import noop
from builder.errors import UserError
from builder.pipeline import finish
from builder.pipeline.build import build_one
from builder.pipeline.plan import BuildOptions, BuildRequest
from builder.pipeline.sam import build_template
from builder.pipeline.timings import report
from builder.pipeline.withcode import check_code

if TYPE_CHECKING:
    from builder.ship.invoke import Settings, Target

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


# `build template.yaml`, what `sam build` writes: the CLI's entry, the work is pipeline.sam's
run_template = build_template


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



TEMPLATE_SUFFIXES = (".yaml", ".yml", ".json", ".template")


def invoke_command(
    target: str,
    function: str | None,
    *,
    event: str | None,
    handler: str | None,
    env: Sequence[str],
    timeout: float | None,
    memory: int | None,
    image: str | None,
    stdin: BinaryIO,
    echo: Echo,
    echo_err: Echo,
) -> bool:
    """The `invoke` command: ZIP (a built function), IMAGE (a Lambda container image on the engine)
    or TEMPLATE FUNCTION; the response on stdout, False when the handler failed or timed out."""
    from builder.artifact.manifest import MANIFEST_SUFFIX
    from builder.ship import invoke

    user_env = invoke.parse_env(env)
    data = invoke.read_event(event, stdin)  # bad input is refused before any image is looked at
    base = invoke.Settings()
    path = Path(target)
    if path.is_file() and path.suffix in TEMPLATE_SUFFIXES and not path.name.endswith(MANIFEST_SUFFIX):
        found, defaults = template_target(path, function, handler, image, echo_err)
        base = defaults or base
    elif function is not None:
        raise UserError(f"FUNCTION {function!r} names a function of a SAM template; {target} is not one")
    elif path.suffix == ".zip" or path.name.endswith(MANIFEST_SUFFIX) or path.exists():
        found = invoke.zip_target(path, handler, image, echo_err)
    else:
        found = invoke.image_target(target, handler)
    settings = invoke.Settings(
        timeout if timeout is not None else base.timeout,
        memory if memory is not None else base.memory_mb,
        tuple({**dict(base.env), **dict(user_env)}.items()),  # --env wins over the template's
    )
    return invoke.run_invoke(found, data, settings, echo=echo, log=echo_err)


def template_target(
    path: Path, function: str | None, handler: str | None, image: str | None, log: Echo
) -> tuple[Target, Settings | None]:
    """A function of a SAM template that `build template.yaml` built: its zip as an invoke Target,
    and its Timeout, MemorySize and Environment.Variables (Globals applied) as Settings."""
    import contextlib
    import json

    from builder.recipe import samtemplate
    from builder.ship import invoke

    template = samtemplate.load(path)
    functions = {r.logical_id: r for r in template.resources if r.layout == "function"}
    names = ", ".join(functions) or "none"
    if function is None and len(functions) != 1:
        raise UserError(f"{path}: name the function to invoke (the template's functions: {names})")
    chosen = functions.get(function) if function is not None else next(iter(functions.values()))
    if chosen is None:
        raise UserError(f"{path}: no function {function!r} to invoke; the template's functions: {names}")
    stamp = path.resolve().parent / ".aws-sam" / "lambda-builder" / "stamps" / f"{chosen.logical_id}.json"
    zip_path = Path("dist") / f"{chosen.logical_id}-{chosen.runtime}-{chosen.arch}.zip"
    # a makefile resource has no stamp: then the default out folder
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        zip_path = Path(json.loads(stamp.read_text())["zip"])
    if not zip_path.is_file():
        raise UserError(f"{path}: {chosen.logical_id} is not built yet", hint=f"run: lambda-builder build {path}")
    found = invoke.zip_target(zip_path, handler or chosen.handler, image, log)
    return found, _template_settings(template.data, chosen.logical_id, log)


def _template_settings(data: dict[str, object], logical_id: str, log: Echo) -> Settings:
    """Timeout, MemorySize and Environment.Variables of a function, its own over Globals.Function;
    values that are intrinsic functions (!Ref ...) cannot be known here and are left out, saying so."""
    from builder.ship.invoke import Settings

    def props(mapping: object, *keys: str) -> dict[str, object]:
        for key in keys:
            mapping = mapping.get(key) if isinstance(mapping, dict) else None
        return mapping if isinstance(mapping, dict) else {}

    own, shared = props(data, "Resources", logical_id, "Properties"), props(data, "Globals", "Function")
    merged = {**shared, **own}
    env = {**props(shared, "Environment", "Variables"), **props(own, "Environment", "Variables")}
    values = {k: str(v) for k, v in env.items() if isinstance(v, (str, int, float, bool))}
    if len(values) < len(env):
        log(f"note: {logical_id}: variables set by intrinsic functions are left out: "
            f"{', '.join(sorted(set(env) - set(values)))}")  # fmt: skip
    defaults = Settings()
    timeout, memory = merged.get("Timeout", defaults.timeout), merged.get("MemorySize", defaults.memory_mb)
    return Settings(
        float(timeout) if isinstance(timeout, (int, float, str)) and str(timeout).isdigit() else defaults.timeout,
        int(memory) if isinstance(memory, (int, str)) and str(memory).isdigit() else defaults.memory_mb,
        tuple(sorted(values.items())),
    )
