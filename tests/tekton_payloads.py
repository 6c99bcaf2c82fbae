"""Realistic Tekton/Job status payloads (tests/payloads/) and the run context they describe."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from reconciler.observe.vocabulary import RunContext

PAYLOADS = Path(__file__).parent / "payloads"
CTX = RunContext(workflow_id="increase-memory-limit", workflow_version="1.2.0",
                 target_resource="payments/Deployment/payment-api",
                 execution_name="oom-payment-api-2026-11-21", engine="tekton")
JOB_CTX = RunContext(**{**CTX.__dict__, "engine": "job"})


def load(name: str) -> dict[str, list[dict[str, Any]]]:
    """A `v1 List` payload file, grouped by kind."""
    raw = (PAYLOADS / name).read_text()
    doc = json.loads(raw) if name.endswith(".json") else yaml.safe_load(raw)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in doc["items"]:
        out[item["kind"]].append(item)
    return out
