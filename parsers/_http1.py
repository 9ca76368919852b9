"""HTTP/1.x request/response pairing over reassembled TCP streams.

Requests and responses pair in order on a connection (keep-alive reuses it; pipelined
requests are answered in the order sent). A message is its head (start line, headers, blank
line) plus a body delimited by ``Content-Length`` or ``Transfer-Encoding: chunked`` (chunk
sizes, extensions and trailers); requests without either have no body; responses to HEAD,
1xx, 204 and 304 have none; other responses without either end when the server closes.
Interim ``1xx`` responses (``100 Continue``) precede the final one and do not complete the
request; ``101 Switching Protocols`` ends HTTP on the connection.

Times per request: ``start`` = capture time of the segment carrying the request's first byte,
``first`` = the final response's first byte (TTFB), ``end`` = its last byte. ``http.latency_ms``
reports start → end (what the client waited for the whole answer); tshark's ``http.time`` is
measured from the frame that completed the request to the frame that completed the response,
which equals start → end for requests that fit in one segment.
"""

from __future__ import annotations

import re
from collections import deque

import polars as pl

from parsers._reassembly import Delivery

MAX_HEAD = 1 << 16
METHODS = (b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
           b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT", b"SEARCH")
_REQUEST_LINE = re.compile(rb"(?:" + b"|".join(METHODS) + rb") \S+ HTTP/1\.[01]\r?\n")
_REQUEST_START = re.compile(rb"(?m)^(?:" + b"|".join(METHODS) + rb") \S+ HTTP/1\.[01]\r?$")
_STATUS_START = re.compile(rb"(?m)^HTTP/1\.[01] \d{3}")


def looks_like_http(data: bytes, from_client: bool) -> bool:
    if from_client:
        line_end = data.find(b"\n", 0, 8192)
        return bool(_REQUEST_LINE.match(data[:line_end + 1] if line_end >= 0 else data[:8192] + b"\n")) \
            if line_end >= 0 else any(data.startswith(m + b" ") for m in METHODS)
    return data.startswith(b"HTTP/1.")


class _Body:
    """Skips a message body: by length, chunked, or until the connection closes."""

    __slots__ = ("mode", "left", "line", "state")

    def __init__(self, mode: str, left: int = 0) -> None:
        self.mode = mode  # "length" | "chunked" | "close"
        self.left = left
        self.line = b""
        self.state = "size"  # chunked: size | data | crlf | trailer

    def feed(self, data: bytes, p: int) -> tuple[int, bool]:
        """Consume body bytes from ``p``; returns (new position, body complete)."""
        n = len(data)
        if self.mode == "close":
            return n, False
        if self.mode == "length":
            take = min(self.left, n - p)
            self.left -= take
            return p + take, self.left == 0
        while p < n:
            if self.state == "data":
                take = min(self.left, n - p)
                self.left -= take
                p += take
                if self.left == 0:
                    self.state, self.left = "crlf", 2
                continue
            if self.state == "crlf":
                take = min(self.left, n - p)
                self.left -= take
                p += take
                if self.left == 0:
                    self.state = "size"
                continue
            nl = data.find(b"\n", p)
            if nl < 0:
                self.line += data[p:]
                if len(self.line) > 4096:
                    raise ValueError("chunk size line too long")
                return n, False
            line = (self.line + data[p:nl]).strip()
            self.line = b""
            p = nl + 1
            if self.state == "trailer":
                if not line:
                    return p, True
                continue
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                self.state = "trailer"
            else:
                self.state, self.left = "data", size
        return p, False


def _head_fields(head: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    lines = head.split(b"\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0].strip().split(b" ", 2), headers


def _body_of(headers: dict[bytes, bytes], response: bool) -> _Body | None:
    te = headers.get(b"transfer-encoding", b"").lower()
    if b"chunked" in te:
        return _Body("chunked")
    cl = headers.get(b"content-length")
    if cl is not None:
        n = int(cl.split(b",")[0].strip())
        if n < 0:
            raise ValueError("negative Content-Length")
        return _Body("length", n) if n else None
    return _Body("close") if response else None


class _Side:
    __slots__ = ("buf", "buf_ts", "buf_frame", "body", "lost", "msg")

    def __init__(self) -> None:
        self.buf = b""
        self.buf_ts = 0
        self.buf_frame = 0
        self.body: _Body | None = None
        self.lost = False  # resynchronising after a gap or a parse error
        self.msg: list | None = None  # the message whose body is being read


class HttpConn:
    __slots__ = ("client", "server", "queue", "dead")

    def __init__(self) -> None:
        self.client, self.server = _Side(), _Side()
        self.queue: deque[list] = deque()  # [method, target, start_ts, start_frame, interim statuses]
        self.dead = False


class Http1:
    """HTTP/1.x exchanges of all connections. ``samples``: (stream, method, target, status,
    start_ns, first_ns, end_ns, request's first frame, response's last frame, interim statuses)."""

    def __init__(self) -> None:
        self.conns: dict[int, HttpConn] = {}
        self.samples: list[tuple] = []
        self.errors = 0  # framing errors (resynchronised)
        self.unanswered = 0
        self.unmatched = 0
        self.incomplete = 0  # requests whose body never arrived whole (not counted as requests)
        self.connections = 0  # closed and forgotten

    def process(self, dv: Delivery) -> None:
        data = dv.data
        for k, a, n, ts, frame, gap in zip(dv.key.tolist(), dv.start.tolist(), dv.length.tolist(), dv.ts.tolist(),
                                           dv.frame.tolist(), dv.gap.tolist(), strict=True):
            conn = self.conns.get(k >> 1)
            if conn is None:
                conn = self.conns[k >> 1] = HttpConn()
            if conn.dead:
                continue
            client = k & 1 == 0
            side = conn.client if client else conn.server
            if gap:
                self._gap(conn, side, k >> 1)
            try:
                if client:
                    self._client(conn, data[a:a + n], ts, frame)
                else:
                    self._server(conn, k >> 1, data[a:a + n], ts, frame)
            except (ValueError, IndexError):
                self.errors += 1
                self._gap(conn, side, k >> 1)

    def _gap(self, conn: HttpConn, side: _Side, stream: int) -> None:
        self._cut_response(stream, side)
        side.buf, side.body, side.msg, side.lost = b"", None, None, True
        self._unanswered(stream, conn)

    def _cut_response(self, stream: int, side: _Side) -> None:
        """A response whose body never arrived whole: its request stays, unanswered (tshark counts
        the request but no response either)."""
        msg = side.msg
        if side.body is not None and side.body.mode != "close" and msg is not None and msg[4] is not None:
            self.unanswered += 1
            self.samples.append((stream, msg[1], msg[2], None, msg[4], None, None, msg[7], None, msg[9]))
            side.body, side.msg = None, None

    def _unanswered(self, stream: int, conn: HttpConn) -> None:
        """Requests whose response was never seen are kept, with no status and no end."""
        self.unanswered += len(conn.queue)
        for method, target, start, frame, interim in conn.queue:
            self.samples.append((stream, method, target, None, start, None, None, frame, None, interim))
        conn.queue.clear()

    def _take_head(self, side: _Side, chunk: bytes, ts: int, frame: int, p: int, start: re.Pattern[bytes]
                   ) -> tuple[bytes | None, int]:
        """Accumulate a message head; returns (head, position after it) or (None, len(chunk))."""
        if side.lost:
            m = start.search(chunk, p)
            if m is None:
                return None, len(chunk)
            side.lost = False
            p = m.start()
        if not side.buf:
            side.buf_ts, side.buf_frame = ts, frame
        buf = side.buf + chunk[p:] if side.buf else chunk[p:]
        end = buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end, sep = buf.find(b"\n\n"), 2
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise ValueError("message head too long")
            side.buf = buf
            return None, len(chunk)
        consumed = end + sep - len(side.buf)
        side.buf = b""
        return buf[:end], p + consumed

    def _client(self, conn: HttpConn, chunk: bytes, ts: int, frame: int) -> None:
        side = conn.client
        p = 0
        while p < len(chunk):
            if side.body is not None:
                p, done = side.body.feed(chunk, p)
                if done:
                    side.body = None
                continue
            head, p = self._take_head(side, chunk, ts, frame, p, _REQUEST_START)
            if head is None:
                return
            line, headers = _head_fields(head.lstrip(b"\r\n"))
            if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
                raise ValueError("not a request line")
            conn.queue.append([line[0].decode("latin-1"), line[1].decode("latin-1"), side.buf_ts, side.buf_frame,
                               []])
            side.body = _body_of(headers, response=False)

    def _server(self, conn: HttpConn, stream: int, chunk: bytes, ts: int, frame: int) -> None:
        side = conn.server
        p = 0
        while p < len(chunk):
            if side.body is not None:
                p, done = side.body.feed(chunk, p)
                if side.msg is not None:
                    side.msg[6], side.msg[8] = ts, frame
                if done:
                    self._complete(stream, side.msg)
                    side.body, side.msg = None, None
                continue
            head, p = self._take_head(side, chunk, ts, frame, p, _STATUS_START)
            if head is None:
                return
            line, headers = _head_fields(head.lstrip(b"\r\n"))
            if len(line) < 2 or not line[0].startswith(b"HTTP/1."):
                raise ValueError("not a status line")
            status = int(line[1])
            if not conn.queue:
                self.unmatched += 1
                req = None
            elif 100 <= status < 200 and status != 101:
                conn.queue[0][4].append(status)
                continue
            else:
                req = conn.queue.popleft()
            if status == 101:
                conn.dead = True
                return
            msg = [stream, req[0] if req else "", req[1] if req else "", status, req[2] if req else None,
                   side.buf_ts, ts, req[3] if req else side.buf_frame, frame, req[4] if req else []]
            no_body = (req is not None and req[0] == "HEAD") or status in (204, 304) or status < 200
            body = None if no_body else _body_of(headers, response=True)
            if body is None:
                self._complete(stream, msg)
            else:
                side.body, side.msg = body, msg

    def _complete(self, stream: int, msg: list | None) -> None:
        if msg is not None and msg[4] is not None:
            self.samples.append(tuple(msg))

    def forget(self, stream: int) -> None:
        """A closed connection: a response read until close is complete, the rest unanswered."""
        conn = self.conns.pop(stream, None)
        if conn is not None:
            side = conn.server
            if side.body is not None and side.body.mode == "close":
                self._complete(stream, side.msg)
            self._cut_response(stream, side)
            if conn.client.body is not None and conn.client.body.mode != "close" and conn.queue:
                # the last request's body never arrived (the server had closed, or the capture
                # ended): it was never a whole request, as tshark also counts it
                conn.queue.pop()
                self.incomplete += 1
            self._unanswered(stream, conn)
            self.connections += 1

    def finish(self) -> None:
        """End of capture: responses read until close are complete; the rest is unanswered."""
        for stream in list(self.conns):
            self.forget(stream)


def sample_frame(rows: list[tuple]) -> pl.DataFrame:
    """``Http1.samples`` rows (or rows of the same layout from another engine) as a frame."""
    cols = list(zip(*rows, strict=True))
    return pl.DataFrame({
        "stream": pl.Series(cols[0], dtype=pl.Int64), "method": pl.Series(cols[1], dtype=pl.Utf8),
        "target": pl.Series(cols[2], dtype=pl.Utf8), "status": pl.Series(cols[3], dtype=pl.Int64),
        "start": pl.Series(cols[4], dtype=pl.Int64), "first": pl.Series(cols[5], dtype=pl.Int64),
        "end": pl.Series(cols[6], dtype=pl.Int64), "frame_start": pl.Series(cols[7], dtype=pl.Int64),
        "frame_end": pl.Series(cols[8], dtype=pl.Int64),
        "interim": pl.Series([",".join(map(str, x)) or None for x in cols[9]], dtype=pl.Utf8),
    })
