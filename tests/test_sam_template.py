"""SAM templates without an engine: the intrinsic tags, Globals, what is built or skipped and why,
the errors that name the resource, dependency sharing keys, and the output template."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli

from builder.errors import UserError
from builder.pipeline.sam import write_template
from builder.recipe import samtemplate, yamldoc

HEAD = 'AWSTemplateFormatVersion: 2010-09-09\nTransform: AWS::Serverless-2016-10-31\n'


def _template(tmp_path: Path, body: str, folders: dict[str, str] | None = None) -> Path:
    for name, requirements in (folders or {"src": "six==1.16.0\n"}).items():
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "app.py").write_text("def handler(e, c):\n    return 1\n")
        if requirements:
            (tmp_path / name / "requirements.txt").write_text(requirements)
    path = tmp_path / "template.yaml"
    path.write_text(HEAD + body)
    return path


def test_short_form_tags_read_as_their_long_form_and_others_refused() -> None:
    doc = yamldoc.parse(
        "a: !Ref Stage\nb: !GetAtt Fn.Arn\nc: !Sub ['${X}', {X: !Ref Y}]\nd: !If [C, !Ref A, !Ref 'AWS::NoValue']\n",
        cfn_tags=True,
    )
    assert doc.data == {
        "a": {"Ref": "Stage"},
        "b": {"Fn::GetAtt": ["Fn", "Arn"]},
        "c": {"Fn::Sub": ["${X}", {"X": {"Ref": "Y"}}]},
        "d": {"Fn::If": ["C", {"Ref": "A"}, {"Ref": "AWS::NoValue"}]},
    }
    with pytest.raises(yamldoc.YamlProblem, match="tag !Ref is not allowed"):
        yamldoc.parse("a: !Ref X\n")  # recipes still refuse every tag
    for bad in ("a: !Custom X\n", "a: !!python/object:os.system ls\n"):
        with pytest.raises(yamldoc.YamlProblem, match="is not allowed"):
            yamldoc.parse(bad, cfn_tags=True)
    bomb = "a: &a !Join ['', [x, x, x, x, x, x, x, x, x, x]]\n" + "".join(
        f"{c}: &{c} !Join ['', [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]]\n"
        for p, c in zip("abcdef", "bcdefg", strict=True)
    )
    with pytest.raises(yamldoc.YamlProblem, match="alias bomb"):
        yamldoc.parse(bomb, cfn_tags=True)


def test_globals_apply_and_resources_resolve(tmp_path: Path) -> None:
    path = _template(tmp_path, """
Globals:
  Function: {Runtime: python3.12, Handler: app.handler, Architectures: [arm64], CodeUri: src/}
Resources:
  A:
    Type: AWS::Serverless::Function
    Properties: {Environment: {Variables: {T: !Ref B}}}
  B:
    Type: AWS::Serverless::Function
    Properties: {Runtime: python3.11, Architectures: [x86_64], Handler: pkg/app.main}
  L:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: src/, CompatibleRuntimes: [python3.11], CompatibleArchitectures: [arm64]}
    Metadata: {BuildMethod: python3.11}
  Raw:
    Type: AWS::Lambda::Function
    Properties: {Code: src/, Runtime: python3.11, Handler: app.handler, Role: !GetAtt R.Arn}
  Queue: {Type: AWS::SQS::Queue}
""")
    assert samtemplate.is_template(path)
    t = samtemplate.load(path)
    got = {r.logical_id: (r.layout, r.runtime, r.arch, r.handler, r.code_property) for r in t.resources}
    assert got == {
        "A": ("function", "python3.12", "arm64", "app.handler", "CodeUri"),
        "B": ("function", "python3.11", "x86_64", "pkg/app.main", "CodeUri"),
        "L": ("layer", "python3.11", "arm64", None, "ContentUri"),
        "Raw": ("function", "python3.11", "x86_64", "app.handler", "Code"),
    }
    a = t.resources[0]
    assert a.code == (tmp_path / "src").resolve()
    assert a.recipe.python.requirement_files == ((tmp_path / "src" / "requirements.txt").resolve(),)
    assert a.recipe.layout == "function" and t.resources[2].recipe.layout == "layer"
    assert t.data["AWSTemplateFormatVersion"] == "2010-09-09"  # a date kept as written


def test_equal_requirements_share_one_dependency_build(tmp_path: Path) -> None:
    path = _template(tmp_path, """
Globals: {Function: {Runtime: python3.11, Handler: app.handler}}
Resources:
  One: {Type: AWS::Serverless::Function, Properties: {CodeUri: one/}}
  Two: {Type: AWS::Serverless::Function, Properties: {CodeUri: two/}}
  Three: {Type: AWS::Serverless::Function, Properties: {CodeUri: three/}}
  Arm: {Type: AWS::Serverless::Function, Properties: {CodeUri: one/, Architectures: [arm64]}}
