"""Requirement files read on the host: includes, hashes, markers, index lines, pins, the key text."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.recipe.requirements import RequirementsInvalid, read_requirement_files, unpinned_warning
from tests.conftest import uv_lock_with_git

HASH = "sha256:" + "a" * 64


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_includes_are_renamed_and_read_once(tmp_path: Path) -> None:
    _write(tmp_path, "common/base.txt", "six==1.16.0\n-c ../constraints.txt\n")
    _write(tmp_path, "constraints.txt", "idna==3.7\n")
    root = _write(tmp_path, "app/requirements.txt", "-r ../common/base.txt\n--requirement=../common/base.txt\nidna\n")
    found = read_requirement_files((root,))
    files = dict(found.files)
    assert found.roots == ("0.txt",)
    assert files["0.txt"] == "-r 1.txt\n-r 1.txt\nidna\n"
    assert files["1.txt"] == "six==1.16.0\n-c 2.txt\n"
    assert files["2.txt"] == "idna==3.7\n"
    assert found.unpinned == ()  # idna is pinned by the constraints file
    read = (root, tmp_path / "common/base.txt", tmp_path / "constraints.txt")
    assert set(found.read) == {str(p.resolve()) for p in read}


def test_hashes_markers_continuations_and_comments(tmp_path: Path) -> None:
    text = (
        "# pip-compile output\n"
        f"six==1.16.0 \\\n    --hash={HASH} \\\n    --hash {HASH}  # via app\n"
        'tomli==2.0.1 ; python_version < "3.11"\n'
        "--require-hashes\n"
    )
    found = read_requirement_files((_write(tmp_path, "requirements.txt", text),))
    assert dict(found.files)["0.txt"].splitlines() == [
        f"six==1.16.0 --hash={HASH} --hash {HASH}",
        'tomli==2.0.1 ; python_version < "3.11"',
        "--require-hashes",
    ]
    assert found.hashes and found.unpinned == ()


def test_unpinned_lines_are_listed_with_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "requirements.txt", "six==1.16.0\nrequests>=2\n\nboto3\nurllib3==2.*\n")
    found = read_requirement_files((path,))
    where = path.resolve()
    assert [(u.where, u.requirement) for u in found.unpinned] == [
        (f"{where}:2", "requests>=2"), (f"{where}:4", "boto3"), (f"{where}:5", "urllib3==2.*")
    ]
    warning = unpinned_warning(found)
    assert warning and "requests>=2 and 2 more not pinned" in warning and "--refresh" in warning


def test_index_credentials_are_kept_for_pip_and_out_of_the_key(tmp_path: Path) -> None:
    text = "-i https://user:s3cret@pypi.example/simple\n--extra-index-url=https://tok@x.example/simple\nsix==1.16.0\n"
    found = read_requirement_files((_write(tmp_path, "requirements.txt", text),))
    assert "s3cret" in dict(found.files)["0.txt"]  # pip needs them
    assert "s3cret" not in found.key_text and "tok@" not in found.key_text
    assert "--index-url https://pypi.example/simple" in found.key_text
    rotated = read_requirement_files((_write(tmp_path / "b", "requirements.txt", text.replace("s3cret", "other")),))
    assert rotated.key_text == found.key_text


def test_key_text_follows_included_content(tmp_path: Path) -> None:
    base = _write(tmp_path, "base.txt", "six==1.16.0\n")
    root = _write(tmp_path, "requirements.txt", "-r base.txt\n")
    before = read_requirement_files((root,)).key_text
    base.write_text("six==1.17.0\n")
    assert read_requirement_files((root,)).key_text != before


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("six==1.16.0\n-r missing.txt\n", 2, "missing.txt does not exist"),
        ("six==1.16.0\n\nsix=1.0\n", 3, "'six=1.0' is not a requirement"),
        ("-e ./pkg\n", 1, "option -e is not supported"),
        ("./pkg\n", 1, "'./pkg' is a local path"),
        ("-r https://x.example/r.txt\n", 1, "only local files can be included"),
        ("--index-url\n", 1, "--index-url needs a value"),
        ("--index-url 'unclosed\n", 1, "cannot split"),
        ("-i https://u:hunter2@x.example/simple\nsix=1\n", 2, "'six=1' is not a requirement"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, "requirements.txt", text)
    with pytest.raises(RequirementsInvalid) as info:
        read_requirement_files((path,))
    assert str(info.value).startswith(f"{path.resolve()}:{line}: ") and message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_an_include_loop_is_read_once(tmp_path: Path) -> None:
    _write(tmp_path, "a.txt", "-r b.txt\nsix==1.16.0\n")
    _write(tmp_path, "b.txt", "-r a.txt\n")
    found = read_requirement_files((tmp_path / "a.txt",))
    assert dict(found.files) == {"0.txt": "-r 1.txt\nsix==1.16.0\n", "1.txt": "-r 0.txt\n"}


def test_uv_lock_is_exported_offline_without_dev_groups(tmp_path: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "uvlock"
    found = read_requirement_files(((fixture / "uv.lock").resolve(),))
    (name, text), = found.files
    assert found.roots == (name,) and text.startswith("six==1.16.0 --hash=sha256:")
    assert "pytest" not in text and found.hashes and found.unpinned == ()
    assert set(found.read) == {str((fixture / "uv.lock").resolve()), str((fixture / "pyproject.toml").resolve())}


def test_uv_lock_without_its_project_is_one_clear_error(tmp_path: Path) -> None:
    from builder.errors import UserError

    lock = _write(tmp_path, "uv.lock", "version = 1\n")
    with pytest.raises(UserError) as info:
        read_requirement_files((lock,))
    assert str(info.value).startswith(f"{lock}: uv export failed") and "pyproject.toml" in info.value.hint


def test_hash_mode_lists_requirements_without_a_hash(tmp_path: Path) -> None:
    found = read_requirement_files(
        (_write(tmp_path, "a.txt", f"six==1.16.0 --hash={HASH}\n"), _write(tmp_path, "b.txt", "\nidna==3.7\n"))
    )
    assert found.hashes and found.unhashed == (f"{(tmp_path / 'b.txt').resolve()}:2",)


def test_git_lines_in_files_and_their_includes_are_listed(tmp_path: Path) -> None:
    """git+ lines anywhere in the set are listed as the container's copy holds them (the build
    resolves and pins them); they count as pinned, and the key holds them without credentials."""
    _write(tmp_path, "git.txt", "b @ git+ssh://git@git.corp/t/b.git@main ; python_version >= '3'\n")
    text = (
        "-r git.txt\nsix==1.16.0\n"
        "a @ git+https://u:tok@git.corp/t/a.git@v1\n"
        "git+https://git.corp/t/c.git#egg=c\n"
        "d @ https://files.corp/d-1.0.tar.gz\n"
    )
    found = read_requirement_files((_write(tmp_path, "requirements.txt", text),))
    assert found.git == (  # in reading order: the included file first
        ("b @ git+ssh://git@git.corp/t/b.git@main ; python_version >= '3'", "ssh://git@git.corp/t/b.git", "main"),
        ("a @ git+https://u:tok@git.corp/t/a.git@v1", "https://u:tok@git.corp/t/a.git", "v1"),
        ("git+https://git.corp/t/c.git#egg=c", "https://git.corp/t/c.git", None),
    )
    files = dict(found.files)
    assert all(line in files["0.txt"].splitlines() + files["1.txt"].splitlines() for line, _, _ in found.git)
    assert [u.requirement for u in found.unpinned] == ["d @ https://files.corp/d-1.0.tar.gz"]
    assert "tok" not in found.key_text and "git+https://git.corp/t/a.git@v1" in found.key_text


def test_git_sources_in_a_uv_lock_export_pinned_to_their_commit(tmp_path: Path) -> None:
    commit = "3" * 40
    _write(tmp_path, "pyproject.toml", '[project]\nname = "app"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
           'dependencies = ["lbx @ git+https://git.corp/t/lbx.git@v1"]\n')  # fmt: skip
    lock = _write(tmp_path, "uv.lock", uv_lock_with_git("lbx", "https://git.corp/t/lbx.git", commit))
    found = read_requirement_files((lock,))
    assert found.git == ((f"lbx @ git+https://git.corp/t/lbx.git@{commit}", "https://git.corp/t/lbx.git", commit),)
    assert found.unpinned == ()
