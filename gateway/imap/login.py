"""
Not-authenticated IMAP commands (RFC 3501 6.2): CAPABILITY's list,
STARTTLS, LOGIN and AUTHENTICATE PLAIN (RFC 4616, SASL-IR RFC 4959), with
the login policy of issue 4:

- plain-text passwords only under TLS, on loopback, or when
  ``[auth] plaintext_without_tls`` says so; otherwise CAPABILITY shows
  LOGINDISABLED and no AUTH=PLAIN, and both commands answer
  ``NO [PRIVACYREQUIRED]`` (RFC 3501 6.2.3, RFC 5530 3);
- failed logins per client address: the answer to a failure waits the
  larger of ``[auth] failure_delay`` and the tracker's growing delay, and an
  address with ``failed_logins_per_ip`` failures in the window gets
  ``NO [UNAVAILABLE]`` without its password being checked;
- at most ``max_connections_per_user`` sessions per user: the next login
  gets ``NO [LIMIT]`` (RFC 5530 3: "an implementation limit"; UNAVAILABLE
  would say a subsystem is down and invite a quick retry, which cannot help
  until the user closes a session);
- every attempt is logged by ``gateway.policy.authlog`` (never the password).

A mixin of ``gateway.imap.server.IMAPServer``.
"""

from __future__ import annotations

import base64
import binascii

from twisted.cred import credentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, task
from twisted.internet.interfaces import ISSLTransport
from twisted.mail import imap4

from gateway.policy import authlog
from gateway.imap import policy
from gateway.imap.errors import CommandError
from gateway.imap.mailboxes import astring, final_astring
from gateway.policy.limits import normalise_ip
from gateway.net.tls import start_tls_discarding_buffer

CAPABILITIES = b"IMAP4rev1 SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE CHILDREN SPECIAL-USE UNSELECT CONDSTORE QRESYNC"

PRIVACY_REQUIRED = b"[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
_AUTHENTICATION_FAILED = b"[AUTHENTICATIONFAILED] Authentication failed"
_BLOCKED = b"[UNAVAILABLE] Too many failed logins from your address; try again later"
_USER_LIMIT = b"[LIMIT] Too many connections for this user"


