"""`lambda-builder build template.yaml` for real, and the real SAM CLI (aws-sam-cli from PyPI, in
.venv-sam: the `sam` extra) on what it wrote: `sam package` + deploy into the moto server, where
the functions CloudFormation creates must carry our zips' CodeSha256; and `sam build` of a
`BuildMethod: makefile` resource whose Makefile calls lambda-builder with $(ARTIFACTS_DIR).

One template build is shared by the module's tests (module-scoped fixture)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml
from aws.emulator import Aws
from conftest import ROOT, our_containers, run_cli

pytest_plugins = ("aws.emulator",)
pytestmark = pytest.mark.docker

SAM = ROOT / ".venv-sam" / "bin" / "sam"
SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
LOCAL = {"LAMBDA_BUILDER_IMAGES": "local"}
TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: test}
Globals:
  Function:
    Runtime: python3.11
    Handler: app.handler
    Layers: [!Ref Shared]
    Environment: {Variables: {STAGE: !Ref Stage}}
Resources:
  Hello:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: hello/}
    Metadata:
      LambdaBuilder: {python: {requirements: [pyyaml==6.0.2]}}
  Bye:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: bye/, Handler: app.bye}
    Metadata:
      LambdaBuilder: {python: {requirements: [pyyaml==6.0.2]}}
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: shared/, CompatibleRuntimes: [python3.11]}
    Metadata:
      BuildMethod: python3.11
      LambdaBuilder: {python: {requirements: [six==1.16.0]}}
Outputs:
  HelloArn: {Value: !GetAtt Hello.Arn}
"""
# CloudFormation runs the AWS::Serverless-2016-10-31 transform server-side; moto has no SAM
# transform, so the test applies the same library CloudFormation's transform is
# (aws-sam-translator, installed with aws-sam-cli) to `sam package`'s output, then `sam deploy`s that.
TRANSLATE = """\
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class Policies:
    def load(self):
        return {"AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}

with open(sys.argv[1]) as f:
    template = yaml_parse(f.read())
with open(sys.argv[2], "w") as f:
    json.dump(transform(template, {}, Policies()), f)
"""


def sam_cli() -> Path:
    if not SAM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SAM} is missing: scripts/setup installs aws-sam-cli (the `sam` extra) there")
        pytest.skip(f"{SAM} is missing: run scripts/setup")
    return SAM


