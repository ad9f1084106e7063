"""The attacks of the soak test (issue 11), each from its own loopback address.

Every attack here is a function or a small class that runs to completion (or, for
slowloris, until stopped) and returns what it saw, for the test to assert on:

- `hostile_invite`: an extension whose phone was taken over (it knows 103's password)
  sends INVITEs to the echo test whose SDP is hostile: huge ptime, bandwidth, stream
  and format counts, and malformed values. Each must get a final response; a 2xx is
  ACKed and hung up, anything else ACKed.
- `missing_header`: requests lacking a mandatory header (RFC 3261 §8.1.1): 400 each.
- `via_tcp_reflector`: a UDP request whose Via names TCP at a victim's address: the
  PBX must not connect there (it would be a reflector for anyone's forged Via).
- `tcp_burst`: more TCP connections than a device's file limit, held, then closed.
- `Slowloris`: TCP connections that trickle a request one byte at a time forever.
- `sipvicious`: svmap, svwar, svcrack (Debian `sipvicious`).

The mini UA speaks just enough SIP for the INVITEs: it is an attacker, not a peer the
PBX is tested against (the legitimate phones are SIPp).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN = "pbx.local"

# --------------------------------------------------------------------- a mini UA


def _branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def _status(data: bytes) -> int | None:
    m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(m.group(1)) if m else None


def _header(data: bytes, name: str) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def _digest(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    """An RFC 2617 Digest answer (MD5, qop=auth when offered)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324  # the protocol's hash
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()  # noqa: S324
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in params.get("qop", "").split(","):
        cnonce = secrets.token_hex(8)
        resp = hashlib.md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()  # noqa: S324
        parts += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
    else:
        resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
    parts.append(f'response="{resp}"')
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(parts) + ", algorithm=MD5"


@dataclass
class InviteOutcome:
    name: str
    statuses: list[int] = field(default_factory=list)  # every response to the INVITEs
    final: int | None = None  # the final answer to the authenticated INVITE
    bye: int | None = None  # the answer to our BYE after a 2xx

    def __str__(self) -> str:
        return f"{self.name}: final={self.final} bye={self.bye} seen={self.statuses}"


def _sdp(ip: str, lines: list[str]) -> str:
    return "\r\n".join(["v=0", f"o=evil 1 1 IN IP4 {ip}", "s=-", *lines]) + "\r\n"


