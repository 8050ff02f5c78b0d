"""
The main process's end of a worker (gateway/workers.py), without a process:
what it does with the lines a worker writes, and when it passes SIGHUP on.
"""

import subprocess
import sys

from twisted.logger import Logger, eventAsJSON, formatEventAsClassicLogText

import gateway
from gateway.workers import EVENTS_FD, SERVING, WorkerProcess, worker_command, worker_environment


class Transport:
    def __init__(self):
        self.signals = []
        self.pid = 4242

    def signalProcess(self, name):
        self.signals.append(name)


def event_line(text, **fields) -> bytes:
    events = []
    Logger(namespace="gateway.auth", observer=events.append).info(text, **fields)
    return eventAsJSON(events[0]).encode() + b"\n"


def worker(index=2):
    published = []
    process = WorkerProcess(index, publish=published.append)
    process.makeConnection(Transport())
    return process, published


def test_a_workers_events_are_logged_as_the_main_process_logs_them_marked_with_the_worker():
    process, published = worker()
    line = event_line("login ok: user={user}", user="alice")
    # Split anywhere: a line is taken once whole.
    process.childDataReceived(EVENTS_FD, line[:10])
    assert published == []
    process.childDataReceived(EVENTS_FD, line[10:])
    (event,) = published
    assert event["worker"] == 2
    text = formatEventAsClassicLogText(event)
    assert "[worker 2,gateway.auth#info] login ok: user=alice" in text


def test_sighup_waits_for_the_worker_to_serve():
    process, published = worker()
    process.hangup()
    # Before its handler is in place a SIGHUP would end the worker.
    assert process.transport.signals == []
    process.childDataReceived(EVENTS_FD, event_line("Worker 2 serving", **{SERVING: True}))
    assert process.transport.signals == ["HUP"]
    process.hangup()
    assert process.transport.signals == ["HUP", "HUP"]


def test_what_a_worker_writes_outside_its_log_is_logged():
    from twisted.logger import globalLogPublisher

    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        process, _ = worker()
        process.childDataReceived(2, b"Traceback (most recent call last):\nboom\n")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    texts = [formatEventAsClassicLogText(event) for event in seen]
    assert any("Worker 2: Traceback (most recent call last):" in text for text in texts)
    assert any("Worker 2: boom" in text for text in texts)


def test_a_worker_runs_the_gateway_of_the_main_process_whatever_its_working_directory_holds(tmp_path):
    # Another checkout where the node was started from: "python -m" alone
    # would import its gateway/ in the workers.
    decoy = tmp_path / "gateway"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    command = worker_command(sys.executable)
    assert command[-2:] == ["-m", "gateway.worker"]
    # The same interpreter flags, asking which gateway it would import.
    probe = [*command[:-2], "-c", "import gateway, sys; sys.stdout.write(gateway.__file__)"]
    found = subprocess.run(probe, cwd=tmp_path, env=worker_environment(), capture_output=True, check=True)
    assert found.stdout.decode() == gateway.__file__
