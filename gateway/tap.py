"""
twistd entry point: ``twistd -n gateway --data DIR [--config FILE] [--pop3 EP]
[--imap EP] ...``, one option per ``[listeners]`` entry of the config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.python import usage

from gateway.config import ListenersConfig
from gateway.options import names

LISTENERS = names(ListenersConfig)


class Options(usage.Options):
    synopsis = "[--data DIR] [--config FILE] " + " ".join(f"[--{name} EP]" for name in LISTENERS)
    longdesc = (
        "Serve POP3, IMAP and LMTP over one mail store. EP is a Twisted server "
        "endpoint string such as tcp:1110:interface=127.0.0.1; 'none' disables "
        "that protocol. Listeners not given come from the config file."
    )
    optParameters = [
        ["data", "d", "data", "Data directory: store, users file, generated gateway.toml."],
        ["config", "c", None, "Config file (default: DATA/gateway.toml, created when absent)."],
        *([name, None, None, f"Endpoint of the {name} listener, replacing [listeners] {name}."] for name in LISTENERS),
    ]

    def listener_overrides(self) -> dict[str, list[str]]:
        return {
            protocol: ([] if self[protocol].lower() == "none" else [self[protocol]])
            for protocol in LISTENERS
            if self[protocol] is not None
        }


def makeService(options: Options):
    from twisted.internet import reactor

    from gateway.config import ConfigError, command_line_listeners, load
    from gateway.heap import settle
    from gateway.privileges import PrivilegeError, hand_over_data_dir
    from gateway.service import StartupError, load_config_text, make_service, prepare_data_dir

    data_dir = Path(options["data"])
    try:
        prepare_data_dir(data_dir)
        config_path = Path(options["config"]) if options["config"] else None
        overrides = command_line_listeners(options.listener_overrides())
        config, text = load_config_text(data_dir, config_path)
        config = config.with_listeners(**overrides)

        def read_config():
            # SIGHUP: the same file, the same command-line listeners.
            return load(config_path or data_dir / "gateway.toml").with_listeners(**overrides)

        service = make_service(data_dir, config, reactor, read_config)
        if config.server.workers > 1:
            from gateway.workers import WorkerPlan, Workers

            # Last, so started after twistd drops privileges and stopped first.
            plan = WorkerPlan(data_dir, config_path or data_dir / "gateway.toml", text, overrides, service.serving,
                              service.loads, service.node_metrics)
            Workers(config.server.workers, plan, reactor, service.logins).setServiceParent(service)
        # On the first turn of the loop: after twistd has forked and
        # every service has started (callWhenRunning calls made later).
        reactor.callWhenRunning(reactor.callLater, 0, settle)
        # twistd switches to --uid/--gid after this returns: hand it the files.
        twistd_options = getattr(options, "parent", None) or {}
        try:
            hand_over_data_dir(data_dir, twistd_options.get("uid"), twistd_options.get("gid"))
        except PrivilegeError:
            service.close_listeners()
            raise
        return service
    except (StartupError, PrivilegeError, ConfigError) as e:
        # twistd would print a traceback; an operator needs one line.
        print(f"gateway: {e}", file=sys.stderr)
        raise SystemExit(1) from None