""", {"one": "six==1.16.0\n", "two": "six==1.16.0\n", "three": "six==1.17.0\n"})
    keys = {r.logical_id: r.dependency_key for r in samtemplate.load(path).resources}
    assert keys["One"] == keys["Two"]  # same file content, other folders
    assert len({keys["One"], keys["Three"], keys["Arm"]}) == 3


def test_inline_fields_and_recipe_reference(tmp_path: Path) -> None:
    (tmp_path / "native.yaml").write_text(
        "name: n\nversion: '1'\nruntimes: [python3.9]\nsystem_packages: {apt: [libpq-dev]}\n"
        "python: {build_from_source: [psycopg2]}\n"
    )
    path = _template(tmp_path, """
Resources:
  Inline:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler}
    Metadata:
      LambdaBuilder:
        system_packages: {apt: [libxml2-dev]}
        environment: {ON: yes, V: 3.10}
        bundle: {policy: lambda}
  Ref:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler}
    Metadata: {LambdaBuilder: {Recipe: native.yaml}}
""")
    inline, ref = samtemplate.load(path).resources
    assert inline.recipe.system_packages == {"apt": ("libxml2-dev",)}
    assert inline.recipe.environment == {"ON": "yes", "V": "3.10"}  # as written, as in a recipe
    assert inline.recipe.bundle.policy == "lambda"
    assert ref.recipe.system_packages == {"apt": ("libpq-dev",)}
    assert ref.recipe.runtimes == ("python3.11",)  # the template's runtime, not the recipe's
    assert ref.recipe.python.build_from_source == ("psycopg2",)
    assert ref.recipe.python.requirement_files == ((tmp_path / "src" / "requirements.txt").resolve(),)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("Type: AWS::Serverless::Function\n    Properties: {PackageType: Image, ImageUri: x}",
         r"Resources\.F\.PackageType: PackageType Image"),
        ("Type: AWS::Serverless::Function\n    Properties: {CodeUri: src/, Runtime: nodejs20.x, Handler: a.b}",
         r"Resources\.F\.Runtime: runtime 'nodejs20.x' is not one lambda-builder builds"),
        ("Type: AWS::Serverless::Function\n    Properties: {Runtime: python3.11, Handler: app.handler}",
         r"Resources\.F\.CodeUri: missing"),
        ("Type: AWS::Serverless::Function\n    Properties: {CodeUri: nope/, Runtime: python3.11, Handler: a.b}",
         r"Resources\.F\.CodeUri: 'nope/' is not a folder"),
        ("Type: AWS::Serverless::Function\n    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app}",
         r"Resources\.F\.Handler: 'app': MODULE\.FUNCTION"),
        ("Type: AWS::Serverless::Function\n    Properties: {CodeUri: src/, Runtime: python3.11, Handler: a.b,"
         " Architectures: [sparc]}", r"Resources\.F\.Architectures: 'sparc' is not an architecture"),
        ("Type: AWS::Serverless::Function\n    Properties: {CodeUri: src/, Runtime: python3.11, Handler: a.b}\n"
         "    Metadata: {BuildMethod: esbuild}", r"Resources\.F\.Metadata\.BuildMethod: 'esbuild'"),
        ("Type: AWS::Serverless::Function\n    Properties: {CodeUri: src/, Runtime: python3.11, Handler: a.b}\n"
         "    Metadata: {LambdaBuilder: {runtimes: [python3.9]}}",
         r"Resources\.F\.Metadata\.LambdaBuilder\.runtimes: set by the template"),
        ("Type: AWS::Serverless::Function\n    Properties: {CodeUri: src/, Runtime: python3.11, Handler: a.b}\n"
         "    Metadata: {LambdaBuilder: {sytem_packages: {apt: [x]}}}",
         r"template\.yaml:\d+: Resources\.F\.Metadata\.LambdaBuilder\.sytem_packages: .*system_packages"),
    ],
)
def test_what_cannot_be_built_is_one_message_naming_the_resource(
    tmp_path: Path, resource: str, message: str
) -> None:
    path = _template(tmp_path, f"Resources:\n  F:\n    {resource}\n")
    with pytest.raises(UserError, match=message) as caught:
        samtemplate.load(path)
    assert caught.value.exit_code == 2
    done = run_cli("validate", str(path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Resources.F." in done.stderr


def test_inline_and_s3_code_are_skipped_as_sam_does(tmp_path: Path) -> None:
    path = _template(tmp_path, """
Resources:
  Inline:
    Type: AWS::Serverless::Function
    Properties: {InlineCode: "def handler(e, c): return 1", Runtime: python3.11, Handler: index.handler}
  S3:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: {Bucket: b, Key: k}, Runtime: python3.11, Handler: app.handler}
  Zip:
    Type: AWS::Lambda::Function
    Properties: {Code: {ZipFile: "x"}, Runtime: python3.11, Handler: index.handler}
  Built:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler}
