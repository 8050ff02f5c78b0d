"""
Structured logs: one JSON object per line on standard output, for journald,
Loki, Elasticsearch and friends::

    twistd -n --logger gateway.logs.json_observer gateway --data /var/lib/gateway

Each object is Twisted's own JSON form of the event (``eventAsJSON``, so
``twisted.logger.eventsFromJSONLogFile`` reads the file back) with three
fields added for people and log shippers: ``time`` (ISO 8601, UTC),
``level`` (``debug`` ... ``critical``) and ``text`` (the formatted message,
with the traceback of a failure).  The event's own fields, such as
``protocol``, ``user``, ``ip`` and ``reason`` of a login line, stay top-level
keys; an event field that happens to be called ``time``, ``level`` or
``text`` keeps its value.

twistd calls the factory with no arguments and then ignores ``--logfile``;
the lines go to the standard output twistd started with, so run it with
``-n`` (systemd collects standard output).
"""

from __future__ import annotations

import datetime
import sys
from typing import IO, Any

from twisted.logger import FileLogObserver, eventAsJSON, eventAsText


def _with_readable_fields(event: dict[str, Any]) -> dict[str, Any]:
    readable = dict(event)
    when = event.get("log_time")
    if when is not None:
        stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        readable.setdefault("time", stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    level = event.get("log_level")
    if level is not None:
        readable.setdefault("level", level.name)
    readable.setdefault("text", eventAsText(event, includeTimestamp=False, includeSystem=False))
    return readable


def json_lines_observer(out: IO[str]) -> FileLogObserver:
    """A log observer writing each event to ``out`` as one line of JSON."""
    return FileLogObserver(out, lambda event: eventAsJSON(_with_readable_fields(event)) + "\n")


def json_observer() -> FileLogObserver:
    """For ``twistd --logger gateway.logs.json_observer``: JSON lines on stdout."""
    # Taken now: twistd then replaces sys.stdout with a logging file, and
    # writing log lines there would log them again.
    return json_lines_observer(sys.stdout)