class LoginCommands:
    # -- what the session may do -----------------------------------------

    @property
    def secure(self) -> bool:
        """Under TLS: an imaps listener, or after STARTTLS."""
        return self.startedTLS or ISSLTransport.providedBy(self.transport)

    @property
    def client_ip(self) -> str:
        host = getattr(self.transport.getPeer(), "host", None)
        return normalise_ip(host) if isinstance(host, str) else "local"

    def plaintext_allowed(self) -> bool:
        host = getattr(self.transport.getHost(), "host", None)
        return policy.plaintext_allowed(host, self.secure, self.config.auth.plaintext_without_tls)

    def capability_line(self) -> bytes:
        """
        Before login, LITERAL- (RFC 7888 5): an unauthenticated client has no
        business sending big literals unasked; after it, LITERAL+ up to
        APPENDLIMIT (RFC 7889).
        """
        if self.state != "unauth":
            return CAPABILITIES + b" LITERAL+ APPENDLIMIT=%d" % self.config.limits.max_literal_size
        line = CAPABILITIES + b" LITERAL- APPENDLIMIT=%d" % self.config.limits.max_literal_size
        if self.ctx is not None and self.canStartTLS and not self.secure:
            line += b" STARTTLS"
        return line + (b" AUTH=PLAIN" if self.plaintext_allowed() else b" LOGINDISABLED")

    # -- STARTTLS --------------------------------------------------------

    def do_STARTTLS(self, tag):
        if self.ctx is None or self.secure or not self.canStartTLS:
            self.sendLine(tag + b" NO [CANNOT] TLS not available")
            return
        self.sendLine(tag + b" OK Begin TLS negotiation now")
        # RFC 3501 6.2.1: what the client pipelined in the clear behind
        # STARTTLS is never run (gateway/net/tls.py).
        start_tls_discarding_buffer(self, self.ctx)
        self.startedTLS = True

    # -- LOGIN -----------------------------------------------------------

    def do_LOGIN(self, tag, user, password):
        if not self.plaintext_allowed():
            authlog.login_failed("imap", user, self.client_ip, "plaintext-disallowed")
            self.sendLine(tag + b" NO " + PRIVACY_REQUIRED)
            return
        self.run_command(tag, self._login, user, password, b"LOGIN completed")

    async def _login(self, user: bytes, password: bytes, done: bytes):
        ip = self.client_ip
        tracker = self.factory.failed_logins
        if tracker.blocked(ip):
            authlog.login_failed("imap", user, ip, "blocked")
            await task.deferLater(self.reactor, self.config.auth.failure_delay, lambda: None)
            raise CommandError(_BLOCKED)
        try:
            _, avatar, logout = await self.portal.login(
                credentials.UsernamePassword(user, password), None, imap4.IAccount
            )
        except UnauthorizedLogin:
            delay = max(self.config.auth.failure_delay, tracker.record_failure(ip))
            authlog.login_failed("imap", user, ip, "bad-credentials")
            await task.deferLater(self.reactor, delay, lambda: None)
            raise CommandError(_AUTHENTICATION_FAILED) from None
        if self._gone:
            logout()
            return done
        if not self.factory.login_limiter.try_acquire(avatar.user):
            logout()
            authlog.login_failed("imap", user, ip, "too-many-sessions")
            raise CommandError(_USER_LIMIT)
        self._counted_user = avatar.user
        authlog.login_succeeded("imap", user, ip)
        self.account = avatar
        self._onLogout = logout
        self.state = "auth"
        self.logged_in()
        return b"[CAPABILITY " + self.capability_line() + b"] " + done

    # -- AUTHENTICATE PLAIN (RFC 4616) -----------------------------------

    def do_AUTHENTICATE(self, tag, rest):
        rest = rest or b""
        mechanism, _, initial = rest.strip().partition(b" ")
        if mechanism.upper() != b"PLAIN":
            self.sendLine(tag + b" NO [CANNOT] Unsupported authentication mechanism")
            return
        if not self.plaintext_allowed():
            authlog.login_failed("imap", None, self.client_ip, "plaintext-disallowed")
            self.sendLine(tag + b" NO " + PRIVACY_REQUIRED)
            return
        if initial:
            # RFC 4959: SASL-IR; "=" is an empty initial response.
            self._plain_response(tag, b"" if initial == b"=" else initial)
            return
        self.sendLine(b"+ ")
        self.parseState = "pending"
        self._pendingLiteral = defer.Deferred()
        self._pendingLiteral.addCallback(lambda line: self._plain_response(tag, line))

    def _plain_response(self, tag, encoded: bytes):
        if encoded.strip() == b"*":
            # RFC 3501 6.2.2: the client cancelled; BAD says so.
            authlog.login_failed("imap", None, self.client_ip, "cancelled")
            self.sendLine(tag + b" BAD AUTHENTICATE cancelled")
            return
        try:
            message = base64.b64decode(encoded.strip(), validate=True)
            authzid, authcid, password = message.split(b"\0")
        except (binascii.Error, ValueError):
            authlog.login_failed("imap", None, self.client_ip, "malformed")
            self.sendLine(tag + b" BAD Malformed PLAIN response")
            return
        if authzid and authzid != authcid:
            # PLAINCredentials would drop the authzid and log in as authcid;
            # acting as another user is not something we offer.
            authlog.login_failed("imap", authcid, self.client_ip, "authzid-mismatch")
            self.sendLine(tag + b" NO [AUTHORIZATIONFAILED] Cannot act as another user")
            return
        self.run_command(tag, self._login, authcid, password, b"Authenticated")

    unauth_STARTTLS = (do_STARTTLS,)
    unauth_LOGIN = (do_LOGIN, astring, final_astring)
    unauth_AUTHENTICATE = (do_AUTHENTICATE, imap4.IMAP4Server.arg_line)
