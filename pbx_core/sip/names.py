"""Names of SIP headers and status codes: compact forms, the spelling we write, which
headers are comma-separated lists, and reason phrases (RFC 3261 §7.3.3, §20, §21).

`header_key(name)` turns any spelling of a header name into its lower-case long form,
the key messages index headers by; `name_entry(name)` also gives the spelling we write
and remembers names seen on the wire, so the parser pays one dict lookup per line.
"""

from __future__ import annotations

COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# How we spell the headers we know when we write them.
CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "Identity",
        "Identity-Info",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reject-Contact",
        "Reply-To",
        "Request-Disposition",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Service-Route",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1: "#" rules). Others
# (Date, Authorization, User-Agent, Call-ID …) may contain commas of their own.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "privacy",
        "proxy-require",
        "reason",
        "record-route",
        "require",
        "route",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# Names as code spells them -> key, so header_key() is one dict lookup in the hot path.
KEYS = {
    **{n: n for n in CANONICAL},
    **{v: COMPACT.get(k, k) for k, v in CANONICAL.items()},
    **COMPACT,
    **{c.upper(): long for c, long in COMPACT.items()},
}


def header_key(name: str) -> str:
    """Lower-case long form of a header name: 'v' and 'VIA' -> 'via'."""
    key = KEYS.get(name)
    if key is None:
        lower = name.lower()
        key = COMPACT.get(lower, lower)
    return key


# A header name as received -> (key, name to write). Seeded with the spellings of the
# headers we know; the parser adds the (already validated) names it meets, up to a
# bound in count and length, so a peer inventing names cannot make it grow much.
NAME_ENTRIES: dict[str, tuple[str, str]] = {}
_NAME_ENTRIES_MAX = 1024
_NAME_LONGEST = 64


def name_entry(name: str) -> tuple[str, str]:
    """(key, spelling to write) of a header name; the name must be a valid token."""
    entry = NAME_ENTRIES.get(name)
    if entry is None:
        key = header_key(name)
        entry = (key, CANONICAL.get(key, name))
        if len(NAME_ENTRIES) < _NAME_ENTRIES_MAX and len(name) <= _NAME_LONGEST:
            NAME_ENTRIES[name] = entry
    return entry


for _name in (*KEYS, *CANONICAL.values()):
    name_entry(_name)
del _name
