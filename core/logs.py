"""Logging: one JSON object per line (or readable console lines), reference IDs, secret masking.

Every failure shown to a user carries a reference ID that is also in the log line, so an
admin can find what happened. Known secret values are masked in every record as a last line
of defence; the first is that secrets are ``SecretStr`` and never formatted into messages.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from collections.abc import Iterable
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"


def new_reference() -> str:
    """A short, readable ID for one failure: ``SB-`` and 8 unambiguous characters."""
    return "SB-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} " \
               f"{record.name}: {record.getMessage()}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class SecretMask(logging.Filter):
    """Replaces known secret values wherever they appear in a formatted record."""

    def __init__(self, values: Iterable[str]) -> None:
        super().__init__()
        self.values = sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.values:
            return True
        message = record.getMessage()
        masked = self._mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self._mask(value))
        return True

    def _mask(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text


def configure(*, fmt: str, level: int = logging.INFO, secrets_to_mask: Iterable[str] = ()) -> None:
    """Set up the root logger once, at process start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(SecretMask(secrets_to_mask))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx2", "httpcore2", "openai", "aiohttp.access", "discord", "slack_bolt", "slack_sdk"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
