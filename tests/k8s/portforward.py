"""kubectl port-forward for the Kubernetes API emulator (tests/k8s/emulator.py): the API server's
``pods/portforward`` subresource and the kubelet's side of the protocol, in one test-support module.

What real ``kubectl port-forward`` (client-go 1.31+) does, and what this module answers:

1. kubectl GETs the Service (for ``svc/NAME``), lists its pods by selector and GETs the chosen pod
   (the emulator's ordinary object paths; kubectl refuses a pod that is not ``Running`` by itself).
2. It opens ``GET /api/v1/namespaces/NS/pods/POD/portforward`` as a **WebSocket** asking for the
   subprotocol ``SPDY/3.1+portforward.k8s.io`` (KEP-4006: SPDY tunnelled through WebSockets, the
   default since kubectl 1.31). ``PortForwards.serve()`` accepts it with that subprotocol; from then on every binary
   WebSocket message carries a piece of a SPDY/3.1 byte stream, in both directions.
3. Over SPDY, per local connection, kubectl opens an *error* stream and a *data* stream (SYN_STREAM
   with the headers ``streamtype``, ``port``, ``requestid``). ``PortForwardSession`` replies to each
   (SYN_REPLY), pairs them by ``requestid`` and, as the kubelet does (containerd's PortForward),
   connects to ``localhost:PORT`` **inside the pod's network namespace** (IPv4, then IPv6), then relays
   bytes both ways: the client's DATA frames to the pod, the pod's bytes back as DATA frames, a FIN
   each way for a half-close. A connection that fails is reported on the error stream with the
   kubelet's wording (``error forwarding port P to pod ...: failed to connect to localhost:P inside
   namespace ...``); kubectl (1.31 to 1.33) prints it and gives up the whole forward (``lost connection
   to pod``).

The SPDY/3.1 part covers what client-go's spdystream sends and expects: 8-byte frame headers; control
frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING (echoed), GOAWAY, HEADERS, WINDOW_UPDATE
(read and ignored: spdystream has no flow control); name/value header blocks compressed with zlib and
the SPDY/3 dictionary, one zlib context per direction for the whole connection; DATA frames with FIN.

Where the pods are: tests/k8s/node.py runs each pod in a network namespace named
``lk<4 hex>-<first 8 characters of the pod uid>`` (``/run/netns/...``); ``PodTarget`` finds it by the
uid and opens the socket in it (``setns`` in a short-lived thread), so a server bound to 127.0.0.1 in
the pod is reachable, as through a real kubelet. This needs root, like the node itself.

Not served (docs/kubernetes-testing.md): the plain ``Upgrade: SPDY/3.1`` path (kubectl before 1.31,
or ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``) is answered with 400 and a message that says so; aiohttp,
under the emulator, hands only WebSocket upgrades over. Nor the ``v4.channel.k8s.io`` style WebSocket
port-forward protocol (``v2.portforward.k8s.io``) that no kubectl uses, nor UDP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import re
import socket
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Set, Tuple

PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
WEBSOCKET_TUNNEL_PREFIX = "SPDY/3.1+"
WEBSOCKET_TUNNEL_PROTOCOL = WEBSOCKET_TUNNEL_PREFIX + PORT_FORWARD_PROTOCOL

# SPDY/3 control frame types, flags and RST_STREAM status codes (draft-mbelshe-httpbis-spdy-00 / spdy3).
SPDY_VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_CANCEL, RST_STREAM_IN_USE = 1, 2, 5, 8
MAX_DATA_CHUNK = 32 * 1024  # what kubectl's io.Copy moves at once
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's default wait for the second stream of a pair
# After one direction of a forwarded connection ends, how long the other may still run (containerd
# gives it 1 s; a little more here, so a slow pod answering a half-closed request is not cut short).
HALF_CLOSE_GRACE = 5.0
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

# Port-forward stream headers (k8s.io/api/core/v1: StreamType, PortHeader, PortForwardRequestIDHeader).
STREAM_TYPE, PORT, REQUEST_ID = "streamtype", "port", "requestid"
STREAM_TYPE_ERROR, STREAM_TYPE_DATA = "error", "data"


def _spdy3_dictionary() -> bytes:
    """The SPDY/3 header compression dictionary (spec section 2.6.10.1): length-prefixed header names
    and values, then a run of common status lines, dates and media types. Byte-exact, or the peer's
    zlib refuses the stream (the dictionary's Adler-32 is in every zlib header)."""
    names = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date etag "
        "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
        "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
        "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
        "method get status"
    )
    words = [*names.split(" "), "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


SPDY3_DICTIONARY = _spdy3_dictionary()


class SpdyError(Exception):
    """A connection-level protocol error: the session answers GOAWAY and ends."""


@dataclass
class Frame:
    """One SPDY frame. Control frames have ``kind`` (SYN_STREAM ...); DATA frames have kind 0."""

    kind: int
    flags: int
    stream_id: int = 0
    data: bytes = b""
    headers: Optional[Dict[str, List[str]]] = None
    value: int = 0  # RST_STREAM / GOAWAY status, PING id

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class SpdyFramer:
    """SPDY/3.1 frames to and from bytes for one connection (both directions' zlib contexts).

    ``feed()`` takes bytes as they come (any split) and returns the complete frames; the ``*_frame``
    methods build frames to send. Header blocks are (de)compressed in frame order on each side, as
    the protocol requires: build and send frames in the same order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, SPDY3_DICTIONARY)

    # -- reading --
    def feed(self, data: bytes) -> List[Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = second >> 24
            if first & 0x80000000:
                version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
                if version != SPDY_VERSION:
                    raise SpdyError(f"SPDY version {version} frame; only SPDY/3.1 is spoken")
                frames.append(self._control(kind, flags, payload))
            else:
                frames.append(Frame(0, flags, first & 0x7FFFFFFF, payload))
        return frames

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame:
        def word(offset: int) -> int:
            if len(payload) < offset + 4:
                raise SpdyError(f"control frame {kind} too short ({len(payload)} bytes)")
            return struct.unpack_from(">I", payload, offset)[0]

        if kind == SYN_STREAM:
            return Frame(kind, flags, word(0) & 0x7FFFFFFF, headers=self._headers(payload[10:]))
        if kind in (SYN_REPLY, HEADERS):
            return Frame(kind, flags, word(0) & 0x7FFFFFFF, headers=self._headers(payload[4:]))
        if kind == RST_STREAM:
            return Frame(kind, flags, word(0) & 0x7FFFFFFF, value=word(4))
        if kind == PING:
            return Frame(kind, flags, value=word(0))
        if kind == GOAWAY:
            return Frame(kind, flags, word(0) & 0x7FFFFFFF, value=word(4) if len(payload) >= 8 else 0)
        if kind == WINDOW_UPDATE:
            return Frame(kind, flags, word(0) & 0x7FFFFFFF, value=word(4) & 0x7FFFFFFF)
        return Frame(kind, flags, data=payload)  # SETTINGS, and types SPDY/3.1 does not know: ignored

    def _headers(self, block: bytes) -> Dict[str, List[str]]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as exc:
            raise SpdyError(f"cannot decompress a header block: {exc}") from exc
        headers: Dict[str, List[str]] = {}
        try:
            (count,), offset = struct.unpack_from(">I", raw), 4
            for _header in range(count):
                (size,) = struct.unpack_from(">I", raw, offset)
                name = raw[offset + 4 : offset + 4 + size].decode("latin-1").lower()
                offset += 4 + size
                (size,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4 : offset + 4 + size].decode("latin-1")
                offset += 4 + size
                headers.setdefault(name, []).extend(value.split("\0"))
        except struct.error as exc:
            raise SpdyError(f"malformed header block: {exc}") from exc
        return headers

    # -- writing --
    def _header_block(self, headers: Dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            for text in (name.lower(), value):  # spdystream refuses names that are not lowercase
                encoded = text.encode("latin-1")
                raw += struct.pack(">I", len(encoded)) + encoded
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control_frame(kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | SPDY_VERSION, kind, (flags << 24) | len(payload)) + payload

    @staticmethod
    def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
        return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data

    def syn_stream_frame(self, stream_id: int, headers: Dict[str, str], fin: bool = False) -> bytes:
        payload = struct.pack(">IIBB", stream_id, 0, 0, 0) + self._header_block(headers)
        return self.control_frame(SYN_STREAM, FLAG_FIN if fin else 0, payload)

    def syn_reply_frame(self, stream_id: int, headers: Optional[Dict[str, str]] = None) -> bytes:
        return self.control_frame(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._header_block(headers or {}))

    def rst_stream_frame(self, stream_id: int, status: int) -> bytes:
        return self.control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping_frame(self, ping_id: int) -> bytes:
        return self.control_frame(PING, 0, struct.pack(">I", ping_id))

    def goaway_frame(self, last_stream_id: int, status: int = 0) -> bytes:
        return self.control_frame(GOAWAY, 0, struct.pack(">II", last_stream_id, status))


# ---- where a pod is -----------------------------------------------------------------------------
class ConnectError(Exception):
    """Connecting to the pod's port failed; the message goes to kubectl on the error stream."""


def pod_network_namespace(uid: str) -> Optional[Path]:
    """The network namespace tests/k8s/node.py runs the pod ``uid`` in (``/run/netns/lk<4 hex>-<uid[:8]>``),
    or None when no node on this machine runs it."""
    if not uid or not NETNS_DIR.is_dir():
        return None
    pattern = re.compile(r"lk[0-9a-f]{4}-" + re.escape(uid[:8]))
    found = sorted(p for p in NETNS_DIR.iterdir() if pattern.fullmatch(p.name))
    return found[0] if found else None


def _socket_in_namespace(netns: Path, family: int) -> socket.socket:
    """A TCP socket created inside ``netns``: a thread enters the namespace (setns applies to the calling
    thread only), creates the socket and ends; the socket stays in that namespace."""
    result: Dict[str, Any] = {}

    def create() -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns({netns}): {os.strerror(code)}")
            finally:
                os.close(fd)
            result["socket"] = socket.socket(family, socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=create, name="portforward-setns", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["socket"]


@dataclass
class PodTarget:
    """The pod a port-forward goes to: ``connect(port)`` opens ``localhost:port`` in its network namespace,
    IPv4 then IPv6, as containerd's PortForward does."""

    namespace: str
    name: str
    uid: str

    @property
    def description(self) -> str:
        return f"pod {self.namespace}/{self.name}, uid {self.uid}"

    async def connect(self, port: int) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        netns = pod_network_namespace(self.uid)
        if netns is None:
            raise ConnectError(
                f"no network namespace for {self.description} on this machine "
                "(no test node runs it, see tests/k8s/node.py)"
            )
        loop = asyncio.get_running_loop()
        failures = []
        # containerd's wording: "failed to connect to localhost:P inside namespace N, IPv4: dial tcp4
        # 127.0.0.1:P: connect: connection refused IPv6 dial tcp6 [::1]:P: connect: connection refused"
        attempts = ((socket.AF_INET, "IPv4:", "tcp4", "127.0.0.1"), (socket.AF_INET6, "IPv6", "tcp6", "::1"))
        for family, label, network, address in attempts:
            shown = f"dial {network} {address if family == socket.AF_INET else f'[{address}]'}:{port}"
            try:
                sock = await loop.run_in_executor(None, _socket_in_namespace, netns, family)
            except OSError as exc:
                failures.append(f"{label} {shown}: socket: {_reason(exc)}")
                continue
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout=10)
                return await asyncio.open_connection(sock=sock, limit=MAX_DATA_CHUNK * 4)
            except (OSError, asyncio.TimeoutError) as exc:
                sock.close()
                failures.append(f"{label} {shown}: connect: {_reason(exc)}")
        where = f"failed to connect to localhost:{port} inside namespace {netns.name!r}, "
        raise ConnectError(where + " ".join(failures))


def _reason(exc: BaseException) -> str:
    """An OS error as Go prints it ("connection refused"); asyncio's own texts name no errno."""
    if isinstance(exc, OSError) and exc.errno:
        text = os.strerror(exc.errno)
        return text[:1].lower() + text[1:]
    return "i/o timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc)


# ---- the session ---------------------------------------------------------------------------------
@dataclass
class _Stream:
    stream_id: int
    kind: str
    port: int
    request_id: str
    inbound: asyncio.Queue = field(default_factory=asyncio.Queue)  # bytes, then None at the client's FIN
    remote_closed: bool = False  # the client sent FIN
    local_closed: bool = False  # we sent FIN
    reset: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Pair:
    request_id: str
    error: Optional[_Stream] = None
    data: Optional[_Stream] = None
    task: Optional[asyncio.Task] = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)


