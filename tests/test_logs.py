import io
import json
import os
import poplib
import signal
import subprocess
import time

from twisted.logger import Logger, LogLevel, eventsFromJSONLogFile

from gateway.logs import json_lines_observer, json_observer
from tests.serverproc import BIN, LOOPBACK, ROOT, run_gateway


def emit(observer, level, text, **fields):
    Logger(namespace="gateway.test", observer=observer).emit(level, text, **fields)


def test_one_json_object_per_line_with_readable_fields():
    out = io.StringIO()
    observer = json_lines_observer(out)
    emit(observer, LogLevel.warn, "login failed: protocol={protocol} user={user}", protocol="pop3", user="al\nice")
    emit(observer, LogLevel.info, "second {n}", n=2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["level"] == "warn"
    assert first["text"] == "login failed: protocol=pop3 user=al\nice"
    assert first["protocol"] == "pop3"
    assert first["user"] == "al\nice"
    assert first["log_namespace"] == "gateway.test"
    assert first["time"].endswith("Z") and first["time"][4] == "-" and "T" in first["time"]
    assert json.loads(lines[1])["text"] == "second 2"


def test_failure_text_has_the_traceback():
    out = io.StringIO()
    log = Logger(namespace="gateway.test", observer=json_lines_observer(out))
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("While delivering to {user}", user="bob")
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["level"] == "critical"
    assert event["text"].startswith("While delivering to bob\n")
    assert "ZeroDivisionError" in event["text"]


def test_event_fields_named_like_ours_keep_their_value():
    out = io.StringIO()
    json_lines_observer(out)(
        {"log_format": "took {time}", "log_level": LogLevel.info, "log_time": 0.0, "time": 3, "level": "deep",
         "text": "t"}
    )
    event = json.loads(out.getvalue())
    assert (event["time"], event["level"], event["text"]) == (3, "deep", "t")


def test_lines_read_back_as_twisted_events():
    out = io.StringIO()
    emit(json_lines_observer(out), LogLevel.error, "disk {state}", state="full")
    # eventsFromJSONLogFile reads RS-separated records, or lines without RS.
    events = list(eventsFromJSONLogFile(io.StringIO(out.getvalue()), recordSeparator=""))
    assert len(events) == 1
    assert events[0]["state"] == "full"
    assert events[0]["log_level"] == LogLevel.error


def test_json_observer_writes_to_stdout(capsys):
    emit(json_observer(), LogLevel.info, "to stdout")
    assert json.loads(capsys.readouterr().out)["text"] == "to stdout"


def test_twistd_logger_option_gives_json_lines(tmp_path):
    """A real ``twistd -n --logger gateway.logs.json_observer gateway`` run."""
    data = tmp_path / "data"
    run_gateway(data, "user", "add", "alice", input=b"secret\n")
    (tmp_path / "gateway.toml").write_text("[auth]\nfailure_delay = 0\n")
    stdout_path = tmp_path / "stdout"
    command = [
        str(BIN / "twistd"), "-n", "--pidfile=", "--logger", "gateway.logs.json_observer",
        "gateway", "--data", str(data), "--config", str(tmp_path / "gateway.toml"),
        "--pop3", LOOPBACK, "--imap", "none", "--lmtp", "none",
    ]
    ports_file = data / "run" / "ports.json"
    with open(stdout_path, "wb") as stdout:
        process = subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 30
        while not ports_file.exists():
            assert process.poll() is None, stdout_path.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        port = int(json.loads(ports_file.read_text())["pop3"][0].rsplit(":", 1)[1])
        client = poplib.POP3("127.0.0.1", port, timeout=10)
        client.user("alice")
        try:
            client.pass_("wrong")
        except poplib.error_proto:
            pass
        client.quit()
        client = poplib.POP3("127.0.0.1", port, timeout=10)
        client.user("alice")
        client.pass_("secret")
        client.quit()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = stdout_path.read_text().splitlines()
    assert lines, "no output"
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    (listening,) = [e for e in events if e["text"].startswith("pop3 listening on")]
    assert listening["text"] == f"pop3 listening on 127.0.0.1:{port}"
    assert (listening["level"], listening["protocol"], listening["port"]) == ("info", "pop3", port)
    # The login lines carry the user as a field of their own.
    assert any(e.get("user") == "alice" for e in events)
