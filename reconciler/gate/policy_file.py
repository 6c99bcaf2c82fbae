"""Reading a policy file: the one piece of I/O of the gate's rules, kept out of
``policy`` so that module stays pure (data in, decisions out)."""

from __future__ import annotations

from pathlib import Path

import yaml

from reconciler.errors import ConfigError
from reconciler.gate.policy import Policy, parse_policy


def load_policy(path: Path) -> Policy:
    """Read a policy file: the policy mapping itself, or a reconciler configuration file
    whose ``policy`` section is used (so CI can point at the service's own ConfigMap data)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from e
    if isinstance(data, dict) and "policy" in data:
        return parse_policy(data["policy"], str(path), prefix="policy")
    return parse_policy(data, str(path))