def b64sha(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


@dataclass(frozen=True)
class Built:
    project: Path
    cache: Path
    first: subprocess.CompletedProcess[str]


def _write_project(project: Path) -> None:
    for name, body in {
        "hello/app.py": "import yaml\n\ndef handler(event, context):\n    return {'yaml': yaml.__version__}\n",
        "bye/app.py": "def bye(event, context):\n    return 'bye'\n",
        "bye/.git/HEAD": "ref: refs/heads/main\n",  # never function code
        "bye/__pycache__/app.cpython-311.pyc": "x",
        "shared/common.py": "NAME = 'shared'\n",
    }.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(body)
    (project / "template.yaml").write_text(TEMPLATE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, local_images: dict[str, str]) -> Built:
    project = tmp_path_factory.mktemp("samproject")
    _write_project(project)
    cache = tmp_path_factory.mktemp("cache")
    first = run_cli("build", "template.yaml", cwd=project, env={**LOCAL, "LAMBDA_BUILDER_CACHE_DIR": str(cache)})
    assert first.returncode == 0, first.stdout + first.stderr
    return Built(project, cache, first)


def test_writes_what_sam_build_writes(built: Built) -> None:
    build = built.project / ".aws-sam" / "build"
    hello = sorted(p.relative_to(build / "Hello").as_posix() for p in (build / "Hello").rglob("*") if p.is_file())
    assert "app.py" in hello and "yaml/__init__.py" in hello and any(h.startswith("_yaml/") for h in hello)
    assert sorted(p.name for p in (build / "Bye").iterdir()) == sorted(p.name for p in (build / "Hello").iterdir())
    assert not (build / "Bye" / ".git").exists() and not (build / "Bye" / "__pycache__").exists()
    assert (build / "Shared" / "python" / "six.py").is_file() and (build / "Shared" / "python" / "common.py").is_file()
    # the zips in dist/ are the ones the template deploys, and hold exactly the folders' files
    for name in ("Hello", "Bye", "Shared"):
        ours = built.project / "dist" / f"{name}-python3.11-x86_64.zip"
        assert (build / f"{name}.zip").read_bytes() == ours.read_bytes()
        files = {p.relative_to(build / name).as_posix() for p in (build / name).rglob("*") if p.is_file()}
        assert {n for n in zipfile.ZipFile(ours).namelist() if not n.endswith("/")} == files
        manifest = json.loads(ours.with_name(f"{name}-python3.11-x86_64.manifest.json").read_text())
        assert manifest["name"] == name and manifest["sha256"] == hashlib.sha256(ours.read_bytes()).hexdigest()
    assert json.loads((built.project / "dist" / "Bye-python3.11-x86_64.manifest.json").read_text())["handler"] == \
        "app.bye"
    out = yaml.safe_load((build / "template.yaml").read_text())
    assert {k: v["Properties"].get("CodeUri", v["Properties"].get("ContentUri")) for k, v in out["Resources"].items()} \
        == {"Hello": "Hello.zip", "Bye": "Bye.zip", "Shared": "Shared.zip"}
    assert out["Globals"]["Function"]["Layers"] == [{"Ref": "Shared"}]
    assert out["Outputs"]["HelloArn"] == {"Value": {"Fn::GetAtt": ["Hello", "Arn"]}}
    # Hello and Bye share runtime, arch and requirements: their dependencies were built once
    assert "dependencies of Hello, Bye: " in built.first.stdout, built.first.stdout


def test_invoke_a_function_of_the_template(built: Built, tmp_path: Path) -> None:
    """`invoke template.yaml FUNCTION`: the built zip of that function, its handler, its settings."""
    event = tmp_path / "event.json"
    event.write_text('{"n": 1}')
    done = run_cli("invoke", "template.yaml", "Hello", "--event", str(event), cwd=built.project, env=LOCAL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {"yaml": "6.0.2"}
    assert "STAGE" in done.stderr and "REPORT" in done.stderr  # !Ref Stage cannot be known: said, left out
    bye = run_cli("invoke", "template.yaml", "Bye", "--event", str(event), cwd=built.project, env=LOCAL)
    assert bye.returncode == 0 and json.loads(bye.stdout) == "bye", bye.stdout + bye.stderr
    unnamed = run_cli("invoke", "template.yaml", "--event", str(event), cwd=built.project, env=LOCAL)
    assert unnamed.returncode == 2 and "Hello, Bye" in unnamed.stderr and "Traceback" not in unnamed.stderr
    wrong = run_cli("invoke", "template.yaml", "Shared", "--event", str(event), cwd=built.project, env=LOCAL)
    assert wrong.returncode == 2 and "no function 'Shared'" in wrong.stderr


def test_code_edit_repacks_without_a_container(built: Built, tmp_path: Path) -> None:
    project = tmp_path / "copy"
    shutil.copytree(built.project, project)
    shutil.copytree(built.cache, tmp_path / "cache")  # the module's build filled it
    env = {**LOCAL, "LAMBDA_BUILDER_CACHE_DIR": str(tmp_path / "cache")}
    assert run_cli("build", "template.yaml", cwd=project, env=env).returncode == 0  # stamps for this folder
    before = set(our_containers())
    (project / "hello" / "app.py").write_text("def handler(event, context):\n    return 'edited'\n")
    done = run_cli("build", "template.yaml", cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dependencies of Hello, Bye: " in done.stdout and "(cached)" in done.stdout
    assert set(our_containers()) == before
    assert "Bye: unchanged" in done.stdout and "Shared: unchanged" in done.stdout  # not repacked at all
    assert "Hello: unchanged" not in done.stdout
    zf = zipfile.ZipFile(project / "dist" / "Hello-python3.11-x86_64.zip")
    assert zf.read("app.py") == b"def handler(event, context):\n    return 'edited'\n"
    assert "yaml/__init__.py" in zf.namelist()


def test_sam_local_invoke_runs_our_build(built: Built, local_images: dict[str, str], tmp_path: Path) -> None:
    """`sam local invoke` on our .aws-sam/build as it is: SAM unpacks the function's zip (and its
    layer's) and calls the handler through its own runtime interface emulator. The public Lambda
    image cannot be pulled here, so --invoke-image names the local runtime image, whose
    /var/runtime/bootstrap (awslambdaric) is where that emulator looks for the runtime."""
    sam = sam_cli()
    event = tmp_path / "event.json"
    event.write_text('{"n": 1}')
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_REGION": "us-east-1"}
    client = docker.from_env()
    before = {image.id for image in client.images.list()}
    try:
        for name, expected in (("Hello", {"yaml": "6.0.2"}), ("Bye", "bye")):
            done = subprocess.run(
                [str(sam), "local", "invoke", name, "--template", "template.yaml", "--event", str(event),
                 "--invoke-image", local_images["runtime"], "--skip-pull-image"],
                cwd=built.project / ".aws-sam" / "build", env=env, capture_output=True, text=True, timeout=600,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert json.loads(done.stdout.strip().splitlines()[-1]) == expected, done.stdout + done.stderr
    finally:  # SAM leaves the image it derives (runtime + its emulator + the layer) behind
        for image in client.images.list():
            if image.id not in before and any(t.startswith("samcli/") for t in image.tags):
                client.images.remove(image.id, force=True)


@pytest.fixture
def translated(built: Built, aws: Aws, tmp_path: Path) -> Path:
    """`sam package` of our .aws-sam/build into the emulator's S3, then the SAM transform."""
    sam = sam_cli()
    aws.client("s3").create_bucket(Bucket="artifacts")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_REGION": "us-east-1"}
    packaged = tmp_path / "packaged.yaml"
    done = subprocess.run(
        [str(sam), "package", "--template-file", "template.yaml", "--s3-bucket", "artifacts",
         "--output-template-file", str(packaged)],
        cwd=built.project / ".aws-sam" / "build", env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    script = tmp_path / "translate.py"
    script.write_text(TRANSLATE)
    out = tmp_path / "translated.json"
    done = subprocess.run([str(SAM_PYTHON), str(script), str(packaged), str(out)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return out


def test_sam_deploy_creates_functions_with_our_zips_code_sha256(built: Built, aws: Aws, translated: Path) -> None:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_REGION": "us-east-1"}
    done = subprocess.run(
        [str(SAM), "deploy", "--template-file", str(translated), "--stack-name", "lbsam",
         "--capabilities", "CAPABILITY_IAM", "--no-progressbar"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lam = aws.client("lambda")
    functions = {f["FunctionName"].split("-")[1]: f for f in lam.list_functions()["Functions"]}  # lbsam-Hello-XYZ
    assert set(functions) == {"Hello", "Bye"}, functions
    for name in ("Hello", "Bye"):
        assert functions[name]["CodeSha256"] == b64sha(built.project / "dist" / f"{name}-python3.11-x86_64.zip")
        assert functions[name]["Runtime"] == "python3.11"
    assert functions["Bye"]["Handler"] == "app.bye"
    layers = lam.list_layers()["Layers"]
    assert len(layers) == 1, layers
    layer = lam.get_layer_version(LayerName=layers[0]["LayerName"],
                                  VersionNumber=layers[0]["LatestMatchingVersion"]["Version"])
    assert layer["Content"]["CodeSha256"] == b64sha(built.project / "dist" / "Shared-python3.11-x86_64.zip")


MAKE_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  MadeFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: fn/, Runtime: python3.11, Handler: app.handler}
    Metadata: {BuildMethod: makefile}
"""
MAKEFILE = """\
HERE := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))

build-MadeFunction:
\tlambda-builder build $(HERE)recipe.yaml --out $(HERE)dist --artifacts-dir "$(ARTIFACTS_DIR)" -q
\tcp $(HERE)app.py "$(ARTIFACTS_DIR)/"
"""
RECIPE = """\
name: made
version: "1.0"
runtimes: [python3.11]
python:
  requirements: [pyyaml==6.0.2]
"""


@pytest.fixture
def make_project(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.fail("`make` is missing (apt-get install make)")
    fn = tmp_path / "fn"
    fn.mkdir()
    (tmp_path / "template.yaml").write_text(MAKE_TEMPLATE)
    (fn / "Makefile").write_text(MAKEFILE)
    (fn / "recipe.yaml").write_text(RECIPE)
    (fn / "app.py").write_text("import yaml\n\ndef handler(event, context):\n    return yaml.__version__\n")
    return tmp_path


def test_sam_build_runs_a_makefile_calling_lambda_builder(
    make_project: Path, local_images: dict[str, str], tmp_path: Path
) -> None:
    sam = sam_cli()
    env = {**os.environ, **LOCAL, "SAM_CLI_TELEMETRY": "0", "LAMBDA_BUILDER_CACHE_DIR": str(tmp_path / "cache"),
           "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([str(sam), "build"], cwd=make_project, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    made = make_project / ".aws-sam" / "build" / "MadeFunction"
    assert (made / "app.py").is_file() and (made / "yaml" / "__init__.py").is_file()
    assert not (made / "Makefile").exists()
    ours = make_project / "fn" / "dist" / "made-1.0-python3.11-x86_64.zip"
    files = {p.relative_to(made).as_posix() for p in made.rglob("*") if p.is_file()}
    assert files == {n for n in zipfile.ZipFile(ours).namelist() if not n.endswith("/")} | {"app.py"}
    out = yaml.safe_load((make_project / ".aws-sam" / "build" / "template.yaml").read_text())
    assert out["Resources"]["MadeFunction"]["Properties"]["CodeUri"] == "MadeFunction"
    # lambda-builder build template.yaml runs the same Makefile the way sam build does
    shutil.rmtree(make_project / ".aws-sam")
    done = run_cli("build", "template.yaml", cwd=make_project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (make_project / ".aws-sam" / "build" / "MadeFunction" / "yaml" / "__init__.py").is_file()
    assert zipfile.ZipFile(make_project / "dist" / "MadeFunction-python3.11-x86_64.zip").read("app.py") == \
        (made.parent.parent.parent / "fn" / "app.py").read_bytes()


ARM64_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Graviton:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: src/, Handler: app.handler, Runtime: python3.11, Architectures: [arm64]}
"""


def test_arm64_function_builds_and_invokes(arm64_images: None, tmp_path: Path) -> None:
    """The template's arm64 function: hash-pinned requirements.txt, built on this x86_64 machine,
    then called through the Runtime API in the arm64 runtime under emulation."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(
        "import platform, yaml\n\ndef handler(event, context):\n"
        "    return {'machine': platform.machine(), 'yaml': yaml.__version__, 'n': event['n']}\n"
    )
    (tmp_path / "src" / "requirements.txt").write_text(
        "pyyaml==6.0.2 \\\n"
        "    --hash=sha256:5d225db5a45f21e78dd9358e58a98702a0302f2659a3c6cd320564b75b86f47c\n"
    )
    (tmp_path / "template.yaml").write_text(ARM64_TEMPLATE)
    env = {**LOCAL, "LAMBDA_BUILDER_CACHE_DIR": str(tmp_path / "cache")}
    done = run_cli("build", "template.yaml", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    names = zipfile.ZipFile(tmp_path / "dist" / "Graviton-python3.11-arm64.zip").namelist()
    assert any(n.startswith("yaml/_yaml.cpython-311-aarch64") for n in names), names
    (tmp_path / "event.json").write_text('{"n": 7}')
    called = run_cli("invoke", "template.yaml", "--event", "event.json", cwd=tmp_path, env=env)
    assert called.returncode == 0, called.stdout + called.stderr
    assert json.loads(called.stdout) == {"machine": "aarch64", "yaml": "6.0.2", "n": 7}
