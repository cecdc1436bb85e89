"""Secrets on the host side: --secret/--ssh parsing, the recipe's `secrets:`, the host's pip setup,
the files the build container gets, and what the cache key records (ids, never values)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from builder.cache import keys
from builder.errors import UserError
from builder.pipeline import secrets
from builder.recipe.loader import RecipeInvalid, load

BASE = "name: p\nversion: '1'\nruntimes: [python3.11]\n"


def recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(BASE + body)
    return path


def given(**values: str) -> secrets.BuildSecrets:
    return secrets.BuildSecrets({k: secrets.Secret(k, v.encode(), "test") for k, v in values.items()})


def test_secret_options_read_files_and_variables_never_inline(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("s3cr3t")
    out = secrets.parse_secret_options(
        [f"id=a,src={tmp_path / 'tok'}", "id=b,env=TOKEN", f"id=c,type=file,source={tmp_path / 'tok'}"],
        {"TOKEN": "v"},
    )
    assert out["a"].value == b"s3cr3t" and out["b"].value == b"v" and out["c"].value == b"s3cr3t"
    assert "s3cr3t" not in repr(out)  # a value never shows in a repr (a log line, a traceback)
    for bad in ("id=a", "id=a,value=x", "src=/x", "id=a b,env=X", "id=a,src=/x,env=Y"):
        with pytest.raises(UserError, match="expected id=NAME"):
            secrets.parse_secret_options([bad], {})
    with pytest.raises(UserError, match="TOKEN is not set"):
        secrets.parse_secret_options(["id=a,env=TOKEN"], {})
    with pytest.raises(UserError, match="cannot read"):
        secrets.parse_secret_options([f"id=a,src={tmp_path / 'missing'}"], {})
    with pytest.raises(UserError, match="twice"):
        secrets.parse_secret_options(["id=a,env=T", "id=a,env=T"], {"T": "x"})


def test_ssh_option_needs_an_agent(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="SSH_AUTH_SOCK is not set"):
        secrets.parse_ssh_options(["key"], {})
    with pytest.raises(UserError, match="does not exist"):
        secrets.parse_ssh_options(["key"], {"SSH_AUTH_SOCK": str(tmp_path / "nope")})
    sock = tmp_path / "agent"
    sock.write_text("")
    assert secrets.parse_ssh_options(["key"], {"SSH_AUTH_SOCK": str(sock)}) == {"key": str(sock)}


def test_recipe_secrets_field_checks(tmp_path: Path) -> None:
    ok = load(recipe(tmp_path, "secrets:\n  - plain\n  - {id: idx, url: 'https://pypi.corp/'}\n"))
    assert ok.secret_ids == ("idx", "plain")
    for body, wanted in (
        ("secrets:\n  - {id: k, ssh: git.corp}\n", "known_hosts"),
        ("secrets:\n  - a\n  - a\n", "already listed"),
        ("secrets:\n  - {id: h, auth: header}\n", "needs url"),
        ("secrets:\n  - {id: u, url: 'https://user:pw@host/'}\n", "without user:password"),
        ("secrets:\n  - 'bad id'\n", "secrets[0]"),
    ):
        with pytest.raises(RecipeInvalid, match=re.escape(wanted)):
            load(recipe(tmp_path, body))


def test_missing_secret_named_before_anything_runs(tmp_path: Path) -> None:
    r = load(recipe(tmp_path, "secrets:\n  - one\n  - {id: key, ssh: h, known_hosts_secret: kh}\n"))
    with pytest.raises(UserError) as raised:
        secrets.check_given([r], given(one="x"))
    assert "key" in raised.value.message and "kh" in raised.value.message and "one (" not in raised.value.message
    assert "--secret id=key" in (raised.value.hint or "")
    secrets.check_given([r], secrets.BuildSecrets(given(one="x", kh="h k").given, {"key": "/sock"}))


def test_host_pip_setup_in_pips_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nindex-url = https://u:p@user.example/simple\ncert = /host/only.pem\n"
        "[install]\ntrusted_host = a.example\n"
    )
    (home / ".netrc").write_text("machine files.example login me password pw\n")
    env = {"HOME": str(home), "XDG_CONFIG_DIRS": str(tmp_path / "none"), "PIP_EXTRA_INDEX_URL": "https://x.example/s"}
    host = secrets.host_pip(env)
    assert dict(host.settings) == {
        "index-url": "https://u:p@user.example/simple",
        "trusted-host": "a.example",
        "extra-index-url": "https://x.example/s",
    }  # cert, a host path, stays behind
    assert host.netrc == b"machine files.example login me password pw\n"
    files_off = secrets.host_pip({**env, "PIP_CONFIG_FILE": "/dev/null"})  # pip's own way to read no file
    assert dict(files_off.settings) == {"extra-index-url": "https://x.example/s"}


def test_container_files_and_key_parts(tmp_path: Path) -> None:
    r = load(
        recipe(
            tmp_path,
            "secrets:\n  - {id: idx, url: 'http://pypi.corp:8080/'}\n  - {id: git, url: 'https://git.corp/'}\n"
            "  - {id: key, ssh: git.corp, known_hosts: 'git.corp ssh-ed25519 AAAA'}\n  - plain\n"
            "python:\n  index_url: http://pypi.corp:8080/simple/\n  requirements:\n"
            "    - a @ git+https://git.corp/team/a.git@v1\n    - b @ git+ssh://git@git.corp/team/b.git\n",
        )
    )
    host = secrets.HostPip({"extra-index-url": "https://h:hp@extra.example/simple"}, b"machine m login l password q\n")
    bs = secrets.BuildSecrets(given(idx="alice:pw1", git="tok2", key="KEYDATA", plain="p3").given, {}, host)
    out = secrets.container_files(r, bs)
    conf = out.files[secrets.PIP_CONF].decode()
    assert "index-url = http://alice:pw1@pypi.corp:8080/simple/" in conf
    assert "extra-index-url = https://h:hp@extra.example/simple" in conf and "trusted-host = pypi.corp:8080" in conf
    assert out.files[secrets.GIT_CREDENTIALS] == b"http://alice:pw1@pypi.corp:8080\nhttps://token:tok2@git.corp\n"
    assert out.files[secrets.NETRC] == host.netrc
    assert out.files["/run/secrets/key"] == b"KEYDATA\n" and out.files["/run/secrets/plain"] == b"p3"
    assert out.files[secrets.KNOWN_HOSTS] == b"git.corp ssh-ed25519 AAAA\n"
    # the environment names files only
    env = " ".join(f"{k}={v}" for k, v in out.env.items())
    for value in ("pw1", "tok2", "KEYDATA", "p3", "hp", "password q"):
        assert value not in env
    assert "-i /run/secrets/key" in out.env["GIT_SSH_COMMAND"] and "StrictHostKeyChecking=yes" in env
    # the key: ids and bare index URLs
    assert secrets.index_key(r, host) == ["http://pypi.corp:8080/simple/", "https://extra.example/simple"]
    assert secrets.secret_ids_used(r, host) == ["git", "idx", "key", "plain", "host:netrc"]
    parts = {
        "recipe_canonical": "r", "source_digests": {}, "local_requirement_digests": {}, "image_id": "i",
        "runtime": "python3.11", "arch": "x86_64", "mode": "native", "tool": "t",
    }  # fmt: skip
    plain = keys.cache_key(**parts)  # type: ignore[arg-type]
    assert keys.cache_key(**parts, secret_ids=(), indexes=(), git={}) == plain  # type: ignore[arg-type]
    with_ids = keys.cache_key(**parts, secret_ids=["idx"])  # type: ignore[arg-type]
    assert with_ids != plain
    assert keys.cache_key(**parts, git={"a": "1" * 40}) != keys.cache_key(**parts, git={"a": "2" * 40})  # type: ignore[arg-type]


def test_git_requirements_and_pins() -> None:
    from dataclasses import replace

    from builder.recipe.model import PythonSpec, Recipe

    r = Recipe(Path("/r.yaml"), "n", "1", ("python3.11",), ("x86_64",))
    reqs = (
        "a @ git+https://git.corp/t/a.git@v1",
        "git+ssh://git@git.corp/t/b.git#egg=b",
        "c @ git+https://git.corp/t/c.git@" + "f" * 40 + "#subdirectory=x",
        "plain==1",
    )
    r = replace(r, python=PythonSpec(requirements=reqs))
    found = secrets.git_requirements(r)
    assert found == [
        (reqs[0], "https://git.corp/t/a.git", "v1"),
        (reqs[1], "ssh://git@git.corp/t/b.git", None),
        (reqs[2], "https://git.corp/t/c.git", "f" * 40),
    ]
    assert secrets.pinned(reqs[0], "https://git.corp/t/a.git", "v1", "9" * 40) == (
        "a @ git+https://git.corp/t/a.git@" + "9" * 40
    )
    assert secrets.pinned(reqs[1], "ssh://git@git.corp/t/b.git", None, "9" * 40).startswith(
        "git+ssh://git@git.corp/t/b.git@" + "9" * 40 + "#egg=b"
    )
    assert [secrets.is_commit(ref) for _, _, ref in found] == [False, False, True]


def test_git_lines_of_requirement_files_join_the_recipe_s_and_are_pinned_in_the_copy(tmp_path: Path) -> None:
    """A git line in a requirement file is resolved, pinned and keyed like an inline one."""
    from dataclasses import replace

    from builder.recipe.model import PythonSpec, Recipe
    from builder.recipe.requirements import read_requirement_files

    (tmp_path / "more.txt").write_text("b @ git+ssh://git@git.corp/t/b.git  # from an include\n")
    req_file = tmp_path / "requirements.txt"
    req_file.write_text("-r more.txt\nsix==1.16.0\na @ git+https://u:tok@git.corp/t/a.git@v1\n")
    found = read_requirement_files((req_file,))
    r = Recipe(Path("/r.yaml"), "n", "1", ("python3.11",), ("x86_64",))
    r = replace(r, python=PythonSpec(requirements=("a @ git+https://u:tok@git.corp/t/a.git@v1", "c @ git+https://h/c.git")))
    wanted = secrets.git_requirements(r, found)
    assert [w[0] for w in wanted] == [  # the recipe's first; a line already there is asked once
        "a @ git+https://u:tok@git.corp/t/a.git@v1", "c @ git+https://h/c.git", "b @ git+ssh://git@git.corp/t/b.git"
    ]
    pins = {req: (repo, ref, str(i) * 40) for i, (req, repo, ref) in enumerate(wanted)}
    files = {name: secrets.pinned_text(text, pins) for name, text in found.files}
    assert files == {
        "0.txt": "-r 1.txt\nsix==1.16.0\na @ git+https://u:tok@git.corp/t/a.git@" + "0" * 40 + "\n",
        "1.txt": "b @ git+ssh://git@git.corp/t/b.git@" + "2" * 40 + "\n",
    }
    key = secrets.git_key(pins)
    assert key["a @ git+https://git.corp/t/a.git@v1"] == "0" * 40 and "tok" not in json.dumps(key)


def test_source_auth_from_secret_or_netrc(tmp_path: Path) -> None:
    r = load(
        recipe(
            tmp_path,
            "secrets:\n  - {id: h, url: 'https://files.corp/private/', auth: header}\n"
            "  - {id: b, url: 'https://basic.corp/'}\n",
        )
    )
    netrc = tmp_path / "netrc"
    netrc.write_text("machine other.corp login me password pw\n")
    bs = secrets.BuildSecrets(
        given(h="Bearer abc", b="u:p").given, {}, secrets.HostPip({}, netrc.read_bytes(), str(netrc))
    )
    assert secrets.source_auth("https://files.corp/private/x.tgz", r, bs) == "Bearer abc"
    assert secrets.source_auth("https://basic.corp/x.tgz", r, bs) == "Basic " + base64.b64encode(b"u:p").decode()
    assert secrets.source_auth("https://other.corp/x.tgz", r, bs) == "Basic " + base64.b64encode(b"me:pw").decode()
    assert secrets.source_auth("https://files.corp/public/x.tgz", r, bs) is None


def test_masks_cover_values_lines_and_passwords(tmp_path: Path) -> None:
    r = load(recipe(tmp_path, "secrets: [a, b, c]\n"))
    bs = given(a="alice:longpassword", b="-----BEGIN K-----\nQUJDREVGR0hJSktM\n-----END K-----\n", c="short")
    found = secrets.masks(r, bs)
    assert "alice:longpassword" in found and "longpassword" in found and "QUJDREVGR0hJSktM" in found
    assert "short" not in found  # too short to mask without masking ordinary words
    assert found == sorted(found, key=len, reverse=True)
