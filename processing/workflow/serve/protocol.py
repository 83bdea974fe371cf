"""serve.py's HTTP protocol: uvicorn's h11 protocol with deadlines for idle clients and a cap on
open connections.

uvicorn closes a keep-alive connection that stays silent after a response, but not one that sent
half a request: a client that opens a connection and sends ``GET /health HTTP/1.1\\r\\nHost: x\\r\\n``
and nothing more holds a file descriptor forever, and some thousands of them stop the server
(nginx's client_header_timeout and client_body_timeout, and its worker_connections, exist for
this). Here every connection has one deadline at a time:

* waiting for a request's headers (from the connection, or from the previous response): the
  headers must be complete within ``read_timeout_s`` (an absolute deadline: sending a byte every
  few seconds does not extend it);
* reading a request's body: each part must arrive within ``read_timeout_s`` of the previous one;
* while the application works on a complete request there is none (the answer's time is ours).

A connection past its deadline is closed (an application waiting for the rest of the body then
sees the client gone). Beyond ``max_connections`` open connections a new one is closed at once.
"""

from __future__ import annotations

import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

#: How often, at most, the log says that connections were closed (a flood must not flood the log).
LOG_EVERY_S = 10.0


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with read deadlines and a connection cap (set by :func:`guarded_protocol`)."""

    read_timeout_s: float = 15.0
    max_connections: int = 512
    _closed_counts = {"idle": 0, "over the connection cap": 0}
    _last_log = 0.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = None
        self._header_deadline_armed = False
        if len(self.connections) > self.max_connections:
            self._close("over the connection cap")
            return
        self._arm_header_deadline()

    def connection_lost(self, exc) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._header_deadline_armed = False  # the next request's headers get a deadline of their own
        self._follow_state()

    # ---- deadlines ---------------------------------------------------------------------------

    def _follow_state(self) -> None:
        if self.transport.is_closing():
            self._cancel_deadline()
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # waiting for (the rest of) a request's headers
            self._arm_header_deadline()
        elif state is h11.SEND_BODY:  # each part of the body within the timeout of the previous one
            self._header_deadline_armed = False
            self._arm(self.read_timeout_s)
        else:  # the request is complete: the application answers
            self._header_deadline_armed = False
            self._cancel_deadline()

    def _arm_header_deadline(self) -> None:
        if not self._header_deadline_armed:
            self._header_deadline_armed = True
            self._arm(self.read_timeout_s)

    def _arm(self, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, self._close, "idle")

    def _cancel_deadline(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _close(self, why: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
        kind = type(self)
        counts = kind._closed_counts
        counts[why] += 1
        now = time.monotonic()
        if now - kind._last_log >= LOG_EVERY_S:
            kind._last_log = now
            logger.warning(
                "closed %d connections idle longer than %g s (--read-timeout) and %d over --max-connections %d so far",
                counts["idle"], self.read_timeout_s, counts["over the connection cap"], self.max_connections,
            )


def guarded_protocol(read_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.run(..., http=...)`` with these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "read_timeout_s": float(read_timeout_s), "max_connections": int(max_connections),
        "_closed_counts": {"idle": 0, "over the connection cap": 0}, "_last_log": 0.0,
    })