def hostile_sdps(ip: str) -> dict[str, str]:
    """Bodies that once froze the PBX or left calls in routing for ever."""
    c = f"c=IN IP4 {ip}"
    audio = ["m=audio 40000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]
    many_streams = ["m=audio 0 RTP/AVP 0"] * 2000
    return {
        "huge-ptime": _sdp(ip, [c, "t=0 0", *audio, "a=ptime:999999999999999999"]),
        "huge-maxptime": _sdp(
            ip, [c, "t=0 0", *audio, "a=ptime:4294967296", "a=maxptime:99999999999999"]
        ),
        "huge-bandwidth": _sdp(
            ip, [c, "b=AS:999999999999999999999999999", "t=0 0", *audio, "b=TIAS:99999999999999"]
        ),
        "huge-stream-count": _sdp(ip, [c, "t=0 0", *many_streams, *audio]),
        "huge-format-count": _sdp(
            ip,
            [c, "t=0 0", "m=audio 40000 RTP/AVP " + " ".join(["0", "8"] * 3000), audio[1]],
        ),
        "huge-clock-rate": _sdp(ip, [c, "t=0 0", audio[0], "a=rtpmap:0 PCMU/999999999999999"]),
        "zero-clock-rate": _sdp(ip, [c, "t=0 0", audio[0], "a=rtpmap:0 PCMU/0", "a=ptime:0"]),
        "port-out-of-range": _sdp(ip, [c, "t=0 0", "m=audio 99999 RTP/AVP 0", audio[1]]),
        "port-count": _sdp(ip, [c, "t=0 0", "m=audio 40000/999999 RTP/AVP 0", audio[1]]),
        "port-not-a-number": _sdp(ip, [c, "t=0 0", "m=audio x RTP/AVP 0", audio[1]]),
        "bad-address": _sdp(ip, ["c=IN IP4 999.999.1.1", "t=0 0", *audio]),
        "bad-ipv6-address": _sdp(ip, ["c=IN IP6 zz::zz::1", "t=0 0", *audio]),
        "hostname-address": _sdp(ip, ["c=IN IP4 unresolvable.invalid", "t=0 0", *audio]),
        "no-connection": _sdp(ip, ["t=0 0", *audio]),
        "negative-ptime": _sdp(ip, [c, "t=0 0", *audio, "a=ptime:-20"]),
        "text-ptime": _sdp(ip, [c, "t=0 0", *audio, "a=ptime:twenty"]),
        "not-sdp": "hello, I am not an SDP\r\n",
    }


def plain_sdp(ip: str) -> str:
    return _sdp(ip, [f"c=IN IP4 {ip}", "t=0 0", "m=audio 40002 RTP/AVP 0", "a=rtpmap:0 PCMU/8000"])


class MiniUa:
    """A UDP SIP client on ip:any for one call at a time."""

    def __init__(self, ip: str, pbx: tuple[str, int], user: str, password: str) -> None:
        self.ip, self.pbx, self.user, self.password = ip, pbx, user, password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def _recv(self, call_id: str, until: float) -> bytes | None:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            if _header(data, "Call-ID") == call_id or _header(data, "i") == call_id:
                return data

    def _request(
        self,
        method: str,
        uri: str,
        call_id: str,
        cseq: int,
        branch: str,
        from_tag: str,
        *,
        to_tag: str = "",
        body: str = "",
        extra: tuple[str, ...] = (),
    ) -> None:
        to = f"<sip:{uri.split(':', 1)[1]}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch={branch};rport",
            f"From: <sip:{self.user}@{DOMAIN}>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{self.ip}:{self.port}>",
            "Max-Forwards: 70",
            "User-Agent: Grandstream GXP1625 1.0.11.23",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        msg = "\r\n".join(lines) + "\r\n\r\n" + body
        self.sock.sendto(msg.encode(), self.pbx)

    def _final(
        self, out: InviteOutcome, call_id: str, cseq: int, until: float
    ) -> tuple[int | None, bytes]:
        """The final response to INVITE `cseq` (1xx noted, retransmissions absorbed)."""
        while True:
            data = self._recv(call_id, until)
            if data is None:
                return None, b""
            status = _status(data)
            if status is None or (_header(data, "CSeq") or "") != f"{cseq} INVITE":
                continue
            out.statuses.append(status)
            if status >= 200:
                return status, data

    def invite(self, name: str, number: str, body: str, wait: float) -> InviteOutcome:
        """INVITE `number` with `body`, answer the challenge, wait for the final answer
        (at most `wait` s per request); ACK it, and hang up a 2xx."""
        out = InviteOutcome(name)
        call_id, tag = secrets.token_hex(12), secrets.token_hex(4)
        uri = f"sip:{number}@{DOMAIN}"
        extra: tuple[str, ...] = ()
        for cseq in (1, 2):
            branch = _branch()
            self._request("INVITE", uri, call_id, cseq, branch, tag, body=body, extra=extra)
            status, resp = self._final(out, call_id, cseq, time.monotonic() + wait)
            if status is None:
                return out
            to_tag = (re.search(r"tag=([^;>\s]+)", _header(resp, "To") or "") or [None, ""])[1]
            if status >= 300:
                self._request("ACK", uri, call_id, cseq, branch, tag, to_tag=to_tag)
            if status in (401, 407) and cseq == 1:
                hname = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
                challenge = _header(resp, hname) or ""
                answer = _digest(challenge, self.user, self.password, "INVITE", uri)
                auth = "Proxy-Authorization" if status == 407 else "Authorization"
                extra = (f"{auth}: {answer}",)
                continue
            out.final = status
            if 200 <= status < 300:
                target = re.search(r"<([^>]+)>", _header(resp, "Contact") or "")
                remote = target.group(1) if target else uri
                self._request("ACK", remote, call_id, cseq, _branch(), tag, to_tag=to_tag)
                bye_branch = _branch()
                self._request("BYE", remote, call_id, cseq + 1, bye_branch, tag, to_tag=to_tag)
                until = time.monotonic() + wait
                while (data := self._recv(call_id, until)) is not None:
                    if (_header(data, "CSeq") or "").endswith("BYE") and _status(data):
                        out.bye = _status(data)
                        break
            return out
        return out

    def register(self, contact_port: int, wait: float = 5.0) -> int | None:
        """REGISTER `user` at ip:contact_port (from this socket), answering the
        challenge: the final status."""
        call_id, tag = secrets.token_hex(12), secrets.token_hex(4)
        uri = f"sip:{DOMAIN}"
        contact = (f"Contact: <sip:{self.user}@{self.ip}:{contact_port}>", "Expires: 3600")
        extra: tuple[str, ...] = contact
        for cseq in (1, 2):
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch={_branch()};rport",
                f"From: <sip:{self.user}@{DOMAIN}>;tag={tag}",
                f"To: <sip:{self.user}@{DOMAIN}>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} REGISTER",
                "Max-Forwards: 70",
                "User-Agent: Grandstream GXP1625 1.0.11.23",
                *extra,
                "Content-Length: 0",
            ]
            self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.pbx)
            until = time.monotonic() + wait
            while (data := self._recv(call_id, until)) is not None:
                status = _status(data)
                if status is not None and status >= 200:
                    break
            else:
                return None
            if status != 401 or cseq == 2:
                return status
            answer = _digest(
                _header(data, "WWW-Authenticate") or "", self.user, self.password, "REGISTER", uri
            )
            extra = (*contact, f"Authorization: {answer}")
        return None


