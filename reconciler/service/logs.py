"""Structured logs: one line per event, with the execution, target, run and revision.

Operators grep and ship these lines, so every record carries its context as fields
(``extra={...}``) rather than prose, and the JSON form is one object per line.  Nothing
secret is ever passed to a logger: URLs are redacted before they get here, and the
formatter drops any field whose name suggests a credential as a last line of defence.

Messages and fields quote repository-controlled text (file names, execution names, Git
output), and these lines end up in terminals and CI logs, so neither form lets such text
act on its reader: the text form escapes control, bidi and line-separator characters and
never starts a line a GitHub Actions runner would take as a workflow command
(:mod:`reconciler.safetext`); the JSON form escapes them inside its strings, where they
decode to the original value.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from reconciler.safetext import clean, json_safe, safe_line

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRET_WORDS = ("token", "password", "secret", "credential", "authorization")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and not any(w in k.lower() for w in _SECRET_WORDS)}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json_safe(json.dumps(data, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={clean(v)}" for k, v in _fields(record).items())
        base = f"{record.levelname.lower():7} {record.name}: {clean(record.getMessage())}"
        return safe_line(f"{base} {fields}" if fields else base)


def setup(level: int = logging.INFO, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "git", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
