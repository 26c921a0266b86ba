"""The daemon's structured logs: one line per event on stderr, as JSON (`--log-format
json`, for log shippers) or as `time level event key=value…` text. Values are ids, names,
commits and one-line messages; credential values never reach a log."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from loomgit.records import stamp

logger = logging.getLogger("loomgit")


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": stamp(record.created), "level": record.levelname.lower()}
        out["event"] = record.getMessage()
        out.update(getattr(record, "fields", {}))
        return json.dumps(out, default=str, ensure_ascii=False)


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [stamp(record.created), record.levelname.lower(), record.getMessage()]
        for key, value in getattr(record, "fields", {}).items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            parts.append(f"{key}={json.dumps(text) if ' ' in text or not text else text}")
        return " ".join(parts)


def configure(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
