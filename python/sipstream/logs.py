"""Logging: ``log_format=json`` writes one JSON object per line, with the
call id and stream name of the call the line is about. Both come from
context variables set in the call's task (and inherited by the tasks it
starts), so code that logs needs not pass them along."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sipstream_call_id", default=None)
STREAM: contextvars.ContextVar[str | None] = contextvars.ContextVar("sipstream_stream", default=None)


def set_call_context(call_id: str, stream: str) -> None:
    """Tag every log line of the current task (and of the tasks it starts)."""
    CALL_ID.set(call_id)
    STREAM.set(stream)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "call_id", "stream", "exception"}``;
    control characters in messages are escaped by JSON, so a field cannot
    forge a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or CALL_ID.get()
        stream = getattr(record, "stream", None) or STREAM.get()
        if call_id:
            entry["call_id"] = call_id
        if stream:
            entry["stream"] = stream
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aioice").setLevel(logging.WARNING)