class PortForwardSession:
    """The kubelet's side of one port-forward connection, over any byte transport.

    ``run(receive)`` reads the client's bytes (an async iterator) and writes through ``send`` (a coroutine
    taking bytes) until the client goes away; ``close()`` ends it from outside."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        target: PodTarget,
        log: Callable[[str], None] = lambda _message: None,
    ) -> None:
        self._send = send
        self.target = target
        self._log = log
        self._framer = SpdyFramer()
        self._out: asyncio.Queue = asyncio.Queue()
        self._queued = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._streams: Dict[int, _Stream] = {}
        self._pairs: Dict[str, _Pair] = {}
        self._tasks: Set[asyncio.Task] = set()
        self._last_stream = 0
        self._closed = asyncio.Event()

    # -- output: one ordered queue, drained by one writer --
    def _queue(self, frame: bytes) -> None:
        if self._closed.is_set():
            return
        self._out.put_nowait(frame)
        self._queued += len(frame)
        if self._queued > 8 * MAX_DATA_CHUNK:
            self._drained.clear()

    async def _writer(self) -> None:
        while True:
            frame = await self._out.get()
            if frame is None:
                return
            self._queued -= len(frame)
            if self._queued <= 2 * MAX_DATA_CHUNK:
                self._drained.set()
            await self._send(frame)

    def _data(self, stream: _Stream, data: bytes = b"", fin: bool = False) -> None:
        if stream.local_closed or stream.reset.is_set():
            return
        self._queue(SpdyFramer.data_frame(stream.stream_id, data, fin))
        if fin:
            stream.local_closed = True

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- input --
    async def run(self, receive: AsyncIterator[bytes]) -> None:
        writer = asyncio.ensure_future(self._writer())
        try:
            async for chunk in receive:
                for frame in self._framer.feed(chunk):
                    if not self._handle(frame):
                        return
        except SpdyError as exc:
            self._log(f"port-forward to {self.target.description}: protocol error: {exc}")
            self._queue(self._framer.goaway_frame(self._last_stream, 1))
        finally:
            await self._shutdown(writer)

    def _handle(self, frame: Frame) -> bool:
        """One frame from the client; False when the client said GOAWAY."""
        if frame.kind == 0:
            stream = self._streams.get(frame.stream_id)
            if stream is None or stream.remote_closed:
                return True  # a stream already gone (reset or finished): dropped, as spdystream does
            if frame.data:
                stream.inbound.put_nowait(frame.data)
            if frame.fin:
                stream.remote_closed = True
                stream.inbound.put_nowait(None)
            return True
        if frame.kind == SYN_STREAM:
            self._new_stream(frame)
        elif frame.kind == RST_STREAM:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream.reset.set()
                stream.inbound.put_nowait(None)
        elif frame.kind == PING:
            if frame.value % 2 == 1:  # the client's (odd ids); even ids would answer ours, and we send none
                self._queue(self._framer.ping_frame(frame.value))
        elif frame.kind == GOAWAY:
            return False
        return True  # SYN_REPLY/HEADERS (decompressed to keep zlib in step), SETTINGS, WINDOW_UPDATE

    def _new_stream(self, frame: Frame) -> None:
        headers = {name: values[0] for name, values in (frame.headers or {}).items()}
        sid = frame.stream_id
        if sid in self._streams or sid <= self._last_stream:
            status = RST_STREAM_IN_USE if sid in self._streams else RST_PROTOCOL_ERROR
            self._queue(self._framer.rst_stream_frame(sid, status))
            return
        self._last_stream = sid
        # The kubelet's httpStreamReceived checks, then spdystream resets a rejected stream.
        problem = None
        port_text, kind = headers.get(PORT, ""), headers.get(STREAM_TYPE, "")
        if not port_text:
            problem = f"{PORT!r} header is required"
        elif not port_text.isdigit() or not 0 < int(port_text) < 65536:
            problem = f"unable to parse {port_text!r} as a port"
        elif not kind:
            problem = f"{STREAM_TYPE!r} header is required"
        elif kind not in (STREAM_TYPE_ERROR, STREAM_TYPE_DATA):
            problem = f"invalid stream type {kind!r}"
        if problem:
            self._log(f"port-forward to {self.target.description}: stream {sid} rejected: {problem}")
            self._queue(self._framer.rst_stream_frame(sid, RST_CANCEL))
            return
        # Clients older than the requestid header: the kubelet's best-effort pairing by stream id.
        request_id = headers.get(REQUEST_ID) or str(sid if kind == STREAM_TYPE_ERROR else sid - 2)
        stream = _Stream(sid, kind, int(port_text), request_id)
        self._streams[sid] = stream
        self._queue(self._framer.syn_reply_frame(sid))
        if frame.fin:
            stream.remote_closed = True
            stream.inbound.put_nowait(None)
        pair = self._pairs.get(request_id)
        if pair is None:
            pair = self._pairs[request_id] = _Pair(request_id)
            self._spawn(self._await_pair(pair))
        if getattr(pair, kind) is not None:
            problem = f"error processing stream for request {request_id}: {kind} stream already assigned"
            self._data_error(stream, problem)
            return
        setattr(pair, kind, stream)
        if pair.error is not None and pair.data is not None:
            pair.complete.set()
            pair.task = self._spawn(self._forward(pair))

    def _data_error(self, stream: _Stream, message: str) -> None:
        self._log(f"port-forward to {self.target.description}: {message}")
        self._queue(SpdyFramer.data_frame(stream.stream_id, message.encode()))

    async def _await_pair(self, pair: _Pair) -> None:
        """The kubelet's monitorStreamPair: both streams within the creation timeout, or an error."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pair.complete.wait(), timeout=STREAM_CREATION_TIMEOUT)
        if not pair.complete.is_set():
            stream = pair.error or pair.data
            if stream is not None:
                self._data_error(stream, f"timed out waiting for streams of request {pair.request_id}")
                self._data(stream, fin=True)
            self._pairs.pop(pair.request_id, None)

    async def _forward(self, pair: _Pair) -> None:
        """One forwarded connection: connect in the pod, relay both ways, FIN both streams at the end."""
        error, data = pair.error, pair.data
        assert error is not None and data is not None
        port = data.port
        try:
            try:
                reader, writer = await self.target.connect(port)
            except ConnectError as exc:
                message = f"error forwarding port {port} to {self.target.description}: {exc}"
                self._log(f"port-forward: {message}")
                self._data(error, message.encode())
                return
            try:
                await self._relay(data, reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), timeout=1)
        finally:
            self._data(data, fin=True)
            self._data(error, fin=True)
            self._pairs.pop(pair.request_id, None)
            for stream in (error, data):
                self._streams.pop(stream.stream_id, None)

    async def _relay(self, data: _Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def upstream() -> None:  # client -> pod
            while True:
                chunk = await data.inbound.get()
                if chunk is None:
                    if not data.reset.is_set() and writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        async def downstream() -> None:  # pod -> client
            while True:
                chunk = await reader.read(MAX_DATA_CHUNK)
                if not chunk:
                    self._data(data, fin=True)
                    return
                self._data(data, chunk)
                await self._drained.wait()

        tasks = {asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())}
        reset = asyncio.ensure_future(data.reset.wait())
        try:
            done, pending = await asyncio.wait(tasks | {reset}, return_when=asyncio.FIRST_COMPLETED)
            if reset not in done:
                rest = pending - {reset}
                if rest:
                    await asyncio.wait(rest | {reset}, timeout=HALF_CLOSE_GRACE, return_when=asyncio.FIRST_COMPLETED)
        except (OSError, ConnectionError):
            pass
        finally:
            for task in (*tasks, reset):
                task.cancel()
            await asyncio.gather(*tasks, reset, return_exceptions=True)

    async def _shutdown(self, writer: asyncio.Task) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._out.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, timeout=2)
        self._closed.set()


