"""
twistd entry point: ``twistd -n gateway --data DIR [--config FILE] [--pop3 EP]
[--imap EP] [--lmtp EP] [--pop3s EP] [--imaps EP] [--metrics EP]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.python import usage


class Options(usage.Options):
    synopsis = (
        "[--data DIR] [--config FILE] [--pop3 EP] [--imap EP] [--lmtp EP] [--pop3s EP] [--imaps EP] [--metrics EP]"
    )
    longdesc = (
        "Serve POP3, IMAP and LMTP over one mail store. EP is a Twisted server "
        "endpoint string such as tcp:1110:interface=127.0.0.1; 'none' disables "
        "that protocol. Listeners not given come from the config file."
    )
    optParameters = [
        ["data", "d", "data", "Data directory: store, users file, generated gateway.toml."],
        ["config", "c", None, "Config file (default: DATA/gateway.toml, created when absent)."],
        ["pop3", None, None, "POP3 listener endpoint, overriding the config."],
        ["imap", None, None, "IMAP listener endpoint, overriding the config."],
        ["lmtp", None, None, "LMTP listener endpoint, overriding the config."],
        ["pop3s", None, None, "POP3 over implicit TLS: a plain tcp: endpoint, overriding the config."],
        ["imaps", None, None, "IMAP over implicit TLS: a plain tcp: endpoint, overriding the config."],
        ["metrics", None, None, "Prometheus metrics (HTTP, /metrics) endpoint, overriding the config."],
    ]

    def listener_overrides(self) -> dict[str, list[str]]:
        return {
            protocol: ([] if self[protocol].lower() == "none" else [self[protocol]])
            for protocol in ("pop3", "imap", "lmtp", "pop3s", "imaps", "metrics")
            if self[protocol] is not None
        }


def makeService(options: Options):
    from twisted.internet import reactor

    from gateway.config import ConfigError, command_line_listeners, load
    from gateway.privileges import PrivilegeError, hand_over_data_dir
    from gateway.service import StartupError, load_config, make_service, prepare_data_dir

    data_dir = Path(options["data"])
    try:
        prepare_data_dir(data_dir)
        config_path = Path(options["config"]) if options["config"] else None
        overrides = command_line_listeners(options.listener_overrides())
        config = load_config(data_dir, config_path).with_listeners(**overrides)

        def read_config():
            # SIGHUP: the same file, the same command-line listeners.
            return load(config_path or data_dir / "gateway.toml").with_listeners(**overrides)

        service = make_service(data_dir, config, reactor, read_config)
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
