"""Stage pipeline: `lambda-builder build template.yaml`, writing what `sam build` writes.

Each resource's dependencies are built by the ordinary pipeline (one build per distinct recipe,
runtime and arch: functions that share them build them once, and the build cache answers the
rest), then its code folder is laid over them on the host (no container: a code edit repacks in
well under a second). Per resource it writes `.aws-sam/build/<LogicalId>/` (function: code and
dependencies at the root; layer: under python/), the deterministic zip and manifest in the out
folder (default dist/) and that zip again as `.aws-sam/build/<LogicalId>.zip`; then
`.aws-sam/build/template.yaml`, the template unchanged but for the code properties, which point
at those zips, so `sam package`/`sam deploy` upload the very bytes built and audited here (SAM
would otherwise zip the folder again, with other bytes and another CodeSha256).
Must not parse argv; the template is read by recipe.samtemplate.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from builder import __version__
from builder.artifact import pack
from builder.artifact.manifest import load_manifest
from builder.errors import BuildFailed, EnvironmentProblem, UserError
from builder.pipeline import finish
from builder.pipeline.build import BuildResult, build_one
from builder.pipeline.plan import BuildOptions, BuildRequest
from builder.pipeline.withcode import pack_with_code
from builder.recipe.model import ALWAYS_EXCLUDED, Code
from builder.recipe.samtemplate import MAKEFILE, Resource, Template
from builder.runtimes import parse_arches
from builder.ship import limits
from builder.tarsafe.extract import extract_zip

Echo = Callable[[str], None]
# other properties holding a path relative to the template, moved with it into .aws-sam/build
_PATH_PROPERTIES = {
    "AWS::Serverless::Api": "DefinitionUri", "AWS::Serverless::HttpApi": "DefinitionUri",
    "AWS::Serverless::StateMachine": "DefinitionUri", "AWS::Serverless::Application": "Location",
    "AWS::Serverless::GraphQLApi": "SchemaUri", "AWS::CloudFormation::Stack": "TemplateURL",
}


def build_dir(template: Template) -> Path:
    return template.path.parent / ".aws-sam" / "build"


def build_template(
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
    """`build template.yaml`: every resource of the template that the filters keep; False when a
    build failed. The secrets its recipes name are checked first, before any container."""
    from builder.pipeline.secrets import check_given

    check_given(list({id(r.recipe): r.recipe for r in template.resources}.values()), options.secrets)
    log: Echo = (lambda _line: None) if quiet else echo
    for skipped in template.skipped:
        echo_err(f"note: {skipped.logical_id}: {skipped.reason}")
    wanted_arches = parse_arches(arches, ()) if arches else ()
    chosen: list[Resource] = []
    for r in template.resources:
        if (wanted_arches and r.arch not in wanted_arches) or (runtimes and r.runtime not in runtimes):
            echo_err(f"note: {r.logical_id}: {r.runtime} {r.arch} is not asked for (--arch/--runtime); "
                     "left as it is in the source template")
        else:
            chosen.append(r)
    if not chosen:
        has = ", ".join(f"{r.logical_id} ({r.runtime} {r.arch})" for r in template.resources)
        raise UserError(f"{template.path}: no resource is {', '.join([*runtimes, *wanted_arches])}; "
                        f"the template has {has}")
    deps = _build_dependencies(template, chosen, options, jobs=jobs, quiet=quiet, log=log, echo_err=echo_err)
    if deps is None:
        return False
    for key, result in deps.items():
        owners = ", ".join(r.logical_id for r in chosen if r.dependency_key == key)
        how = "cached" if result.cached else f"built in {result.seconds:.1f}s"
        echo(f"dependencies of {owners}: {result.zip_path.name} ({how})")
    for line in dict.fromkeys(w for result in deps.values() for w in result.warnings):  # once each
        echo_err(line)
    out_build = build_dir(template)
    out_build.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for resource in chosen:
        started = time.monotonic()
        zip_path = _assemble(template, resource, deps.get(resource.dependency_key), options.out, log)
        built[resource.logical_id] = zip_path
        echo(f"built {resource.logical_id} {zip_path} in {time.monotonic() - started:.2f}s "
             f"-> {out_build / resource.logical_id}")
    finish.check_and_ship(list(built.values()), "zip", None, echo=echo, echo_err=echo_err)
    write_template(template, built, out_build / "template.yaml")
    echo(f"wrote {out_build / 'template.yaml'} (deploy with: sam deploy, or sam package)")
    return True


def _build_dependencies(
    template: Template, chosen: Sequence[Resource], options: BuildOptions, *, jobs: int, quiet: bool, log: Echo,
    echo_err: Echo,
) -> dict[str, BuildResult] | None:
    """One build per distinct dependency key, into .aws-sam/lambda-builder/deps (not the out folder:
    nobody deploys them alone). None when one failed (each failure printed)."""
    requests: dict[str, BuildRequest] = {}
    for r in chosen:
        if r.build_method != MAKEFILE and r.has_dependencies and r.dependency_key not in requests:
            requests[r.dependency_key] = BuildRequest(r.recipe, r.runtime, r.arch)
    if not requests:
        return {}
    shared = [r.logical_id for r in chosen if r.build_method != MAKEFILE and r.has_dependencies]
    if len(shared) > len(requests):
        log(f"dependencies: {len(requests)} build(s) for {len(shared)} resources ({', '.join(shared)})")
    # every option as given (image, cache, refresh, mode, engines, secrets ...), another out folder
    deps_options = dataclasses.replace(options, out=template.path.parent / ".aws-sam" / "lambda-builder" / "deps")
    keys = list(requests)
    if len(keys) == 1:
        return {keys[0]: build_one(requests[keys[0]], deps_options, log)}
    from rich.console import Console

    from builder.pipeline.parallel import run_all, summary

    console = Console(stderr=True)
    outcomes = run_all([requests[k] for k in keys], deps_options, jobs=jobs, console=console, echo=log)
    console.print(summary(outcomes))
    failed = [o for o in outcomes if o.error is not None]
    for o in failed:
        owners = [r.logical_id for r in chosen if r.dependency_key == keys[outcomes.index(o)]]
        echo_err(f"error: dependencies of {', '.join(owners)}: {o.error.render() if o.error else ''}\n"
                 f"  full log: {o.log_path}")
    if failed:
        return None
    return {k: o.result for k, o in zip(keys, outcomes, strict=True) if o.result is not None}


def _copy_code(source: Path, dest: Path, out_dir: Path) -> None:
    """The code folder as it is (symlinks followed), without ALWAYS_EXCLUDED (as a recipe's `code:`;
    SAM's python builder leaves out .aws-sam and .git), *.pyc and the out folder."""
    skip_out = out_dir.resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in ALWAYS_EXCLUDED or n.endswith(".pyc")
                or (Path(folder, n).resolve() == skip_out)}

    shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True)


