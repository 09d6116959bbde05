"""Request bodies against a real daphne worker: refused from the headers when declared too
large, counted when chunked, never parsed or held in memory whole by the HTTP layer."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from tests.support.processes import Stack, peak_rss_mb, reset_peak_rss
from tests.support.waiting import eventually

MB = 1024 * 1024


@pytest.fixture(scope="module")
def worker():
    stack = Stack(redis=False, NOTEBOOK_MAX_UPLOAD_BYTES=str(8 * MB), REQUEST_MAX_BODY_BYTES=str(9 * MB))
    port = stack.start_worker()
    try:
        yield stack, port
    finally:
        stack.close()


def post(port: int, headers: str, body_chunks, read_timeout: float = 20) -> tuple[bytes, float]:
    """Send a request (stopping early if the server answers); return the reply and its time."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(headers.encode())
        s.setblocking(False)
        reply = b""
        for chunk in body_chunks:
            with contextlib.suppress(BlockingIOError):
                reply += s.recv(65536)
            if reply:
                break
            s.setblocking(True)
            try:
                s.sendall(chunk)
            except OSError:
                break
            s.setblocking(False)
        s.setblocking(True)
        s.settimeout(read_timeout)
        while b"\r\n\r\n" not in reply:
            data = s.recv(65536)
            if not data:
                break
            reply += data
    return reply, time.monotonic() - start


def multipart(size: int) -> tuple[str, list[bytes]]:
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.ipynb"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunks = [head] + [b"x" * MB] * (size // MB) + [tail]
    return f"multipart/form-data; boundary={boundary}", chunks


def test_a_declared_body_over_the_limit_is_refused_from_its_headers(worker):
    stack, port = worker
    ctype, chunks = multipart(60 * MB)
    length = sum(map(len, chunks))
    headers = (
        f"POST /notebooks/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    before = reset_peak_rss(stack.workers[port].pid)
    reply, seconds = post(port, headers, chunks)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"Request body too large: the server accepts at most 9.0 MB." in reply
    assert seconds < 5
    assert peak_rss_mb(stack.workers[port].pid) - before < 20


def test_a_chunked_body_is_counted_and_refused_past_the_limit(worker):
    stack, port = worker
    headers = (
        "POST /notebooks/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * MB
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n"] * 30 + [b"0\r\n\r\n"]
    before = reset_peak_rss(stack.workers[port].pid)
    reply, _ = post(port, headers, chunks)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert peak_rss_mb(stack.workers[port].pid) - before < 20


def test_a_body_within_the_limit_is_not_parsed_in_memory_by_the_http_layer(worker):
    """Twisted used to parse a multipart body in memory (about 11x its size) before Django."""
    stack, port = worker
    ctype, chunks = multipart(8 * MB)
    length = sum(map(len, chunks))
    headers = (
        f"POST /notebooks/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    before = reset_peak_rss(stack.workers[port].pid)
    reply, _ = post(port, headers, chunks)
    assert reply.split(b"\r\n")[0] in (b"HTTP/1.1 302 Found", b"HTTP/1.1 403 Forbidden"), reply[:200]
    assert peak_rss_mb(stack.workers[port].pid) - before < 40


def test_the_workers_access_log_has_no_share_tokens(worker):
    stack, port = worker
    token = "SeCrEtToKeN1234567890abcdef"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET /s/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        while s.recv(65536):
            pass
    eventually(lambda: "/s/<token>" in stack.log(port), timeout=5, what="the request in the access log")
    assert token not in stack.log(port)
