"""
Not-authenticated IMAP commands (RFC 3501 6.2): CAPABILITY's list,
STARTTLS, LOGIN and AUTHENTICATE PLAIN (RFC 4616, SASL-IR RFC 4959), and
ID (RFC 2971), over the shared login policy (``gateway.policy``):

- plain-text passwords only under TLS, or from the networks
  ``[auth] plaintext_without_tls`` names (this machine by default;
  ``policy.plaintext``);
  otherwise CAPABILITY shows LOGINDISABLED and no AUTH=PLAIN, and both
  commands answer ``NO [PRIVACYREQUIRED]`` (RFC 3501 6.2.3, RFC 5530 3);
- the PLAIN response is read by ``policy.sasl``;
- the login itself is ``policy.login``'s sequence: a user locked out at
  this address gets ``NO [UNAVAILABLE]`` without a password check, a wrong
  password ``NO [AUTHENTICATIONFAILED]`` after the delay, and one session
  too many for the user ``NO [LIMIT]`` (RFC 5530 3: "an implementation
  limit"; UNAVAILABLE would say a subsystem is down and invite a quick
  retry, which cannot help until the user closes a session);
- ``ID ("x-originating-ip" ...)`` from a trusted front end (``[proxy]
  login_trusted_networks``) before login names the client address the
  limits and the auth log use, as Dovecot does for webmail and proxies.

A mixin of ``gateway.imap.server.IMAPServer``.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.mail import imap4

from gateway.imap import capabilities, errors
from gateway.imap.id_params import IdSyntaxError, parse_id_params
from gateway.imap.arguments import astring, final_astring
from gateway.imap.responses import OK, Continuation, Id, Tagged
from gateway.net.connection import peer_address, under_tls
from gateway.net.tls import start_tls_discarding_buffer
from gateway.policy import authlog, sasl
from gateway.policy.login import BadCredentials, LockedOut, TooManySessions
from gateway.policy.plaintext import plaintext_allowed

# The shared login sequence's refusals, as IMAP answers them.
_REFUSALS = {
    BadCredentials: errors.AuthenticationFailed,
    LockedOut: errors.LockedOut,
    TooManySessions: errors.TooManySessions,
}

_ID_ANSWER = Id(((b"name", b"gateway"), (b"version", b"0.1.0")))


class LoginCommands:
    _originating_ip: str | None = None
    _login_attempt: defer.Deferred | None = None
    # Called once when a logged-in session ends.
    _end_login = None

    # -- what the session may do -----------------------------------------

    @property
    def secure(self) -> bool:
        """Under TLS: an imaps listener, or after STARTTLS."""
        return under_tls(self.transport, self.startedTLS)

    @property
    def peer_ip(self) -> str:
        return peer_address(self.transport)

    @property
    def client_ip(self) -> str:
        """The address limits count and the auth log names."""
        return self._originating_ip or self.peer_ip

    def plaintext_allowed(self) -> bool:
        return plaintext_allowed(self.peer_ip, self.secure, self.config.plaintext_networks)

    def capability_line(self) -> bytes:
        """The CAPABILITY list (``gateway.imap.capabilities``) as this session stands."""
        return capabilities.capability_line(capabilities.CapabilityState(
            authenticated=self.state != "unauth",
            appendlimit=self.config.limits.max_literal_size,
            starttls=self.ctx is not None and self.canStartTLS and not self.secure,
            plaintext=self.plaintext_allowed(),
            compressed=self.compressed,
        ))

    def connectionLost(self, reason):
        # A login queued for its password check leaves the queue.
        if self._login_attempt is not None:
            self._login_attempt.cancel()
        end, self._end_login = self._end_login, None
        if end is not None:
            end()
        super().connectionLost(reason)

    # -- ID (RFC 2971) ---------------------------------------------------

    def do_ID(self, tag, rest):
        try:
            fields = parse_id_params(rest or b"")
        except IdSyntaxError:
            raise errors.bad(b"ID takes a parenthesised list of strings or NIL") from None
        claimed = fields.get("x-originating-ip")
        if self.state == "unauth" and claimed:
            self._originating_ip = self.factory.logins.originating_ip(self.peer_ip, claimed) or self._originating_ip
        self.send(_ID_ANSWER)
        self.run_command(tag, self._done, b"ID completed")

    # -- STARTTLS --------------------------------------------------------

    def do_STARTTLS(self, tag):
        if self.ctx is None or self.secure or not self.canStartTLS:
            raise errors.TlsUnavailable()
        self.send(Tagged(tag, OK, b"Begin TLS negotiation now"))
        # RFC 3501 6.2.1: what the client pipelined in the clear behind
        # STARTTLS is never run (gateway/net/tls.py).
        start_tls_discarding_buffer(self, self.ctx)
        self.startedTLS = True

    # -- LOGIN -----------------------------------------------------------

    def do_LOGIN(self, tag, user, password):
        if not self.plaintext_allowed():
            authlog.login_failed("imap", user, self.client_ip, "plaintext-disallowed")
            raise errors.PrivacyRequired()
        self.run_command(tag, self._login, user, password, b"LOGIN completed")

    async def _login(self, user: bytes, password: bytes, done: bytes):
        attempt = self.factory.logins.login(self.portal, "imap", self.client_ip, user, password, imap4.IAccount)
        self._login_attempt = attempt
        try:
            granted = await attempt
        except defer.CancelledError:
            return done  # the connection is gone; nobody reads the answer
        except tuple(_REFUSALS) as refusal:
            raise _REFUSALS[type(refusal)]() from None
        finally:
            self._login_attempt = None
        if self._gone:
            granted.end()
            return done
        self.account = granted.avatar
        self._end_login = granted.end
        self.state = "auth"
        self.logged_in()
        return b"[CAPABILITY " + self.capability_line() + b"] " + done

    # -- AUTHENTICATE PLAIN (RFC 4616) -----------------------------------

    def do_AUTHENTICATE(self, tag, rest):
        rest = rest or b""
        mechanism, _, initial = rest.strip().partition(b" ")
        if mechanism.upper() != b"PLAIN":
            raise errors.UnsupportedMechanism()
        if not self.plaintext_allowed():
            authlog.login_failed("imap", None, self.client_ip, "plaintext-disallowed")
            raise errors.PrivacyRequired()
        if initial:
            # RFC 4959: SASL-IR.
            self._plain_response(tag, initial)
            return
        self.send(Continuation())
        self.parseState = "pending"
        response = self.pending_literal = defer.Deferred()
        response.addCallback(lambda line: self._plain_response(tag, line))

    def _plain_response(self, tag, encoded: bytes):
        # Answered here, not raised: the continuation line arrives outside
        # the command's dispatch.
        if encoded == sasl.CANCEL:
            # RFC 3501 6.2.2: the client cancelled; BAD says so.
            authlog.login_failed("imap", None, self.client_ip, "cancelled")
            self.fail(tag, errors.AuthenticateCancelled())
            return
        try:
            response = sasl.decode_plain(encoded)
        except sasl.AuthzidMismatch as mismatch:
            authlog.login_failed("imap", mismatch.user, self.client_ip, "authzid-mismatch")
            self.fail(tag, errors.AuthorizationFailed())
            return
        except sasl.SaslError:
            authlog.login_failed("imap", None, self.client_ip, "malformed")
            self.fail(tag, errors.MalformedPlain())
            return
        self.run_command(tag, self._login, response.user.encode("utf-8"), response.password, b"Authenticated")

    unauth_ID = auth_ID = select_ID = (do_ID, imap4.IMAP4Server.arg_line)
    unauth_STARTTLS = (do_STARTTLS,)
    unauth_LOGIN = (do_LOGIN, astring, final_astring)
    unauth_AUTHENTICATE = (do_AUTHENTICATE, imap4.IMAP4Server.arg_line)