""")
    t = samtemplate.load(path)
    assert [r.logical_id for r in t.resources] == ["Built"]
    assert {s.logical_id: s.reason.split(":")[0] for s in t.skipped} == {
        "Inline": "inline code", "S3": "CodeUri is in S3 already", "Zip": "inline code"}


def test_output_template_points_at_the_built_code_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "api.yaml").write_text("openapi: 3.0.0\n")
    path = _template(tmp_path, """
Parameters: {Stage: {Type: String, Default: dev}}
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler, Timeout: 30,
                 Environment: {Variables: {S: !Ref Stage, A: !GetAtt G.Arn}}}
  G:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler, Architectures: [arm64]}
  Api:
    Type: AWS::Serverless::Api
    Properties: {StageName: !Ref Stage, DefinitionUri: api.yaml}
Outputs: {Arn: {Value: !Sub "${F.Arn}"}}
""")
    t = samtemplate.load(path)
    dest = tmp_path / ".aws-sam" / "build" / "template.yaml"
    dest.parent.mkdir(parents=True)
    write_template(t, {"F": tmp_path / "dist" / "F.zip"}, dest)  # G left out (e.g. --arch x86_64)
    out = yaml.safe_load(dest.read_text())
    f = out["Resources"]["F"]
    assert f["Properties"]["CodeUri"] == "F.zip" and f["Metadata"]["SamResourceId"] == "F"
    assert f["Properties"]["Timeout"] == 30
    assert f["Properties"]["Environment"]["Variables"] == {"S": {"Ref": "Stage"}, "A": {"Fn::GetAtt": ["G", "Arn"]}}
    assert out["Resources"]["G"]["Properties"]["CodeUri"] == "../../src"
    assert out["Resources"]["Api"]["Properties"]["DefinitionUri"] == "../../api.yaml"
    assert out["Outputs"] == {"Arn": {"Value": {"Fn::Sub": "${F.Arn}"}}}
    assert out["AWSTemplateFormatVersion"] == "2010-09-09"


def test_a_template_is_built_alone(tmp_path: Path) -> None:
    path = _template(tmp_path, "Resources:\n  F:\n    Type: AWS::Serverless::Function\n"
                     "    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler}\n")
    done = run_cli("build", str(path), str(ROOT / "recipes" / "pyyaml-libyaml.yaml"))
    assert done.returncode == 2 and "a SAM template is built alone" in done.stderr
    done = run_cli("build", str(path), "--format", "image")
    assert done.returncode == 2 and "apply to recipes, not templates" in done.stderr
    done = run_cli("build", str(path), "--runtime", "python3.99")
    assert done.returncode == 2 and "--runtime python3.99: unknown runtime" in done.stderr
    done = run_cli("build", str(path), "--runtime", "python3.12", cwd=tmp_path)
    assert done.returncode == 2 and "no resource is python3.12" in done.stderr
    assert "F (python3.11 x86_64)" in done.stderr
    assert not (tmp_path / ".aws-sam").exists()


def test_the_example_app_reads(tmp_path: Path) -> None:
    t = samtemplate.load(ROOT / "examples" / "sam-app" / "template.yaml")
    assert {r.logical_id: r.layout for r in t.resources} == {
        "PgFunction": "function", "XmlFunction": "function", "SharedLayer": "layer"}
    pg = t.resources[0].recipe
    assert pg.python.build_from_source == ("psycopg2",) and pg.system_packages["apt"] == ("libpq-dev",)


def test_artifacts_dir_takes_one_artifact(tmp_path: Path) -> None:
    recipe = ROOT / "recipes" / "pyyaml-libyaml.yaml"
    done = run_cli("build", str(recipe), "--arch", "all", "--artifacts-dir", str(tmp_path / "a"))
    assert done.returncode == 2 and "--artifacts-dir takes one artifact" in done.stderr, done.stderr
    assert not (tmp_path / "a").exists()


def test_a_bad_requirements_txt_is_named_with_its_line(tmp_path: Path) -> None:
    pinned = "six==1.16.0 --hash=sha256:" + "a" * 64 + "\nattrs==23.2.0\n"
    path = _template(tmp_path, "Resources:\n  F:\n    Type: AWS::Serverless::Function\n"
                     "    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler}\n", {"src": pinned})
    with pytest.raises(UserError, match=r"requirements\.txt:2") as caught:
        samtemplate.load(path)
    assert caught.value.exit_code == 2


def test_a_secret_the_template_names_is_asked_for_before_anything_builds(tmp_path: Path) -> None:
    path = _template(tmp_path, "Resources:\n  F:\n    Type: AWS::Serverless::Function\n"
                     "    Properties: {CodeUri: src/, Runtime: python3.11, Handler: app.handler}\n"
                     "    Metadata: {LambdaBuilder: {secrets: [token]}}\n")
    done = run_cli("build", str(path), cwd=tmp_path)
    assert done.returncode == 2 and "token" in done.stderr and "--secret id=token" in done.stderr, done.stderr
    assert not (tmp_path / ".aws-sam").exists()
