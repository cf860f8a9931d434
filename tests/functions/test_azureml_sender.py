"""The sender process (HTTP exchanges off the pipeline's process), against small real HTTP servers."""

import gzip
import http.server
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures module
pytest_plugins = ["fixtures_azureml"]

from transforms.functions.azureml.sender import (  # noqa: E402
    Exchange,
    PendingExchange,
    SenderClosed,
    SenderProcess,
)


class _Server:
    """A loopback HTTP/1.1 server whose handler a test chooses; records the client ports it saw."""

    def __init__(self, handle):
        outer = self
        self.ports: list[int] = []
        self.requests: list[tuple[dict, bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.ports.append(self.client_address[1])
                outer.requests.append((dict(self.headers), body))
                handle(self, body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/score?api-version=2"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _answer(handler, status=200, body=b'{"ok":1}', headers=()):
    try:
        handler.send_response(status)
        for k, v in headers:
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (timeout tests)
        handler.close_connection = True


@pytest.fixture
def server():
    made = []

    def make(handle=lambda h, body: _answer(h)):
        s = _Server(handle)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def sender():
    made = []

    def make(url, threads=1, timeout_s=10.0, headers=None):
        s = SenderProcess(url, headers or {"Content-Type": "application/json"}, 5.0, timeout_s, threads=threads)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_posts_the_body_and_headers_and_keeps_the_connection(server, sender):
    srv = server()
    s = sender(srv.url, headers={"Content-Type": "application/json", "Authorization": "Bearer k-123"})
    answers = [s.exchange(b'{"n":%d}' % i) for i in range(5)]
    assert answers == [Exchange(200, None, None, b'{"ok":1}')] * 5
    assert [body for _, body in srv.requests] == [b'{"n":%d}' % i for i in range(5)]
    headers = srv.requests[0][0]
    assert headers["Authorization"] == "Bearer k-123" and headers["Content-Type"] == "application/json"
    assert len(set(srv.ports)) == 1  # one keep-alive connection for all five


def test_the_path_keeps_its_query_string(server, sender):
    seen = []
    srv = server(lambda h, body: (seen.append(h.path), _answer(h)))
    sender(srv.url).exchange(b"{}")
    assert seen == ["/score?api-version=2"]


def test_statuses_bodies_and_retry_after_are_passed_back(server, sender):
    srv = server(lambda h, body: _answer(h, 503, b'{"message":"busy"}', [("Retry-After", "7")]))
    assert sender(srv.url).exchange(b"{}") == Exchange(503, "7", None, b'{"message":"busy"}')


def test_a_server_that_closes_every_connection(server, sender):
    srv = server(lambda h, body: _answer(h, headers=[("Connection", "close")]))
    s = sender(srv.url)
    assert [s.exchange(b"{}").status for _ in range(4)] == [200] * 4
    assert len(set(srv.ports)) == 4


def test_an_idle_connection_the_server_closed_is_not_reused(server, sender):
    closed = threading.Event()

    def answer_then_hang_up(h, body):
        _answer(h)  # no "Connection: close": the client thinks it may reuse the connection
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True
        closed.set()

    srv = server(answer_then_hang_up)
    s = sender(srv.url)
    assert s.exchange(b"{}").status == 200
    assert closed.wait(10)
    time.sleep(0.2)  # the FIN reaches the client's socket
    assert s.exchange(b"{}") == Exchange(200, None, None, b'{"ok":1}')
    assert len(set(srv.ports)) == 2


def test_gzip_bodies_are_decoded(server, sender):
    srv = server(lambda h, body: _answer(h, body=gzip.compress(b'{"a":[1,2]}'), headers=[("Content-Encoding", "gzip")]))
    assert sender(srv.url).exchange(b"{}").content == b'{"a":[1,2]}'


def test_timeout_and_connection_refused(server, sender):
    srv = server(lambda h, body: (time.sleep(3), _answer(h)))
    t0 = time.monotonic()
    assert sender(srv.url, timeout_s=0.3).exchange(b"{}") == Exchange(None, None, "timeout", b"")
    assert time.monotonic() - t0 < 2.5
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert sender(f"http://127.0.0.1:{port}/score").exchange(b"{}").error == "ConnectionRefusedError"


def test_parallel_requests_are_in_flight_together(server, sender):
    barrier = threading.Barrier(3, timeout=20)

    def wait_for_all(h, body):
        barrier.wait()  # breaks (and the test fails) unless three requests are in flight at once
        _answer(h, body=body)

    srv = server(wait_for_all)
    s = sender(srv.url, threads=3)
    out = [None] * 3
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, s.exchange(b"%d" % i))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [o.content for o in out] == [b"0", b"1", b"2"]  # each caller gets its own answer


def _child_pid(s: SenderProcess) -> int:
    return s._proc.pid


def test_a_dead_child_fails_its_requests_and_is_replaced(server, sender):
    arrived = threading.Event()
    srv = server(lambda h, body: (arrived.set(), time.sleep(1.5), _answer(h)) if body == b"slow" else _answer(h))
    s = sender(srv.url)
    assert s.exchange(b"{}").status == 200
    first = _child_pid(s)
    result = []
    t = threading.Thread(target=lambda: result.append(s.exchange(b"slow")))
    t.start()
    assert arrived.wait(10)
    os.kill(first, signal.SIGKILL)
    t.join(20)
    assert result == [Exchange(None, None, "SenderProcessExited", b"")]
    assert s.exchange(b"{}").status == 200 and _child_pid(s) != first


def test_a_child_whose_answers_ended_is_replaced_even_before_waitpid_reports_it(server, sender):
    # A killed child closes its pipes a moment before waitpid() reports it: a request sent in
    # that moment went into a pipe nobody would answer, and the job hung (seen once under load).
    # Popen.poll() also says "running" while another thread holds its waitpid lock: that holds
    # the moment open here, so the next request must not be sent to the old child.
    arrived = threading.Event()
    srv = server(lambda h, body: (arrived.set(), time.sleep(1.5), _answer(h)) if body == b"slow" else _answer(h))
    s = sender(srv.url)
    assert s.exchange(b"{}").status == 200
    first = s._proc
    result = []
    t = threading.Thread(target=lambda: result.append(s.exchange(b"slow")))
    t.start()
    assert arrived.wait(10)
    first.kill()
    t.join(20)
    assert result == [Exchange(None, None, "SenderProcessExited", b"")]  # its reader saw the end
    with first._waitpid_lock:
        assert first.poll() is None  # the moment: the child looks alive
        answer = []
        call = threading.Thread(target=lambda: answer.append(s.exchange(b"{}")), daemon=True)
        call.start()
        call.join(20)
    assert answer and answer[0].status == 200
    assert s._proc is not first


def test_submit_returns_before_the_answer_and_the_answer_keeps_its_own_latency(server, sender):
    # the pipeline's thread sends a batch and goes on reading rows; the answer is picked up later,
    # and its latency is the exchange's (measured by the answers' reader), not when it was looked at
    release = threading.Event()
    srv = server(lambda h, body: (release.wait(10), time.sleep(0.2), _answer(h, body=b'{"n":%s}' % body)))
    s = sender(srv.url, threads=2)
    s.start()
    t0 = time.monotonic()
    pending = [s.submit(b"1"), s.submit(b"2")]
    assert time.monotonic() - t0 < 1.0 and not any(p.done() for p in pending)
    release.set()
    assert pending[1].result() == Exchange(200, None, None, b'{"n":2}')
    assert pending[0].result() == Exchange(200, None, None, b'{"n":1}')
    time.sleep(0.5)  # looked at late: the latency stays the exchange's
    elapsed = time.monotonic() - t0
    assert all(p.done() and 0.2 <= p.latency_s <= elapsed - 0.5 for p in pending)


def test_a_request_failed_before_it_was_written_has_no_latency():
    # (the child could not be started): its latency, in the request_latency_ms metric, is ~0
    pending = PendingExchange()
    pending._set(Exchange(None, None, "SenderProcessExited", b""))
    assert pending.done() and pending.latency_s < 1.0


def test_close_fails_a_submitted_request_waiting_for_its_answer(server, sender):
    arrived = threading.Event()
    srv = server(lambda h, body: (arrived.set(), time.sleep(2), _answer(h)))
    s = sender(srv.url)
    pending = s.submit(b"{}")
    assert arrived.wait(10)
    s.close()
    assert pending.done()
    with pytest.raises(SenderClosed):
        pending.result()
    with pytest.raises(SenderClosed):
        s.submit(b"{}")


def test_a_child_that_never_says_ready_fails_its_requests_instead_of_hanging(server, sender):
    # start() does not wait for the child (its start-up overlaps the pipeline's work): requests
    # written meanwhile wait in the pipe, and a child that dies before its "ready" fails them
    srv = server()
    s = sender(srv.url)
    good = s._config
    s._config = ("not", "a", "configuration")  # the child cannot unpack it and exits
    s.start()
    assert s.exchange(b"{}") == Exchange(None, None, "SenderProcessExited", b"")
    s._config = good
    assert s.exchange(b"{}").status == 200  # the next request starts another child
    assert len(srv.requests) == 1


def test_close_wakes_a_waiting_request(server, sender):
    arrived = threading.Event()
    srv = server(lambda h, body: (arrived.set(), time.sleep(3), _answer(h)))
    s = sender(srv.url)
    raised = []

    def call():
        try:
            s.exchange(b"{}")
        except SenderClosed:
            raised.append(True)

    t = threading.Thread(target=call)
    t.start()
    assert arrived.wait(10)
    s.close()
    t.join(10)
    assert raised == [True]
    with pytest.raises(SenderClosed):
        s.exchange(b"{}")


def test_the_key_is_not_on_the_child_command_line(server, sender):
    srv = server()
    s = sender(srv.url, headers={"Authorization": "Bearer secret-key-42"})
    assert s.exchange(b"{}").status == 200
    with open(f"/proc/{_child_pid(s)}/cmdline", "rb") as f:
        assert b"secret-key-42" not in f.read()


def test_https_verifies_the_server_against_the_ca_file(tmp_path, server, sender):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    srv = server()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    srv.httpd.socket = context.wrap_socket(srv.httpd.socket, server_side=True)
    url = srv.url.replace("http://", "https://")
    trusted = SenderProcess(url, {}, 5.0, 10.0, cafile=str(cert))
    try:
        assert trusted.exchange(b"{}") == Exchange(200, None, None, b'{"ok":1}')
    finally:
        trusted.close()
    # the default CA bundle does not know this self-signed certificate: no exchange
    assert sender(url).exchange(b"{}").error == "SSLCertVerificationError"


def test_ctrl_c_is_the_pipelines_to_handle_not_the_childs(server, sender):
    srv = server()
    s = sender(srv.url)
    assert s.exchange(b"{}").status == 200
    child = _child_pid(s)
    os.kill(child, signal.SIGINT)
    time.sleep(0.5)
    assert s.exchange(b"{}").status == 200 and _child_pid(s) == child


def test_the_child_is_started_by_open_not_by_the_first_request(fake_endpoint):
    """Its start-up (tens of ms) belongs to a DoFn's setup; a first request, or the timing of a
    ``tune-batch`` sweep, must not pay it."""
    from pipelines.serving.fake import swagger_for
    from transforms.functions.azureml import AzureMLConfig, AzureMLFunction

    ep = fake_endpoint("records")
    fn = AzureMLFunction("score", AzureMLConfig(endpoint=ep.url, swagger=swagger_for("records")))
    with fn.make_client() as client:
        proc = client._sender._proc
        assert proc is not None and proc.poll() is None and ep.log == []
        assert client.call([{"id": 1, "x": 2.0}]).results == [{"id": 1, "Scored Labels": 3.0}]
        assert client._sender._proc is proc
    assert proc.poll() is not None  # closed with the client
