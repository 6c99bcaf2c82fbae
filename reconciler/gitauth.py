"""Git credentials as environment for git, never as text anyone can read.

A token embedded in a URL ends up in ``git remote -v``, error messages and logs; one on a
command line is visible in ``ps``.  Instead, for HTTPS the token becomes an
``http.extraHeader`` passed through git's ``GIT_CONFIG_COUNT``/``KEY``/``VALUE``
environment (git ≥ 2.31), and for SSH a ``GIT_SSH_COMMAND`` that uses the mounted key with
strict host-key checking against the mounted known_hosts.  The values live only in the
environment of the git processes the reconciler starts.
"""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

from .config import GitAuth, read_secret
from .errors import ConfigError


def git_environment(auth: GitAuth) -> dict[str, str]:
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false"}
    if auth.ssh_key_file is not None:
        for path, what in ((auth.ssh_key_file, "sshKeyFile"), (auth.known_hosts_file, "knownHostsFile")):
            if path is None or not Path(path).is_file():
                raise ConfigError(f"repository.auth.{what}: {path} is not a readable file")
        env["GIT_SSH_COMMAND"] = " ".join([
            "ssh", "-i", shlex.quote(str(auth.ssh_key_file)), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={shlex.quote(str(auth.known_hosts_file))}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        ])
        return env
    token = read_secret(auth.token_file, auth.token_env, "repository.auth token")
    if token:
        basic = base64.b64encode(f"{auth.username}:{token}".encode()).decode()
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
    return env


def secrets_of(env: dict[str, str]) -> list[str]:
    """Strings that must never appear in output (for log scrubbing and tests)."""
    value = env.get("GIT_CONFIG_VALUE_0", "")
    out = []
    if value.startswith("Authorization: Basic "):
        encoded = value.split(" ", 2)[2]
        out.append(encoded)
        decoded = base64.b64decode(encoded).decode(errors="replace")
        out.append(decoded.split(":", 1)[1] if ":" in decoded else decoded)
    return out
