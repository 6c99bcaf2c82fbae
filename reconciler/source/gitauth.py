"""Git credentials as environment for git, never as text anyone can read.

A token embedded in a URL ends up in ``git remote -v``, error messages and logs; one on a
command line is visible in ``ps``.  Instead, for HTTPS the token becomes an
``http.extraHeader`` passed through git's ``GIT_CONFIG_COUNT``/``KEY``/``VALUE``
environment (git ≥ 2.31), and for SSH a ``GIT_SSH_COMMAND`` that uses the mounted key with
strict host-key checking against the mounted known_hosts.  The values live only in the
environment of the git processes the reconciler starts.

The credentials' settings (``repository.auth``: :class:`GitAuth`) and :func:`read_secret`,
which reads any mounted Secret the configuration names, live here with the code that uses
them, so that starting git needs nothing from the service's configuration module.
"""

from __future__ import annotations

import base64
import os
import shlex
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from reconciler.errors import ConfigError


class GitAuth(BaseModel):
    """``repository.auth``: where the Git credentials are (files or variables, never values)."""

    # the configuration's sections all read this way (see config_model._Section)
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    token_file: Path | None = Field(None, description="File holding an HTTPS token (a mounted Secret).")
    token_env: str | None = Field(None, description="Environment variable holding an HTTPS token.")
    username: str = Field("x-access-token", description="HTTPS user name sent with the token.")
    ssh_key_file: Path | None = Field(None, description="Private SSH key file (a mounted Secret).")
    known_hosts_file: Path | None = Field(None, description="known_hosts for SSH; required with sshKeyFile.")

    @model_validator(mode="after")
    def _consistent(self) -> GitAuth:
        if self.ssh_key_file and not self.known_hosts_file:
            raise ValueError("sshKeyFile needs knownHostsFile: host keys are always verified")
        if self.ssh_key_file and (self.token_file or self.token_env):
            raise ValueError("choose one of sshKeyFile or tokenFile/tokenEnv")
        return self


def read_secret(file: Path | None, env: str | None, what: str) -> str | None:
    """A secret's value from its file or variable; ConfigError if configured but missing."""
    if file is not None:
        try:
            value = file.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{what}: cannot read {file}: {e.strerror}") from e
        if not value:
            raise ConfigError(f"{what}: {file} is empty")
        return value
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return value
    return None


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