class HostileCallee:
    """A taken-over phone registered as `user` on ip:any that answers every INVITE
    with 180 and a 200 carrying `body` (set it before each call); BYE and CANCEL get
    their answers. `serve()` runs until `close()` (in a thread)."""

    def __init__(self, ip: str, pbx: tuple[str, int], user: str, password: str) -> None:
        # Registered from the very socket that answers: the PBX sends a phone's calls
        # where its REGISTER came from.
        ua = MiniUa(ip, pbx, user, password)
        self.sock, self.ip, self.port, self.user = ua.sock, ip, ua.port, user
        self.registered = ua.register(self.port)
        self.sock.settimeout(0.2)
        self.body = ""
        self.invites = 0
        self.closed = False

    def _answer(self, req: bytes, status: str, src: tuple[str, int], body: str = "") -> None:
        head = req.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
        keep = [
            h
            for h in head[1:]
            if h.split(":", 1)[0].strip().lower()
            in ("via", "v", "from", "f", "call-id", "i", "cseq")
        ]
        to = _header(req, "To") or _header(req, "t") or ""
        if ";tag=" not in to:
            to += f";tag={abs(hash(_header(req, 'Call-ID'))) % 10**8}"
        lines = [
            f"SIP/2.0 {status}",
            *keep,
            f"To: {to}",
            f"Contact: <sip:{self.user}@{self.ip}:{self.port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), src)

    def serve(self) -> None:
        while not self.closed:
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            method = data.split(b" ", 1)[0]
            if method == b"INVITE":
                self.invites += 1
                self._answer(data, "180 Ringing", src)
                self._answer(data, "200 OK", src, self.body)
            elif method in (b"BYE", b"CANCEL", b"OPTIONS", b"UPDATE", b"INFO"):
                self._answer(data, "200 OK", src)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


# ------------------------------------------------------- stateless request attacks


def _raw_request(method: str, ip: str, port: int, branch: str, omit: str, via: str = "") -> bytes:
    headers = {
        "Via": via or f"SIP/2.0/UDP {ip}:{port};branch={branch};rport",
        "From": f"<sip:probe@{ip}>;tag={secrets.token_hex(4)}",
        "To": f"<sip:100@{DOMAIN}>",
        "Call-ID": secrets.token_hex(12),
        "CSeq": f"1 {method}",
        "Max-Forwards": "70",
        "User-Agent": "Cisco-SIPGateway/IOS-12.x",
        "Content-Length": "0",
    }
    headers.pop(omit, None)
    head = [f"{method} sip:100@{DOMAIN} SIP/2.0", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


MANDATORY = ("To", "From", "Call-ID", "CSeq")


def missing_header(ip: str, pbx: tuple[str, int], wait: float = 2.0) -> dict[str, int | None]:
    """Each of OPTIONS and INVITE without each mandatory header, over UDP and TCP:
    the status of the answer (None: no answer within `wait` s)."""
    out: dict[str, int | None] = {}
    for method in ("OPTIONS", "INVITE"):
        for omit in MANDATORY:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((ip, 0))
                s.settimeout(wait)
                s.sendto(_raw_request(method, ip, s.getsockname()[1], _branch(), omit), pbx)
                try:
                    out[f"udp {method} without {omit}"] = _status(s.recv(65535))
                except TimeoutError:
                    out[f"udp {method} without {omit}"] = None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        # A connection may wait its turn while a burst of others holds every
        # descriptor (the PBX evicts idle ones to make room): more time than a datagram.
        s.settimeout(max(wait, 6.0))
        try:
            s.connect(pbx)
            port = s.getsockname()[1]
            via = f"SIP/2.0/TCP {ip}:{port};branch={_branch()}"
            s.sendall(_raw_request("OPTIONS", ip, port, "", "To", via=via))
            out["tcp OPTIONS without To"] = _status(s.recv(65535))
        except OSError:  # refused, reset, timed out
            out["tcp OPTIONS without To"] = None
    return out


class Victim:
    """A TCP listener on ip:any counting who connects (the reflector's target)."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((ip, 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.connections = 0

    def poll(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.connections
            conn.close()
            self.connections += 1

    def close(self) -> None:
        self.sock.close()


def via_tcp_reflector(ip: str, pbx: tuple[str, int], victim: tuple[str, int]) -> None:
    """OPTIONS and REGISTER over UDP whose Via (without rport) names TCP at the victim's
    port, sent from the victim's address (as a forger would): once with the victim's
    host in the Via, once with another (RFC 3261 §18.2.2 then answers to the source
    address, at the Via's port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        for method in ("OPTIONS", "REGISTER"):
            for host in (victim[0], "192.0.2.1"):
                via = f"SIP/2.0/TCP {host}:{victim[1]};branch={_branch()}"
                s.sendto(_raw_request(method, ip, 0, "", "", via=via), pbx)
        s.settimeout(1.0)
        with contextlib.suppress(TimeoutError):
            while s.recv(65535):
                pass


# --------------------------------------------------------------------- TCP attacks


def raise_file_limit(need: int) -> None:
    """This process needs `need` descriptors for the burst: raise its soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise RuntimeError(f"the TCP burst needs {need} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def tcp_burst(ip: str, pbx: tuple[str, int], count: int) -> list[socket.socket]:
    """Open up to `count` idle TCP connections to the PBX from `ip` and return those
    that connected (the caller holds and closes them). Gives up after 5 connects in a
    row fail: the PBX stopped accepting (its cap, or no descriptors left)."""
    socks: list[socket.socket] = []
    failures = 0
    while len(socks) < count and failures < 5:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            s.bind((ip, 0))
            s.settimeout(0.5)
            s.connect(pbx)
        except OSError:
            s.close()
            failures += 1
            continue
        failures = 0
        s.setblocking(False)
        socks.append(s)
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
    socks.clear()


def _peer_closed(s: socket.socket) -> bool:
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        return s.recv(65535) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Slowloris:
    """`count` TCP connections from `ip` that send the start of a request and then
    one more byte every `interval` s, never finishing the header (so never a whole
    message). `tick()` trickles and notes which the PBX closed, and when."""

    def __init__(self, ip: str, pbx: tuple[str, int], count: int, interval: float) -> None:
        self.interval = interval
        self.opened = time.monotonic()
        self.open: list[socket.socket] = []
        self.lifetimes: list[float] = []  # of the connections the PBX closed
        self.refused = 0
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((ip, 0))
                s.settimeout(2)
                s.connect(pbx)
                port = s.getsockname()[1]
                s.sendall(
                    f"OPTIONS sip:100@{DOMAIN} SIP/2.0\r\n"
                    f"Via: SIP/2.0/TCP {ip}:{port};branch={_branch()}\r\nX-Slow: ".encode()
                )
            except OSError:
                s.close()
                self.refused += 1
                continue
            s.setblocking(False)
            self.open.append(s)
        self._next = time.monotonic() + interval

    def tick(self) -> None:
        now = time.monotonic()
        for s in list(self.open):
            closed = _peer_closed(s)
            if not closed and now >= self._next:
                try:
                    s.send(b"a")
                except OSError:
                    closed = True
            if closed:
                self.lifetimes.append(now - self.opened)
                self.open.remove(s)
                s.close()
        if now >= self._next:
            self._next = now + self.interval

    def stop(self) -> None:
        close_all(self.open)


# ---------------------------------------------------------------------- sipvicious

# Debian's sipvicious 0.3.3 accepts -b for svwar and svcrack but never passes it on
# (they bind to every address and speak from 127.0.0.1, the phones' address), and
# has no option for the User-Agent. Real attackers patch both; so does this launcher.
_LAUNCHER = """
import os, sys
sys.path.insert(0, os.environ["SV_HOME"])
from sipvicious.libs import svhelper
from sipvicious import svcrack, svwar
tool = {"svwar": svwar, "svcrack": svcrack}[sys.argv[1]]
cls = tool.TakeASip if tool is svwar else tool.ASipOfRedWine
init = cls.__init__
def bound(self, *a, **kw):
    kw["bindingip"] = os.environ["SV_BIND"]
    init(self, *a, **kw)
cls.__init__ = bound
if os.environ.get("SV_AGENT"):
    d = list(svhelper.makeRequest.__defaults__)
    d[-2] = os.environ["SV_AGENT"]
    svhelper.makeRequest.__defaults__ = tuple(d)
sys.argv = sys.argv[1:]
tool.main()
"""


def sipvicious_tool(name: str) -> str | None:
    """The path of svmap/svwar/svcrack (Debian 12 names; sipvicious_* in newer ones)."""
    return shutil.which(name) or shutil.which(f"sipvicious_{name}")


@dataclass
class ToolRun:
    name: str
    source: str
    returncode: int
    output: str


def sipvicious(
    tool: str, ip: str, pbx: tuple[str, int], home: Path, *, agent: str = "", timeout: float = 30
) -> ToolRun:
    """Run `tool` ("svmap", "svwar", "svcrack") from `ip` against the PBX; `agent`
    replaces its friendly-scanner User-Agent (svwar and svcrack)."""
    path = sipvicious_tool(tool)
    if path is None:
        raise RuntimeError(f"sipvicious's {tool} is not installed")
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home)}  # its session files go to ~/.sipvicious
    host, port = pbx
    common = ["-p", str(port), "-t", "0.01", "--maximumtime", "3"]
    if tool == "svmap":
        cmd = [path, "-b", ip, "-p", str(port), host]
    else:
        env |= {
            "SV_HOME": str(Path(os.path.realpath(path)).parent),
            "SV_BIND": ip,
            "SV_AGENT": agent,
        }
        # The interpreter sipvicious is installed for (its #! line), not this venv's.
        python = Path(path).read_text(errors="replace").split("\n", 1)[0].removeprefix("#!")
        if tool == "svwar":
            args = ["-e", "100-120", "--force", "-m", "REGISTER", *common, host]
        else:
            args = ["-u", "100", "-r", "1000-1015", *common, host]
        cmd = [python.strip(), "-c", _LAUNCHER, tool, *args]
    proc = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return ToolRun(
        f"{tool} ({agent or 'friendly-scanner'})", ip, proc.returncode, proc.stdout + proc.stderr
    )


# ------------------------------------------------------------- what the PBX holds


@dataclass(frozen=True)
class Sample:
    at: float
    rss_kb: int  # VmRSS
    anon_kb: int  # RssAnon: the heap, where a leak shows (RssFile is mapped files: LMDB)
    fds: int


def sample(pid: int) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()

    def kb(name: str) -> int:
        m = re.search(rf"^{name}:\s+(\d+) kB", status, re.MULTILINE)
        return int(m.group(1)) if m else 0

    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return Sample(time.monotonic(), kb("VmRSS"), kb("RssAnon"), fds)


def udp_ports_bound(low: int, high: int) -> list[int]:
    """Local UDP ports in low..high that some socket on this host holds (/proc/net/udp)."""
    ports = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in f.readlines()[1:]:
                port = int(line.split()[1].rsplit(":", 1)[1], 16)
                if low <= port <= high:
                    ports.append(port)
    return sorted(ports)
