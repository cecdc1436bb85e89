"""The uv step's shell, engine-free: uv reads no pip.conf, so the step exports the index settings
lambda-builder wrote as one (credentials %-encoded, as pip reads them) for uv, and prints nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from builder.pipeline.actions.install import UV_INDEX_ENV


def _run(tmp_path: Path, conf: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pip.conf").write_text(conf)
    head = UV_INDEX_ENV.replace("{python}", sys.executable)
    script = tmp_path / "s.sh"
    script.write_text(head + 'echo "index=$UV_INDEX_URL"; echo "extra=${UV_EXTRA_INDEX_URL:-}"; '
                      'echo "insecure=${UV_INSECURE_HOST:-}"\n')  # fmt: skip
    env = {"PIP_CONFIG_FILE": str(tmp_path / "pip.conf"), "PIP_NO_CACHE_DIR": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["sh", "-e", str(script)], capture_output=True, text=True, env=env, check=True)


def test_pip_conf_indexes_become_uv_variables(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        "[global]\nindex-url = https://pypi.org/simple\n"
        "extra-index-url = https://u:p%40ss@x.example/simple\n  https://y.example/simple\ntrusted-host = x.example\n",
    )
    assert done.stdout.splitlines() == [
        "index=https://pypi.org/simple",
        "extra=https://u:p%40ss@x.example/simple https://y.example/simple",
        "insecure=x.example",
    ]
    assert done.stderr == ""


def test_an_unreadable_pip_conf_prints_nothing_of_it(tmp_path: Path) -> None:
    done = _run(tmp_path, "not an ini file https://u:secret@x.example/simple\n")
    assert "secret" not in done.stdout + done.stderr