def run_makefile(resource: Resource, artifacts: Path, log: Echo) -> None:
    """BuildMethod: makefile, as `sam build` runs it: `make build-<LogicalId>` in the code folder with
    ARTIFACTS_DIR set to an empty folder, on this machine (the Makefile may call lambda-builder)."""
    make = shutil.which("make")
    if make is None:
        raise EnvironmentProblem(f"{resource.logical_id}: BuildMethod makefile needs `make`; install it "
                                 "(apt-get install make)")
    makefile = resource.code / "Makefile"
    if not makefile.is_file():
        raise UserError(f"{resource.logical_id}: BuildMethod makefile, but {makefile} does not exist")
    command = [make, "-f", str(makefile), f"build-{resource.logical_id}"]
    log(f"{resource.logical_id}: {' '.join(command[1:])} (ARTIFACTS_DIR={artifacts})")
    env = {**os.environ, "ARTIFACTS_DIR": str(artifacts)}
    done = subprocess.run(command, cwd=resource.code, env=env, capture_output=True, text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        log(f"  {line}")
    if done.returncode != 0:
        last = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BuildFailed(f"{resource.logical_id}: make build-{resource.logical_id} failed "
                          f"(exit {done.returncode}):\n{last}")


def _code_listing(folder: Path, out_dir: Path) -> list[tuple[str, int, int, int]]:
    """What _copy_code copies, by stat (git-index style: path, size, mtime, mode)."""
    skip_out = out_dir.resolve()
    listing = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_EXCLUDED and Path(root, d).resolve() != skip_out)
        for name in sorted(files):
            if name in ALWAYS_EXCLUDED or name.endswith(".pyc"):
                continue
            st = os.stat(os.path.join(root, name))
            listing.append((os.path.relpath(os.path.join(root, name), folder), st.st_size, st.st_mtime_ns, st.st_mode))
    return listing


