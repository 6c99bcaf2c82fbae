"""The service's configuration: one YAML file, then ``RECONCILER_*`` environment, then flags.

The settings themselves are :mod:`reconciler.service.config_model`; this module reads them: the
layers merged, validated at start with errors that name the setting and where the file
sets it (``repository.url: field required``), and printable by ``reconciler config check``
with secrets shown only as "set"/"not set".  Credentials are never *values* in the file:
it names the files or environment variables that hold them (mounted Secrets), so the
ConfigMap can be shown to anyone.

Environment variables use ``RECONCILER_`` plus the path with ``__`` between levels, e.g.
``RECONCILER_REPOSITORY__URL``, ``RECONCILER_EXECUTION__COOLDOWN``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from reconciler.declare.schema_errors import field_names, model_at
from reconciler.declare.yamldoc import YamlDocument, clip, load_documents
from reconciler.errors import ConfigError
from reconciler.service.config_model import Config


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_layer(environ: dict[str, str]) -> dict[str, Any]:
    """RECONCILER_A__B_C=v → {"a": {"b_c": v}} (snake case keys; camelCase also accepted)."""
    layer: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith("RECONCILER_") or "__" not in key:
            continue
        parts = [p.lower() for p in key[len("RECONCILER_"):].split("__")]
        node = layer
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return layer


class ConfigUnreadable(ConfigError):
    """The file cannot be read or parsed at all (``config check`` exits 2, not 1)."""


def load_config(path: Path | None, *, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """File, then environment, then flag overrides; ConfigError naming each bad setting."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigUnreadable(f"{path}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigUnreadable(f"{path}: the configuration must be a mapping")
        data = loaded or {}
    data = _deep_merge(_to_snake(data), _env_layer(dict(os.environ if environ is None else environ)))
    data = _deep_merge(data, overrides or {})
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        doc = _document(path)
        lines = []
        for err in e.errors(include_url=False):
            loc = tuple(err["loc"])
            where = ".".join(to_camel(str(p)) if isinstance(p, str) else f"[{p}]" for p in loc)
            message = err["msg"]
            if err["type"] == "extra_forbidden" and loc:
                message = _unknown_field(loc)
            position = _position(doc, loc) if doc is not None else ""
            lines.append(f"{position}{where or '(config)'}: {message}")
        raise ConfigError(f"invalid configuration{f' in {path}' if path else ''}:\n  " + "\n  ".join(lines)) from e


def _document(path: Path | None) -> YamlDocument | None:
    """The configuration file's node tree, to say where a bad setting is (None: no file)."""
    if path is None:
        return None
    try:
        docs, _ = load_documents(path.read_bytes(), str(path))
    except OSError:
        return None
    return docs[0] if docs else None


def _position(doc: YamlDocument, loc: tuple[Any, ...]) -> str:
    """``file:line:col: `` of the setting at ``loc`` (pydantic's snake-case path; the file may
    spell each key camelCase or snake_case), or "" when the file does not hold it (an
    environment variable or a flag set it)."""
    probe: Any = doc.data
    path: list[str | int] = []
    for part in loc:
        if isinstance(probe, dict):
            key = next((k for k in probe if to_snake_name(str(k)) == to_snake_name(str(part))), None)
            if key is None:
                return ""
            path.append(key)
            probe = probe[key]
        elif isinstance(probe, list) and isinstance(part, int) and part < len(probe):
            path.append(part)
            probe = probe[part]
        else:
            return ""
    line, column = doc.position(tuple(path))
    return f"{doc.file}:{line}:{column}: " if line is not None else ""


def _unknown_field(loc: tuple[Any, ...]) -> str:
    """An unknown setting, with "did you mean" from the section's own names (as for executions)."""
    field = to_camel(str(loc[-1]))
    parent = model_at(Config, loc[:-1])
    allowed = field_names(parent) if parent else []
    hint = difflib.get_close_matches(field, allowed, n=1, cutoff=0.6)
    if hint:
        return f"unknown field {clip(field, 100)!r} (did you mean {hint[0]!r}?)"
    return f"unknown field {clip(field, 100)!r}" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")


def _to_snake(data: Any) -> Any:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            snake = "".join("_" + c.lower() if c.isupper() else c for c in str(key))
            out[snake] = _to_snake(value)
        return out
    return data


def describe(config: Config) -> dict[str, Any]:
    """The effective configuration for people: secrets replaced by set/not set."""
    data = config.model_dump(by_alias=True, mode="json")
    auth = data["repository"]["auth"]
    auth["tokenEnv"] = _presence_env(config.repository.auth.token_env)
    data["server"]["webhook"]["secretEnv"] = _presence_env(config.server.webhook.secret_env)
    from reconciler.source.gitwords import redact_url

    data["repository"]["url"] = redact_url(config.repository.url)
    notifications = data["notifications"]
    for key, sinks in (("commitStatuses", config.notifications.commit_statuses),
                       ("webhooks", config.notifications.webhooks), ("slack", config.notifications.slack)):
        for shown, sink in zip(notifications[key], sinks, strict=True):
            for env_key in ("tokenEnv", "secretEnv", "webhookUrlEnv"):
                if env_key in shown:
                    shown[env_key] = _presence_env(getattr(sink, to_snake_name(env_key)))
            if shown.get("url"):
                shown["url"] = redact_url(shown["url"])
    return data


def to_snake_name(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def _presence_env(name: str | None) -> str | None:
    if not name:
        return None
    return f"{name} ({'set' if os.environ.get(name) else 'NOT SET'})"