# ---- the HTTP side ------------------------------------------------------------------------------
def upgrade_problem(headers: Any) -> Optional[str]:
    """Why a portforward request cannot be served (None: it is a SPDY-over-WebSocket upgrade)."""
    upgrade = headers.get("Upgrade", "").strip().lower()
    if upgrade == "websocket":
        offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        if WEBSOCKET_TUNNEL_PROTOCOL in offered:
            return None
        return (
            f"unable to upgrade: no tunneling spdy protocols provided (offered {offered}; "
            f"the emulator serves {WEBSOCKET_TUNNEL_PROTOCOL!r})"
        )
    if upgrade.startswith("spdy/"):
        return (
            "unable to upgrade: the API emulator (tests/k8s/emulator.py) serves port-forward as SPDY/3.1 tunnelled "
            f"through WebSockets ({WEBSOCKET_TUNNEL_PROTOCOL}, kubectl >= 1.31's default), not as a plain "
            "SPDY/3.1 upgrade (unset KUBECTL_PORT_FORWARD_WEBSOCKETS)"
        )
    return "unable to upgrade: missing upgrade headers in request"


class PortForwards:
    """The emulator's open port-forward sessions (so that it can close them when it stops)."""

    def __init__(self, log: Callable[[str], None] = lambda _message: None) -> None:
        self.sessions: Set[PortForwardSession] = set()
        self._sockets: Set[Any] = set()
        self.log = log

    async def serve(self, request: Any, target: PodTarget) -> Any:
        """Answer ``request`` (an aiohttp request to pods/portforward, already checked for the pod) with a
        WebSocket carrying SPDY/3.1 and run the session until the client goes away."""
        import aiohttp
        import aiohttp.web

        ws = aiohttp.web.WebSocketResponse(
            protocols=(WEBSOCKET_TUNNEL_PROTOCOL,), autoping=True, compress=False, max_msg_size=0
        )
        await ws.prepare(request)

        async def receive() -> AsyncIterator[bytes]:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    yield message.data
                elif message.type in (aiohttp.WSMsgType.TEXT,):
                    raise SpdyError("text message on a SPDY tunnel")
                else:
                    return

        async def send(frame: bytes) -> None:
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_bytes(frame)

        session = PortForwardSession(send, target, self.log)
        self.sessions.add(session)
        self._sockets.add(ws)
        self.log(f"port-forward to {target.description} opened")
        try:
            await session.run(receive())
        finally:
            self.sessions.discard(session)
            self._sockets.discard(ws)
            with contextlib.suppress(Exception):
                await ws.close()
            self.log(f"port-forward to {target.description} closed")
        return ws

    async def close(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"API emulator stopping"), timeout=2)
