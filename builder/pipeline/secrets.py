"""Stage pipeline: the secrets a build is handed (--secret, --ssh, the host's own pip setup), checked
before any container starts, and the files they become under /run/secrets in the build container.

A value lives only in this process's memory and, while a step that needs it runs, in a tmpfs of
the build container (written through an exec's stdin, never env, command line, bind mount or a
layer). Nothing here may log, show, hash or store a value: messages name a secret by its id, the
cache key gets ids and index URLs without credentials. Must not touch Docker (steps do, through
the Container).
"""

from __future__ import annotations

import base64
import configparser
import netrc
import os
import re
import shlex
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import UserError
from builder.recipe.model import Recipe
from builder.recipe.requirements import GitPin, GitRequirement, RequirementSet, git_source, redact_bare
from builder.redact import url_credentials

SECRETS_DIR = "/run/secrets"
PIP_CONF = f"{SECRETS_DIR}/lambda-builder.pip.conf"  # ids cannot hold a '.': no clash with a user's
NETRC = f"{SECRETS_DIR}/lambda-builder.netrc"
KNOWN_HOSTS = f"{SECRETS_DIR}/lambda-builder.known_hosts"
GIT_CREDENTIALS = f"{SECRETS_DIR}/lambda-builder.git-credentials"
AGENT_SOCKET = "/run/lambda-builder-ssh-agent.sock"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
HOST_PIP_KEYS = ("index-url", "extra-index-url", "trusted-host")  # host paths (cert, find-links) mean nothing inside


@dataclass(frozen=True)
class Secret:
    id: str
    value: bytes = field(repr=False)
    origin: str  # "file PATH" or "env VAR": for messages, never the value


@dataclass(frozen=True)
class HostPip:
    """The host's pip setup as pip would read it: index settings and the netrc."""

    settings: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold credentials
    netrc: bytes | None = field(default=None, repr=False)
    netrc_path: str | None = None

    @property
    def indexes(self) -> list[str]:
        main = [self.settings["index-url"]] if "index-url" in self.settings else []
        return main + self.settings.get("extra-index-url", "").split()


@dataclass(frozen=True)
class BuildSecrets:
    """What `build` was handed: --secret values by id, --ssh agent sockets by id, the host's pip setup."""

    given: Mapping[str, Secret] = field(default_factory=dict)
    agents: Mapping[str, str] = field(default_factory=dict)  # id -> host socket path
    host: HostPip = HostPip()


def parse_secret_options(specs: Sequence[str], environ: Mapping[str, str]) -> dict[str, Secret]:
    """`id=NAME,src=PATH` or `id=NAME,env=VAR` (BuildKit's spelling; `source`/`type=file` allowed)."""
    out: dict[str, Secret] = {}
    for spec in specs:
        parts = dict(p.partition("=")[::2] for p in spec.split(",") if p)
        name = parts.pop("id", "")
        parts.pop("type", None)
        src = parts.pop("src", None) or parts.pop("source", None)
        var = parts.pop("env", None)
        if not _ID.match(name) or parts or (src is None) == (var is None):
            raise UserError(
                f"--secret {spec.split(',')[0]}...: expected id=NAME,src=PATH or id=NAME,env=VAR",
                hint="NAME: letters, digits, '_', '-'; the value is read from the file or variable, never given inline",
            )
        if name in out:
            raise UserError(f"--secret id={name} is given twice; give each secret once")
        if src is not None:
            path = Path(src).expanduser()
            try:
                value = path.read_bytes()
            except OSError as exc:
                raise UserError(f"--secret id={name}: cannot read {path}: {exc.strerror or exc}") from None
            out[name] = Secret(name, value, f"file {path}")
        else:
            assert var is not None
            if var not in environ:
                raise UserError(f"--secret id={name}: the environment variable {var} is not set")
            out[name] = Secret(name, environ[var].encode(), f"env {var}")
    return out


