"""Events of the SIP transaction layer (`transaction.py`), and the keys that name its
transactions. Every event is a frozen dataclass; the layer returns them in lists and
the transport or the transaction user (TU: UA core, proxy, B2BUA) acts on them.

Who acts on what:

* `Send`: a request, retransmission, ACK or response must go out; the transport
  serializes and sends it.
* `RequestReceived`: a new request, or an ACK outside any transaction; the TU answers
  through `send_response(key, ...)`.
* `ResponseReceived`: a response matched a client transaction.
* `TransactionTimeout`: Timer B/F (the TU acts as on a 408) or H (no ACK came).
* `TransportError`: the transport failed for a transaction (client: act as on a 503).
* `TransactionTerminated`: a transaction ended and was forgotten; drop references.
* `StrayResponse`: a response matched no client transaction (§18.1.2); a proxy or
  B2BUA decides, a UA drops it.
* `BadRequest`: a request whose Via/CSeq/From/To/Call-ID is malformed; the transport
  answers `error.status` statelessly.
* `Overloaded`: a new request while the server transaction table is full; the
  transport answers 503 statelessly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pbx_core.sip.errors import ParseError
from pbx_core.sip.headers import Via
from pbx_core.sip.message import Request, Response
from pbx_core.sip.uri import URI

# (transport "UDP"/"TCP"/"TLS", host, port): where a message came from or goes to.
Address = tuple[str, str, int]


class ClientKey(NamedTuple):
    """A client transaction: top Via branch + method of the request (RFC 3261 §17.1.3).
    A CANCEL shares its INVITE's branch and is told apart by the method."""

    branch: str
    method: str


# What `send_request` hands back to the TU.
ClientTransactionHandle = ClientKey


class ServerKey(NamedTuple):
    """A server transaction of a request whose branch has the RFC 3261 magic cookie:
    branch + sent-by of the top Via + method, ACK counting as INVITE (§17.2.3)."""

    branch: str
    sent_by: str
    method: str


class LegacyServerKey(NamedTuple):
    """A server transaction of an RFC 2543 request (no magic cookie, §17.2.3):
    Request-URI, To tag, From tag, Call-ID, CSeq and top Via of the request."""

    request_uri: URI
    to_tag: str | None
    from_tag: str | None
    call_id: str
    cseq: int
    method: str
    via: Via


AnyServerKey = ServerKey | LegacyServerKey
TransactionKey = ClientKey | ServerKey | LegacyServerKey


@dataclass(frozen=True, slots=True)
class Send:
    """Give `message` to the transport for `dest`. For a response `dest` is where the
    request came from; the transport applies RFC 3261 §18.2.2 / RFC 3581 to it.
    `key` names the transaction, to report a failure back with `transport_error`."""

    message: Request | Response
    dest: Address
    key: TransactionKey | None = None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request for the TU. `key` is the server transaction to answer through; it is
    None for an ACK, which is never answered (an ACK for a 2xx is its own affair, RFC
    3261 §17). For a CANCEL, `cancels` names the INVITE server transaction it matches
    (§9.2), or is None when there is none (the TU answers 481)."""

    request: Request
    source: Address
    key: AnyServerKey | None
    cancels: AnyServerKey | None = None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response to the client transaction `handle` (2xx retransmissions to an INVITE
    included: RFC 6026 hands every 2xx to the TU, which ACKs each)."""

    response: Response
    handle: ClientKey
    source: Address


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """`timer` ("B", "F" or "H") fired: no final response (client; the TU acts as if a
    408 came), or no ACK for a non-2xx final response (server)."""

    key: TransactionKey
    timer: str


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport could not send for this transaction (RFC 3261 §17.1.4, §17.2.4)."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction reached Terminated and was destroyed; its key is free again."""

    key: TransactionKey


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matches no client transaction (RFC 3261 §18.1.2)."""

    response: Response
    source: Address


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request the layer cannot match because a header it needs is malformed;
    `error.status` is what to answer with (statelessly: there is no transaction)."""

    request: Request
    source: Address
    error: ParseError


@dataclass(frozen=True, slots=True)
class Overloaded:
    """A new request arrived while `max_server_transactions` are alive; answer 503."""

    request: Request
    source: Address


Event = (
    Send
    | RequestReceived
    | ResponseReceived
    | TransactionTimeout
    | TransportError
    | TransactionTerminated
    | StrayResponse
    | BadRequest
    | Overloaded
)