def _fingerprint(resource: Resource, deps: BuildResult | None, out: Path) -> str:
    """Everything a resource's zip is made from; equal to the last build's: nothing to repack."""
    parts = [__version__, resource.logical_id, resource.runtime, resource.arch, resource.layout, resource.handler,
             resource.recipe.include, resource.recipe.exclude, str(out.resolve()),
             deps.manifest["sha256"] if deps else None, _code_listing(resource.code, out)]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _unchanged(stamp: Path, fingerprint: str, target: Path) -> Path | None:
    """The zip of the last build when its stamp, the zip and the folders still match."""
    try:
        data = json.loads(stamp.read_text())
        zip_path = Path(data["zip"])
        same = data["fingerprint"] == fingerprint and target.is_dir()
        if same and hashlib.sha256(zip_path.read_bytes()).hexdigest() == data["sha256"] == hashlib.sha256(
            target.with_name(f"{target.name}.zip").read_bytes()
        ).hexdigest():
            return zip_path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _assemble(template: Template, resource: Resource, deps: BuildResult | None, out: Path, log: Echo) -> Path:
    """Dependencies + code into a fresh .aws-sam/build/<LogicalId>/ and a zip in `out`; returns the zip.
    A resource whose dependencies, code (by stat) and settings are those of the last build is kept."""
    target = build_dir(template) / resource.logical_id
    stamp = template.path.parent / ".aws-sam" / "lambda-builder" / "stamps" / f"{resource.logical_id}.json"
    fingerprint = _fingerprint(resource, deps, out) if resource.build_method != MAKEFILE else ""
    if fingerprint:
        kept = _unchanged(stamp, fingerprint, target)
        if kept is not None:
            log(f"{resource.logical_id}: unchanged, kept {kept}")
            return kept
    stamp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{resource.logical_id}.", dir=target.parent) as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        ours: dict[str, Any] = {"name": resource.logical_id, "version": "0", "layout": resource.layout,
                                "sam": {"template": str(template.path), "logical_id": resource.logical_id,
                                        "build_method": resource.build_method}}
        if resource.handler is not None:
            ours["handler"] = resource.handler
        stem = f"{resource.logical_id}-{resource.runtime}-{resource.arch}"
        if resource.build_method != MAKEFILE and deps is not None:
            # the dependency zip's members copied as they are (no inflate/deflate) + the code, as a
            # recipe's `code:` is packed; the folder is that zip unpacked
            recipe = dataclasses.replace(resource.recipe, code=Code(resource.code, ()))
            zip_path, _ = pack_with_code(recipe, deps.zip_path, {**deps.manifest, **ours}, out, stem, log)
            extract_zip(zip_path, stage)
        else:
            meta: dict[str, Any] = {"runtime": resource.runtime, "arch": resource.arch, "tool_version": __version__}
            if resource.build_method == MAKEFILE:
                run_makefile(resource, stage, log)
            else:
                python_layer = resource.layout == "layer" and resource.runtime.startswith("python")
                _copy_code(resource.code, stage / "python" if python_layer else stage, out)
            zip_path, _ = pack.package(stage, out, stem, {**meta, **ours}, include=resource.recipe.include,
                                       exclude=resource.recipe.exclude, max_unzipped=limits.UNZIPPED_MAX)
        old = Path(tmp) / "old"
        if target.exists():
            target.rename(old)
        stage.rename(target)
    _link_or_copy(zip_path, target.with_name(f"{resource.logical_id}.zip"))
    manifest = load_manifest(zip_path)  # what test/publish read must read back
    if fingerprint:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"fingerprint": fingerprint, "zip": str(zip_path.resolve()),
                                     "sha256": manifest.sha256}))
    return zip_path


def _link_or_copy(source: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def write_template(template: Template, built: dict[str, Path], dest: Path) -> None:
    """The source template with each built resource's code property on its zip (relative to `dest`,
    as sam build writes it) and Metadata.SamResourceId; everything else as it was."""
    data = copy.deepcopy(template.data)
    by_id = {r.logical_id: r for r in template.resources}
    for logical_id in built:
        resource = data["Resources"][logical_id]
        props = resource.setdefault("Properties", {})
        props[by_id[logical_id].code_property] = f"{logical_id}.zip"
        metadata = resource.setdefault("Metadata", {})
        metadata["SamResourceId"] = logical_id
    for r in template.resources:  # code the filters left out still points at its source folder
        if r.logical_id not in built:
            props = data["Resources"][r.logical_id].setdefault("Properties", {})
            props[r.code_property] = os.path.relpath(r.code, dest.parent)
    for resource in data["Resources"].values():
        prop = _PATH_PROPERTIES.get(str(resource.get("Type"))) if isinstance(resource, dict) else None
        props = resource.get("Properties") if prop else None
        value = props.get(prop) if isinstance(props, dict) else None
        if isinstance(value, str) and "://" not in value and not os.path.isabs(value):
            props[prop] = os.path.relpath(template.path.parent / value, dest.parent)  # type: ignore[index]
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)