def parse_ssh_options(specs: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`--ssh NAME` (the agent at $SSH_AUTH_SOCK) or `--ssh NAME=SOCKET`: an agent instead of a key."""
    out: dict[str, str] = {}
    for spec in specs:
        name, _, socket = spec.partition("=")
        socket = socket or environ.get("SSH_AUTH_SOCK", "")
        if not _ID.match(name):
            raise UserError(f"--ssh {spec}: expected NAME or NAME=SOCKET (NAME as in the recipe's secrets)")
        if not socket:
            raise UserError(f"--ssh {name}: SSH_AUTH_SOCK is not set; start an agent (ssh-agent) or give NAME=SOCKET")
        if not os.path.exists(socket):
            raise UserError(f"--ssh {name}: the agent socket {socket} does not exist")
        out[name] = socket
    return out


def host_pip(environ: Mapping[str, str]) -> HostPip:
    """The host's pip index settings, read in pip's order (global, user, site, $PIP_CONFIG_FILE, then
    PIP_* variables), sections [global] then [install]; and the netrc pip and git would read."""
    if environ.get("PIP_CONFIG_FILE") == os.devnull:
        files: list[Path] = []
    else:
        home = Path(environ.get("HOME") or Path.home())
        xdg = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
        files = [*(Path(d) / "pip" / "pip.conf" for d in xdg), Path("/etc/pip.conf")]
        user = Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"
        files += [home / ".pip" / "pip.conf", user]
        if environ.get("VIRTUAL_ENV"):
            files.append(Path(environ["VIRTUAL_ENV"]) / "pip.conf")
        if environ.get("PIP_CONFIG_FILE"):
            files.append(Path(environ["PIP_CONFIG_FILE"]))
    settings: dict[str, str] = {}
    for path in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: pip cannot read this file either: {exc}") from None
        for section in ("global", "install"):
            for key in HOST_PIP_KEYS:
                for spelling in (key, key.replace("-", "_")):
                    if parser.has_option(section, spelling):
                        settings[key] = " ".join(parser.get(section, spelling).split())
    for key in HOST_PIP_KEYS:
        value = environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = " ".join(value.split())
    netrc_path = Path(environ.get("NETRC") or Path(environ.get("HOME") or Path.home()) / ".netrc")
    try:
        netrc_bytes: bytes | None = netrc_path.read_bytes()
    except OSError:
        netrc_bytes = None
    return HostPip(settings, netrc_bytes, str(netrc_path) if netrc_bytes is not None else None)


def from_options(
    secret_specs: Sequence[str], ssh_specs: Sequence[str], *, host_pip_config: bool, environ: Mapping[str, str]
) -> BuildSecrets:
    """What `build --secret/--ssh [--no-host-pip-config]` hands the builds."""
    return BuildSecrets(
        parse_secret_options(secret_specs, environ),
        parse_ssh_options(ssh_specs, environ),
        host_pip(environ) if host_pip_config else HostPip(),
    )


def check_given(recipes: Sequence[Recipe], secrets: BuildSecrets) -> None:
    """Before any container starts: every secret a recipe needs was given (a value, or an agent for
    an SSH key); one message naming each missing one and how to give it."""
    missing: list[str] = []
    for recipe in recipes:
        for use in recipe.secrets:
            if use.id not in secrets.given and not (use.ssh and use.id in secrets.agents):
                missing.append(f"{use.id} (recipe {recipe.path})")
            elif use.id in secrets.agents and not use.ssh:
                raise UserError(f"--ssh {use.id}: the recipe {recipe.path} lists {use.id} without ssh: HOST")
            if use.known_hosts_secret and use.known_hosts_secret not in secrets.given:
                missing.append(f"{use.known_hosts_secret} (known_hosts_secret in {recipe.path})")
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        first = missing[0].split(" ")[0]
        raise UserError(
            f"the build needs secrets that were not given: {names}",
            hint=f"pass each with --secret id=NAME,src=FILE or id=NAME,env=VAR (e.g. --secret id={first},src=...)",
        )


def index_settings(recipe: Recipe, host: HostPip) -> dict[str, str]:
    """pip's index settings for this build: the host's, then the recipe's (which win)."""
    settings = dict(host.settings)
    if recipe.python.index_url:
        settings["index-url"] = recipe.python.index_url
    if recipe.python.extra_index_urls:
        settings["extra-index-url"] = " ".join(recipe.python.extra_index_urls)
    # an http:// index the recipe names was chosen knowingly: pip would ignore it without this
    named = (recipe.python.index_url, *recipe.python.extra_index_urls)
    plain = [urllib.parse.urlsplit(u).netloc.rpartition("@")[2] for u in named if u and u.startswith("http://")]
    hosts = [*settings.get("trusted-host", "").split(), *plain]
    if hosts:
        settings["trusted-host"] = " ".join(dict.fromkeys(hosts))
    return settings


def index_key(recipe: Recipe, host: HostPip) -> list[str]:
    """The index URLs for the cache key, credentials stripped (a rotated token rebuilds nothing)."""
    settings = index_settings(recipe, host)
    urls = ([settings["index-url"]] if "index-url" in settings else []) + settings.get("extra-index-url", "").split()
    return [url_credentials(u)[0] for u in urls]


def secret_ids_used(recipe: Recipe, host: HostPip) -> list[str]:
    """The ids the cache key records: the recipe's, and the host's pip files by a fixed name."""
    return [*recipe.secret_ids, *(["host:netrc"] if host.netrc is not None else [])]


def _user_password(secret: Secret) -> tuple[str, str]:
    text = secret.value.decode("utf-8", "replace").strip()
    user, sep, password = text.partition(":")
    return (user, password) if sep else ("token", text)


def _host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or ""


def _with_credentials(url: str, basic: Sequence[tuple[str, tuple[str, str]]]) -> str:
    """`url` with the user:password of the first url secret that prefixes it (pip then sends them to
    that index only); unchanged when none does or it carries its own."""
    for prefix, (user, password) in basic:
        if url.startswith(prefix) and "@" not in urllib.parse.urlsplit(url).netloc:
            parts = urllib.parse.urlsplit(url)
            userinfo = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
            return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))
    return url


