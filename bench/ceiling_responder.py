"""The Python ceiling for answering SIP over UDP: copies the five headers a UAC
matches on into a fixed 200 OK and parses nothing else (issue 2's baseline).

    python bench/ceiling_responder.py PORT [asyncio|reader]

`asyncio`: stock DatagramProtocol (what a naive asyncio server gets).
`reader`: a plain non-blocking socket under loop.add_reader, the way pbx_core's
transport reads (no 256 KiB allocation per datagram).
"""

import asyncio
import socket
import sys

KEEP = (b"via:", b"v:", b"from:", b"f:", b"to:", b"t:", b"call-id:", b"i:", b"cseq:")


def answer(data: bytes) -> bytes:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    lines = [b"SIP/2.0 200 OK"] + [h for h in head[1:] if h[:9].lower().startswith(KEEP)]
    return b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"


class Proto(asyncio.DatagramProtocol):
    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.t = transport

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        self.t.sendto(answer(data), addr)


async def main(port: int, mode: str) -> None:
    loop = asyncio.get_running_loop()
    if mode == "asyncio":
        await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", port))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("127.0.0.1", port))

        buf = bytearray(65536)
        view = memoryview(buf)

        def readable() -> None:
            for _ in range(64):
                try:
                    n, addr = s.recvfrom_into(buf)
                except BlockingIOError:
                    return
                s.sendto(answer(bytes(view[:n])), addr)

        loop.add_reader(s.fileno(), readable)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "asyncio"))
