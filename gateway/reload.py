"""
SIGHUP: read the config and the users file again without dropping a session.

What a reload can change, and when it is seen:

- ``[auth]``, ``[pop3]`` (but ``uidl_format``), ``[imap]`` and ``[lmtp]``:
  the POP3, IMAP and LMTP factories and the realm read the config through
  one ``LiveConfig``, so the next connection or login sees the new values;
  sessions already open keep the config they started with
  (``gateway.policy.session.session_config``).
- ``[limits]`` and ``auth.failure_delay``: ``apply`` in ``service.py``
  re-tunes the shared limiters (connections in all and per IP, sessions per
  user, failed logins per IP and their delay) for the next connection or
  login; what a session reads from the config when it starts (prelogin
  timeout, line and literal sizes, bad commands) applies to new sessions.
- ``pop3.uidl_format`` and ``pop3.hidden_flag`` are refused: the first
  changes every UIDL, the second which messages POP3 lists, and either way
  POP3 clients download old mail again.  That must be a deliberate restart,
  never the side effect of a reload.
- ``hostname``, ``[listeners]``, ``[tls]`` (file names; the certificate
  itself reloads on SIGHUP in ``gateway/net/tls.py``), ``[proxy]`` and
  ``[store]`` (the store is opened once) need a restart: they are logged
  as such and the running values stay.
- ``[networks]`` applies where the names are read at each connection or
  login (``[auth]``, ``[pop3]``/``[imap] networks``, ``[limits]``);
  listeners and ``[proxy]`` keep the networks they started with.  A file
  whose ``[networks]`` no longer names what a running restart-only option
  uses is not taken: a restart it is.

A config that does not load is logged with its reason and the running one
stays, whole.

A node of several processes (``[server] workers``, ``gateway/workers.py``)
reloads in each: the main process passes SIGHUP on to every worker, which
reads the file itself.  The failed-login throttle and the sessions per user
are the main process's (``gateway/policy/shared.py``), so its reload
retunes them for the node.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.logger import Logger

from gateway.net import metrics
from gateway.auth import UsersFileError
from gateway.config import Config, ConfigError
from gateway.options import LIVE, RESTART, ConfigProblem, reload_rules

log = Logger()

# What a reload does to each option, from the declarations in gateway/config.py.
RULES = reload_rules(Config)


class LiveConfig:
    """
    The config in force, for the long-lived parts of the server (factories,
    realm): every attribute read goes to the current ``Config``, which a
    reload swaps whole, so one reader never mixes two versions of a section.
    """

    def __init__(self, config: Config) -> None:
        self.current = config

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the options that differ between two config values."""
    if not attrs.has(type(old)):
        return [prefix] if old != new else []
    names = []
    for field in attrs.fields(type(old)):
        if not field.init:
            continue
        dotted = f"{prefix}.{field.name}" if prefix else field.name
        names += _differences(getattr(old, field.name), getattr(new, field.name), dotted)
    return names


def _with_option(config: Any, dotted: str, value: Any) -> Any:
    """``config`` with the option at ``dotted`` set to ``value``."""
    name, _, rest = dotted.partition(".")
    if not rest:
        return attrs.evolve(config, **{name: value})
    return attrs.evolve(config, **{name: _with_option(getattr(config, name), rest, value)})


def _option(config: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


@attrs.frozen
class ReloadPlan:
    """What a reload does: the config to run, and what it applied or not."""

    config: Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]
    refused: tuple[str, ...]


def plan_reload(running: Config, loaded: Config) -> ReloadPlan:
    """
    The config to run after ``loaded`` was read while ``running`` is in
    force: restart-only and refused options keep their running values;
    everything else is taken.
    """
    changed = _differences(running, loaded)
    applied = tuple(name for name in changed if RULES[name] == LIVE)
    needs_restart = tuple(name for name in changed if RULES[name] == RESTART)
    refused = tuple(name for name in changed if RULES[name] not in (LIVE, RESTART))
    config = loaded
    for name in (*needs_restart, *refused):
        config = _with_option(config, name, _option(running, name))
    return ReloadPlan(config, applied, needs_restart, refused)


class ConfigReloader(Service):
    """
    Reload on SIGHUP: ``read_config()`` gives the config as the file says now
    (or raises ConfigError), ``apply(config)`` puts it in force where
    ``LiveConfig`` does not reach (the limiters).  The users file is
    read again too.

    Like ``tls.CertificateReloader``, the handler only schedules the work in
    the reactor thread and calls the handler installed before it, so both
    reload on one signal, in whichever order they started.
    """

    def __init__(
        self,
        live: LiveConfig,
        read_config: Callable[[], Config],
        apply: Callable[[Config], None],
        users,
        reactor,
    ) -> None:
        self.live = live
        self.read_config = read_config
        self.apply = apply
        self.users = users
        self.reactor = reactor
        self._previous_handler = None

    def startService(self) -> None:
        super().startService()
        self._previous_handler = signal.signal(signal.SIGHUP, self._on_hangup)

    def stopService(self):
        if signal.getsignal(signal.SIGHUP) == self._on_hangup:
            signal.signal(signal.SIGHUP, self._previous_handler)
        return super().stopService()

    def _on_hangup(self, signum, frame) -> None:
        self.reactor.callFromThread(self.reload, "SIGHUP")
        if callable(self._previous_handler):
            self._previous_handler(signum, frame)

    def reload(self, why: str = "asked") -> bool:
        """Reload config and users; True when the config file was usable."""
        self._reload_users(why)
        try:
            loaded = self.read_config()
            # A new file may name a network that an option a restart
            # changes still needs from the running [networks].
            plan = plan_reload(self.live.current, loaded)
        except (ConfigError, ConfigProblem) as e:
            log.error("Config not reloaded ({why}), keeping the running one: {error}", why=why, error=str(e))
            metrics.record_config_reload(False)
            return False
        for name in plan.refused:
            log.error(
                "Config reload ({why}): {option} not changed: {danger}, and POP3 clients would download "
                "old mail again; change it with a restart if that is intended",
                why=why,
                option=name,
                danger=RULES[name],
            )
        for name in plan.needs_restart:
            log.warn("Config reload ({why}): {option} changed, needs a restart to take effect", why=why, option=name)
        self.apply(plan.config)
        self.live.current = plan.config
        metrics.record_config_reload(True)
        log.info(
            "Config reloaded ({why}): {changes}",
            why=why,
            changes=", ".join(plan.applied) if plan.applied else "nothing changed that applies live",
            applied=list(plan.applied),
        )
        return True

    def _reload_users(self, why: str) -> None:
        try:
            self.users.load()
        except UsersFileError as e:
            log.error("Users file not reloaded ({why}), keeping the previous users: {error}", why=why, error=str(e))
        else:
            log.info("Users file reloaded ({why})", why=why)