def source_auth(url: str, recipe: Recipe, secrets: BuildSecrets) -> str | None:
    """The Authorization header for a URL source: from a recipe secret whose url prefixes it, else
    the host's netrc entry for its host; None without either."""
    for use in recipe.secrets:
        if use.url and url.startswith(use.url) and use.id in secrets.given:
            secret = secrets.given[use.id]
            if use.auth == "header":
                return secret.value.decode("utf-8", "replace").strip()
            user, password = _user_password(secret)
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    if secrets.host.netrc_path is not None:
        entry = _parse_netrc(secrets.host.netrc_path).get(_host_of(url))
        if entry is not None:
            return "Basic " + base64.b64encode(f"{entry[0]}:{entry[1]}".encode()).decode("ascii")
    return None


def _parse_netrc(path: str) -> dict[str, tuple[str, str]]:
    try:
        parsed = netrc.netrc(path)
    except (netrc.NetrcParseError, OSError) as exc:
        raise UserError(f"{path}: cannot be read as a netrc (line {getattr(exc, 'lineno', '?')})") from None
    return {host: (login or "", password or "") for host, (login, _, password) in parsed.hosts.items()}


def masks(recipe: Recipe, secrets: BuildSecrets) -> list[str]:
    """Texts to mask in a build's output: each secret's value, its lines, its password part (at
    least 6 characters: shorter ones would mask ordinary words), longest first."""
    found: set[str] = set()
    for sid in recipe.secret_ids:
        if sid in secrets.given:
            text = secrets.given[sid].value.decode("utf-8", "replace").strip()
            found.update([text, *text.splitlines(), text.partition(":")[2]])
    return sorted((m.strip() for m in found if len(m.strip()) >= 6), key=len, reverse=True)


@dataclass(frozen=True)
class SecretFiles:
    """What the build container gets for the steps that need secrets: files under /run/secrets
    (path -> content), the variables naming them (paths only) and an agent socket to bind."""

    files: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    env: Mapping[str, str] = field(default_factory=dict)  # for pip (and the git it runs)
    agent: str | None = None  # host socket path, bound at AGENT_SOCKET

    @property
    def needed(self) -> bool:
        return bool(self.files or self.agent)


