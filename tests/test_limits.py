"""Lambda limits and the manifest reader, on manifests written to disk the way packaging writes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from aws.artifacts import make_artifact

from builder.artifact.manifest import load_manifest, manifest_path_for
from builder.errors import UserError
from builder.ship.limits import DIRECT_UPLOAD_MAX, MAX_LAYERS, UNZIPPED_MAX, check_limits


def test_limits_are_the_bytes_lambda_enforces() -> None:
    assert DIRECT_UPLOAD_MAX == 52_428_800
    assert UNZIPPED_MAX == 262_144_000
    assert MAX_LAYERS == 5


def test_manifest_round_trip(tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"app.py": b"def handler(e, c):\n    return 1\n", "lib/libgreet.so.1": b"\x7fELF"})
    m = load_manifest(z)
    assert (m.name, m.version, m.runtime, m.arch, m.layout) == (
        "greet",
        "1.0.0",
        "python3.11",
        "x86_64",
        "function",
    )
    assert m.zip_path == z
    assert m.zipped_size == z.stat().st_size
    assert [e.path for e in m.contents] == ["app.py", "lib/libgreet.so.1"]
    assert dict(m.image)["family"] == "local"
    assert load_manifest(manifest_path_for(z)) == m


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    z = tmp_path / "x-1-python3.11-x86_64.zip"
    z.write_bytes(b"PK")
    with pytest.raises(UserError, match=r"x-1-python3\.11-x86_64\.manifest\.json") as info:
        load_manifest(z)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"schema": 2}', "unsupported manifest schema 2"),
        ('{"schema": 1, "runtime": "python2.7"}', "unknown runtime 'python2.7'"),
    ],
)
def test_malformed_manifest_names_the_file(tmp_path: Path, text: str, expect: str) -> None:
    (tmp_path / "x.manifest.json").write_text(text)
    with pytest.raises(UserError) as info:
        load_manifest(tmp_path / "x.zip")
    assert str(tmp_path / "x.manifest.json") in info.value.message
    assert expect in info.value.message


def test_missing_field_is_named(tmp_path: Path) -> None:
    z = make_artifact(tmp_path, {"a.py": b""})
    mpath = manifest_path_for(z)
    data = json.loads(mpath.read_text())
    data["zipped_size"] = "big"
    mpath.write_text(json.dumps(data))
    with pytest.raises(UserError, match="field 'zipped_size' is not a whole number"):
        load_manifest(z)


def test_small_function_has_no_findings(tmp_path: Path) -> None:
    assert check_limits(load_manifest(make_artifact(tmp_path, {"app.py": b"x = 1\n"}))) == []


def test_over_50mb_zipped_is_a_warning_pointing_at_s3(tmp_path: Path) -> None:
    m = load_manifest(make_artifact(tmp_path, {"app.py": b""}, overrides={"zipped_size": DIRECT_UPLOAD_MAX + 1}))
    (f,) = check_limits(m)
    assert (f.level, f.code) == ("warning", "zipped-size")
    assert "52428801 bytes" in f.message and "--s3-bucket" in f.message and m.label in f.message


def test_exactly_50mb_is_still_direct(tmp_path: Path) -> None:
    m = load_manifest(make_artifact(tmp_path, {"app.py": b""}, overrides={"zipped_size": DIRECT_UPLOAD_MAX}))
    assert check_limits(m) == []


def test_over_250mb_unzipped_with_layers_is_an_error(tmp_path: Path) -> None:
    fn = load_manifest(make_artifact(tmp_path, {"app.py": b""}, overrides={"unzipped_size": 200 * 1024 * 1024}))
    layer = load_manifest(
        make_artifact(
            tmp_path,
            {"python/dep.py": b""},
            name="deps",
            layout="layer",
            overrides={"unzipped_size": 50 * 1024 * 1024 + 1},
        )
    )
    assert check_limits(fn) == []
    (f,) = check_limits(fn, [layer])
    assert (f.level, f.code) == ("error", "unzipped-size")
    assert "262144001 bytes" in f.message and "262144000" in f.message and layer.label in f.message


def test_more_than_five_layers_is_an_error(tmp_path: Path) -> None:
    fn = load_manifest(make_artifact(tmp_path, {"app.py": b""}))
    layers = [
        load_manifest(make_artifact(tmp_path, {"python/x.py": b""}, name=f"l{i}", layout="layer")) for i in range(6)
    ]
    assert check_limits(fn, layers[:5]) == []
    (f,) = check_limits(fn, layers)
    assert (f.level, f.code) == ("error", "layer-count")
    assert "6 layers" in f.message


def test_layer_of_other_arch_is_an_error(tmp_path: Path) -> None:
    fn = load_manifest(make_artifact(tmp_path, {"app.py": b""}))
    layer = load_manifest(make_artifact(tmp_path, {"python/x.py": b""}, name="l", layout="layer", arch="arm64"))
    (f,) = check_limits(fn, [layer])
    assert (f.level, f.code) == ("error", "arch")


def test_layer_python_outside_python_folder_is_a_layout_warning(tmp_path: Path) -> None:
    good = {
        "python/mod.py": b"",
        "python/lib/python3.11/site-packages/pkg/__init__.py": b"",
        "lib/libx.so.1": b"",
        "bin/tool": b"",
    }
    assert check_limits(load_manifest(make_artifact(tmp_path, good, name="good", layout="layer"))) == []
    bad = load_manifest(make_artifact(tmp_path, {"pkg/__init__.py": b"", "lib/libx.so.1": b""}, layout="layer"))
    (f,) = check_limits(bad)
    assert (f.level, f.code) == ("warning", "layout")
    assert "pkg/__init__.py" in f.message and "/opt/python" in f.message


def test_layer_site_packages_of_another_python_is_a_warning(tmp_path: Path) -> None:
    m = load_manifest(
        make_artifact(tmp_path, {"python/lib/python3.12/site-packages/p.py": b""}, name="l", layout="layer")
    )
    (f,) = check_limits(m)
    assert f.code == "layout" and "python3.12" in f.message and "python3.11" in f.message


def test_function_with_python_top_folder_is_a_layout_warning(tmp_path: Path) -> None:
    m = load_manifest(make_artifact(tmp_path, {"python/app.py": b""}))
    (f,) = check_limits(m)
    assert (f.level, f.code) == ("warning", "layout")
    assert "/var/task" in f.message
