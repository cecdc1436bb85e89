"""`lambda-builder test ZIP`: does the artifact load where it will run, with nothing else there?

The zip is unpacked into a clean runtime container (Python only, no compiler, no -dev or
library packages) at /var/task for a function or /opt for a layer, with Lambda's environment,
and the recipe's tests (recorded in the manifest) run there.

Stage ship: must not build or change an artifact; it only runs one in a runtime container.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from builder.artifact.loadcheck import loader_errors
from builder.artifact.manifest import Manifest, load_manifest
from builder.artifact.policy import policy_for_runtime
from builder.engine import engines, images
from builder.engine.client import check_engine_arch
from builder.engine.container import Container
from builder.errors import BuildFailed, UserError
from builder.runtimes import RUNTIMES
from builder.tarsafe import extract_zip, zip_to_tar

Log = Callable[[str], None]

# Lambda's own values (the function's environment on a managed runtime).
LAMBDA_LD_LIBRARY_PATH = (
    "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt:/opt/lib"
)
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin"


def lambda_env(python: str | None) -> dict[str, str]:
    env = {
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "LD_LIBRARY_PATH": LAMBDA_LD_LIBRARY_PATH,
        "PATH": LAMBDA_PATH,
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
    }
    if python:
        # the managed Python runtime puts these on sys.path, in this order
        env["PYTHONPATH"] = f"/var/task:/opt/python/lib/python{python}/site-packages:/opt/python"
    return env


def runtime_image(manifest: Manifest, override: str | None, log: Log) -> images.ImageRef:
    runtime, arch = manifest.runtime, manifest.arch
    if override:
        return images.resolve(runtime, arch, "runtime", override=override, progress=log)
    family, debian = manifest.image_field("family"), manifest.image_field("debian")
    if family == "local" and debian:
        # Lambda's own image, when it is here, reproduces Lambda's loader; the Debian one cannot
        official = images.official_present(runtime, arch)
        return official or images.ensure_local("runtime", debian, arch, progress=log)
    if family == "official":
        return images.resolve(runtime, arch, "runtime", source="official", progress=log)
    return images.resolve(runtime, arch, "runtime", progress=log)


def test_zip(
    zip_path: Path, *, image: str | None = None, command: str | None = None, log: Log = print,
    engine_flags: Mapping[str, str] | None = None, allow_incompatible: bool = False,
) -> None:
    """Run the manifest's tests (or `command`) in a clean runtime container on the engine of the
    zip's architecture (see engine.engines: arm64 natively on an arm64 engine); BuildFailed if they
    fail, or if a file would not load on Lambda (unless `allow_incompatible`: then a warning)."""
    manifest = load_manifest(zip_path, zip_must_exist=True)
    with engines.using(engines.for_arch(manifest.arch, engine_flags)):
        check_engine_arch(manifest.arch)
        _test_in_container(zip_path, manifest, image, command, log, allow_incompatible)


def _test_in_container(
    zip_path: Path, manifest: Manifest, image: str | None, command: str | None, log: Log, allow_incompatible: bool
) -> None:
    """The test itself, on the engine test_zip chose."""
    imports = list(manifest.test_imports)
    commands = [command] if command else ([manifest.test_command] if manifest.test_command else [])
    invocations = [] if command else list(manifest.test_invocations)
    if not imports and not commands and not invocations:
        raise UserError(
            f"{zip_path}: the recipe defines no tests (tests.imports / tests.command / tests.invoke)",
            hint="add tests to the recipe, or pass --command",
        )
    ref = runtime_image(manifest, image, log)
    if ref.family != "official":
        root = "/var/task" if manifest.layout == "function" else "/opt"
        try:
            check_lambda_loader(zip_path, manifest, root, ref, log)
        except BuildFailed as exc:
            if not allow_incompatible:
                raise
            log(f"warning: {exc.message}\n(--allow-incompatible: running the tests in {ref.name} anyway)")
    ran_in = ""
    if imports or commands:
        ran_in = _run_tests(manifest, imports, commands, image, log).name
    if invocations:
        from builder.ship.invoke import run_invocations

        ran_in = run_invocations(manifest, invocations, image, log)
    log(f"{zip_path.name}: tests passed in {ran_in}")


def _run_tests(
    manifest: Manifest, imports: list[str], commands: list[str], image: str | None, log: Log
) -> images.ImageRef:
    """Imports and the test command in one clean runtime container."""
    runtime = RUNTIMES[manifest.runtime]
    root = "/var/task" if manifest.layout == "function" else "/opt"
    env = lambda_env(runtime.python)
    # unpacked (and refused, if hostile) on the host before any container starts
    with zip_to_tar(manifest.zip_path, archive=str(manifest.zip_path)) as stream:
        ref = runtime_image(manifest, image, log)
        with Container(
            ref, purpose=f"test-{manifest.name}-{manifest.arch}", log=log, arch=manifest.arch
        ) as container:
            container.put_tar(root, stream)
            py = f"python{runtime.python}"
            for module in imports:
                code = f"import importlib; m = importlib.import_module({module!r}); print('imported', m.__name__)"
                container.run(f"{py} -c {shlex.quote(code)}", step=f"import {module}", env=env, workdir="/var/task")
            for cmd in commands:
                container.run(cmd, step="test command", env={**env, "PYTHON": py}, workdir="/var/task")
    return ref


def check_lambda_loader(zip_path: Path, manifest: Manifest, root: str, ref: images.ImageRef, log: Log) -> None:
    """The test image is not Lambda's (Debian's glibc 2.36 loads what Amazon Linux's 2.26/2.34
    refuses): fail as Lambda's loader would, for every file it would refuse, before any container."""
    policy = policy_for_runtime(manifest.runtime, manifest.arch)
    with tempfile.TemporaryDirectory(prefix="lambda-builder-test-") as tmp:
        extract_zip(zip_path, Path(tmp), archive=str(zip_path))
        errors = loader_errors(Path(tmp), policy, root)
    if errors:
        lines = "\n".join(f"  {e}" for e in errors)
        raise BuildFailed(
            f"{zip_path.name} would not load on Lambda {manifest.runtime} ({manifest.arch}): "
            f"{len(errors)} file(s) fail there, although {ref.name} would load them; on {policy.name} "
            f"(glibc {policy.max_versions.get('GLIBC', '?')}) the loader says:\n{lines}",
            hint="build with `bundle.policy: lambda` and `--mode cross` (zig pins the runtime's glibc), "
            "with libraries from source (`uses:`), or with the official images",
        )
    log(f"{zip_path.name}: every ELF file loads on Lambda's {policy.name} (audited: {ref.name} is not Lambda's image)")