def container_files(recipe: Recipe, secrets: BuildSecrets) -> SecretFiles:
    """The files one build's steps see: each recipe secret as /run/secrets/ID; pip's index settings
    as a pip.conf, an index's credentials (a recipe url secret) in its URL there; the host's netrc
    for pip (NETRC); the url secrets in git's credential-store format, which git reads for
    git+https (matched by scheme, host and port); and the SSH setup for git+ssh."""
    files = {f"{SECRETS_DIR}/{sid}": secrets.given[sid].value for sid in recipe.secret_ids if sid in secrets.given}
    env: dict[str, str] = {}
    basic = [
        (use.url, _user_password(secrets.given[use.id]))
        for use in recipe.secrets
        if use.url and use.auth == "basic" and use.id in secrets.given
    ]
    settings = index_settings(recipe, secrets.host)
    if settings:
        for key in ("index-url", "extra-index-url"):
            if key in settings:
                settings[key] = " ".join(_with_credentials(u, basic) for u in settings[key].split())
        conf = "[global]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(settings.items()))
        files[PIP_CONF] = conf.encode()
        env["PIP_CONFIG_FILE"] = PIP_CONF
    if secrets.host.netrc is not None:
        files[NETRC] = secrets.host.netrc
        env["NETRC"] = NETRC
    if basic:
        stored: dict[str, str] = {}
        for url, (user, password) in basic:
            parts = urllib.parse.urlsplit(url)
            userinfo = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
            stored.setdefault(f"{parts.scheme}://{parts.netloc}", f"{parts.scheme}://{userinfo}@{parts.netloc}\n")
        files[GIT_CREDENTIALS] = "".join(stored.values()).encode()
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper"})
        env["GIT_CONFIG_VALUE_0"] = f"store --file={GIT_CREDENTIALS}"
    agent = None
    keys, known = [], []
    for use in recipe.secrets:
        if not use.ssh:
            continue
        if use.known_hosts:
            known.append(use.known_hosts.strip() + "\n")
        if use.known_hosts_secret and use.known_hosts_secret in secrets.given:
            known.append(secrets.given[use.known_hosts_secret].value.decode("utf-8", "replace").strip() + "\n")
        if use.id in secrets.given:
            keys.append(f"{SECRETS_DIR}/{use.id}")
            pem = files[f"{SECRETS_DIR}/{use.id}"]
            files[f"{SECRETS_DIR}/{use.id}"] = pem if pem.endswith(b"\n") else pem + b"\n"  # ssh needs the newline
        elif use.id in secrets.agents:
            agent = secrets.agents[use.id]
            env["SSH_AUTH_SOCK"] = AGENT_SOCKET
    if known:
        files[KNOWN_HOSTS] = "".join(known).encode()
        ssh = ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={KNOWN_HOSTS}"]
        if keys:
            ssh += ["-o", "IdentitiesOnly=yes", *(arg for k in keys for arg in ("-i", k))]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
    return SecretFiles(files, env, agent)


def git_requirements(recipe: Recipe, files: RequirementSet | None = None) -> list[GitRequirement]:
    """(requirement, repository URL as git takes it, ref or None) of each git+ requirement: the
    recipe's own, then each line of its requirement files (as the container's copy holds it)."""
    out: dict[str, GitRequirement] = {}
    for req in recipe.python.requirements:
        source = git_source(req)
        if source is not None:
            out.setdefault(req, (req, *source))
    for line in files.git if files is not None else ():
        out.setdefault(line[0], line)
    return list(out.values())


def pinned(req: str, repo: str, ref: str | None, commit: str) -> str:
    """The requirement with its ref replaced by the commit it resolved to (what pip then installs)."""
    old = f"{repo}@{ref}" if ref else repo
    return req.replace(old, f"{repo}@{commit}", 1)


def pinned_text(text: str, pins: Mapping[str, GitPin]) -> str:
    """A requirement file's text (one logical line a line) with each resolved git line pinned."""
    return "".join(f"{pinned(line, *pins[line]) if line in pins else line}\n" for line in text.splitlines())


def git_key(pins: Mapping[str, GitPin]) -> dict[str, str]:
    """requirement -> commit, for the cache key: credentials in a URL stripped (a rotated token
    in a requirement file rebuilds nothing, as in its index lines)."""
    return {redact_bare(req): pin[2] for req, pin in sorted(pins.items())}


def is_commit(ref: str | None) -> bool:
    return re.fullmatch(r"[0-9a-f]{40}", ref or "") is not None
