"""``POST /act`` on a real uvicorn server, called as the official X-VLA clients call it (requests + json_numpy)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import types

import numpy as np
import pytest

json_numpy = pytest.importorskip("json_numpy")
requests = pytest.importorskip("requests")

from runtime.policy import Policy  # noqa: E402
from runtime.types import Observation  # noqa: E402
from runtime.remote.wire import pack, unpack  # noqa: E402
from xvla_edge.serve.app import create_app  # noqa: E402
from xvla_edge.serve.request import Limits  # noqa: E402
from xvla_edge.serve.server import ServerThread  # noqa: E402

RNG = np.random.default_rng(5)
IMG = RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)
WRIST = RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)
TOKEN = "t0ken-for-the-tests-0123456789"


def body(**overrides) -> dict:
    """A request as the official LIBERO client builds it (float64 proprio, json_numpy strings), plus a seed."""
    payload = {"proprio": json_numpy.dumps(RNG.standard_normal(20)), "language_instruction": "open the drawer",
               "image0": json_numpy.dumps(IMG), "domain_id": 3, "steps": 10, "seed": 1}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def local(bundle, payload: dict) -> np.ndarray:
    """What ``Policy.act`` gives for the same request and the noise its seed names."""
    policy = Policy.load(bundle)
    images = [json_numpy.loads(payload[k]) for k in ("image0", "image1", "image2") if k in payload]
    shape = policy.chunk_shape[1:]
    obs = Observation(images, payload["language_instruction"], json_numpy.loads(payload["proprio"]),
                      noise=np.random.default_rng(payload["seed"]).standard_normal(shape, dtype=np.float32))
    return policy.act(obs, steps=payload.get("steps")).actions


@pytest.fixture
def server(bundles):
    with ServerThread(create_app(bundles, Limits(max_body_bytes=2 << 20))) as srv:
        yield srv


def test_responses_are_not_held_back_by_nagle(server):
    """Accepted connections inherit TCP_NODELAY from the listening socket; without it every response waited
    for the client's delayed ACK (~40 ms on Linux loopback)."""
    import socket

    assert server.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def metric(text: str, line: str) -> float:
    found = [row for row in text.splitlines() if row.startswith(line + " ")]
    return float(found[0].split()[-1]) if found else 0.0


def test_official_requests_get_the_chunk_policy_act_gives(server, tiny_bundle, joint_bundle):
    payload = body()
    r = requests.post(server.url + "/act", json=payload)
    assert r.status_code == 200, r.text
    action = np.array(r.json()["action"])
    assert action.shape == (30, 20)
    np.testing.assert_array_equal(action.astype(np.float32), local(tiny_bundle, payload))  # float32 → JSON → exact
    assert r.headers["X-XVLA-Bundle"] == Policy.load(tiny_bundle).manifest.bundle_id
    # domain 5 is the joint bundle: two views, its own output width
    joint = body(domain_id=5, image1=json_numpy.dumps(WRIST), proprio=json_numpy.dumps(RNG.standard_normal(14)))
    r = requests.post(server.url + "/act", json=joint)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.array(r.json()["action"], np.float32), local(joint_bundle, joint))
    # without a seed each chunk has fresh noise, as the official server's torch.randn
    a, b = (np.array(requests.post(server.url + "/act", json=body(seed=None)).json()["action"]) for _ in range(2))
    assert a.shape == b.shape == (30, 20) and not np.array_equal(a, b)


@pytest.mark.parametrize("overrides, status, message", [
    ({"domain_id": 9}, 400, "domain_id: 9 is not served here; domains served: 3, 5"),
    ({"proprio": None}, 400, "proprio: missing"),
    ({"language_instruction": None}, 400, "language_instruction: missing"),
    ({"image0": None}, 400, "no images"),
    ({"proprio": json_numpy.dumps(np.zeros(7))}, 400, "proprio: domain 3 takes 20 values, got 7"),
    ({"image0": json_numpy.dumps(IMG[:64, :64].astype(np.float64))}, 400, "image0: expected an HxWx3 uint8 array"),
    ({"image0": json_numpy.dumps(IMG[:, :, :1])}, 400, "image0: expected an HxWx3 uint8 array"),
    ({"image1": json_numpy.dumps(WRIST)}, 400, "image1: domain 3 (bundle tiny-fp32) takes 1 view(s); send image0"),
    ({"steps": 0}, 400, "steps: expected an integer 1 ... 100"),
    ({"image0": json_numpy.dumps("/etc/hostname")}, 403, "image0: file-path images are refused"),
    ({"image0": json_numpy.dumps(np.zeros((2048, 1024, 3), np.uint8))}, 413, "exceeds the limit of 2097152"),
    ({"image0": json_numpy.dumps(np.zeros((1, 5000, 3), np.uint8))}, 400, "5000x1 pixels; at most 4096 per side"),
])
def test_bad_requests_are_refused_with_the_field_named(server, overrides, status, message):
    r = requests.post(server.url + "/act", json=body(**overrides))
    assert (r.status_code, r.json()) == (status, {"error": r.json()["error"]})
    assert message in r.json()["error"]


def test_a_request_is_checked_once_against_its_bundle(server, monkeypatch):
    """The server checks the observation where it enters (Policy.check); Policy.act trusts what it made."""
    from runtime import policy as policy_module

    calls = []
    real = policy_module.check_views
    monkeypatch.setattr(policy_module, "check_views", lambda images: calls.append(len(images)) or real(images))
    assert requests.post(server.url + "/act", json=body()).status_code == 200
    assert calls == [1]


def test_oversize_bodies_are_refused_unread_whether_declared_or_streamed(server):
    declared = requests.post(server.url + "/act", data=b"x" * (3 << 20), headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and "exceeds the limit of 2097152" in declared.json()["error"]
    streamed = requests.post(server.url + "/act", data=(b"x" * (1 << 16) for _ in range(64)))  # chunked: no length
    assert streamed.status_code == 413
    assert requests.post(server.url + "/act", data=b"{nope").status_code == 400


@pytest.mark.server
def test_a_token_guards_everything_but_healthz(bundles):
    with ServerThread(create_app(bundles, Limits(), token=TOKEN)) as srv:
        assert requests.post(srv.url + "/act", json=body()).status_code == 401
        wrong = requests.post(srv.url + "/act", json=body(), headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert requests.post(srv.url + "/act", json=body(), headers={"Authorization": f"Bearer {TOKEN}"}).ok
        assert requests.post(srv.url + f"/act?token={TOKEN}", json=body()).ok  # clients that only take a URL
        assert requests.get(srv.url + "/metrics").status_code == 401
        assert requests.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).ok
        assert requests.get(srv.url + "/healthz").json() == {"status": "ok", "domains": [3, 5],
                                                             "allow_unauthenticated": False}
        metrics = requests.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert "\nxvla_serve_unauthenticated 0.0\n" in metrics


@pytest.mark.server
def test_lab_mode_serves_without_a_token_and_says_so(bundles):
    """``--allow-unauthenticated`` (the official clients cannot send a token): no token asked, and /healthz and
    /metrics say so. On a network address: tests/xvla_edge/serve/test_official_clients.py."""
    with ServerThread(create_app(bundles, Limits(), allow_unauthenticated=True)) as srv:
        assert requests.post(srv.url + "/act", json=body()).ok
        assert requests.get(srv.url + "/healthz").json()["allow_unauthenticated"] is True
        assert "\nxvla_serve_unauthenticated 1.0\n" in requests.get(srv.url + "/metrics").text
    with pytest.raises(ValueError, match="serves without a token: give one or the other"):
        create_app(bundles, Limits(), TOKEN, allow_unauthenticated=True)


@pytest.mark.server
def test_file_path_images_only_from_the_allowed_directory(bundles, tiny_bundle, tmp_path):
    from PIL import Image

    allowed = tmp_path / "frames"
    allowed.mkdir()
    Image.fromarray(IMG).save(allowed / "cam0.png")
    Image.fromarray(IMG).save(tmp_path / "outside.png")
    with ServerThread(create_app(bundles, Limits(image_dir=allowed))) as srv:
        payload = body(image0=json_numpy.dumps("cam0.png"))
        r = requests.post(srv.url + "/act", json=payload)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.array(r.json()["action"], np.float32),
                                      local(tiny_bundle, {**payload, "image0": json_numpy.dumps(IMG)}))
        for path in ("../outside.png", str(tmp_path / "outside.png"), "../../../../etc/passwd"):
            r = requests.post(srv.url + "/act", json=body(image0=json_numpy.dumps(path)))
            assert r.status_code == 403 and "must lie in the server's image directory" in r.json()["error"]


def test_concurrent_clients_of_one_domain_each_get_their_own_chunk(server, tiny_bundle):
    """Policy computes one chunk at a time: four clients at once are queued, none gets another's chunk."""
    payloads = [body(seed=100 + i, language_instruction=f"task {i}") for i in range(4)]
    results: dict[int, np.ndarray] = {}

    def client(i: int) -> None:
        for _ in range(3):
            r = requests.post(server.url + "/act", json=payloads[i])
            results[i] = np.array(r.json()["action"], np.float32)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, payload in enumerate(payloads):
        np.testing.assert_array_equal(results[i], local(tiny_bundle, payload))


def test_metrics_count_requests_errors_and_latency(server):
    before = requests.get(server.url + "/metrics").text
    requests.post(server.url + "/act", json=body())
    requests.post(server.url + "/act", json=body(domain_id=42))
    after = requests.get(server.url + "/metrics").text
    for line, delta in [('xvla_serve_requests_total{endpoint="act",status="200"}', 1),
                        ('xvla_serve_requests_total{endpoint="act",status="400"}', 1),
                        ('xvla_serve_errors_total{kind="unknown_domain"}', 1),
                        ('xvla_serve_request_seconds_count{endpoint="act"}', 2),
                        ('xvla_serve_inference_seconds_count{domain="3"}', 1)]:
        assert metric(after, line) - metric(before, line) == delta, line
    assert 'xvla_serve_bundle_info{backend="auto",bundle_id="' in after


def test_a_failing_backend_is_a_500_and_the_server_keeps_serving(server, bundles, monkeypatch):
    backend = bundles.served[3].policy.backend

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(backend, "denoise", broken)
    r = requests.post(server.url + "/act", json=body())
    assert r.status_code == 500 and r.json() == {"error": "inference failed on the server (see its log)"}
    monkeypatch.undo()
    t0 = time.perf_counter()
    assert requests.post(server.url + "/act", json=body()).status_code == 200
    assert time.perf_counter() - t0 < 30


class Records(logging.Handler):
    """Every log record (INFO and above) of the server's loggers, the app's and uvicorn's, while installed."""

    LOGGERS = ("xvla_edge.serve", "uvicorn", "uvicorn.error")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Records:
        self.levels = {}
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self.levels[name] = logger.level
            logger.setLevel(logging.INFO)
            logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)
            logging.getLogger(name).setLevel(self.levels[name])


HOSTILE = [  # issue 33: each was a 500 over /act with a traceback in the log
    ("proprio", {"__numpy__": "", "dtype": "(-1,)i4", "shape": [1]}, 'proprio: dtype "(-1,)i4" is not accepted'),
    ("proprio", {"__numpy__": "", "dtype": "<f4", "shape": [0, 2**63]}, "has more than 2147483648 values"),
    ("image0", {"__numpy__": "", "dtype": "|u1", "shape": [0, 2**62, 2**62]}, "has more than 2147483648 values"),
    ("language_instruction", "\ud800", "language_instruction: not valid Unicode text: a lone surrogate U+D800"),
]


def _ws_array(array: np.ndarray, **fields) -> dict:
    """An array as :mod:`runtime.remote.wire` sends it, with ``fields`` replaced."""
    return {"__ndarray__": True, "data": array.tobytes(), "dtype": array.dtype.str, "shape": list(array.shape),
            **fields}


def test_hostile_fields_are_400_over_act_and_the_websocket_and_never_a_traceback(server):
    import msgpack
    from websockets.sync.client import connect

    good = {"image0": _ws_array(IMG[:32, :32]), "language_instruction": "x",
            "proprio": _ws_array(np.zeros(20, np.float32)), "domain_id": 3}
    with Records() as log:
        for key, value, message in HOSTILE:
            payload = body(**{key: json.dumps(value) if isinstance(value, dict) else value})
            answers = []
            post = lambda: answers.append(requests.post(server.url + "/act", json=payload))  # noqa: E731
            threads = [threading.Thread(target=post) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert [(r.status_code, message in r.json()["error"]) for r in answers] == [(400, True)] * 8, \
                answers[0].text
        with connect(f"ws://{server.host}:{server.port}/ws") as ws:
            ws.recv(timeout=10)  # the metadata
            for key, value, _ in HOSTILE:
                field = _ws_array(np.zeros(0, np.uint8), dtype=value["dtype"], shape=value["shape"]) \
                    if isinstance(value, dict) else value
                frame = msgpack.Packer(unicode_errors="surrogatepass").pack({**good, key: field})
                ws.send(frame)
                answer = ws.recv(timeout=10)
                assert isinstance(answer, str) and answer.startswith("400 "), answer
            ws.send(msgpack.packb(good))  # the connection still serves
            assert unpack(ws.recv(timeout=30))["action"].shape == (30, 20)
    assert not [r for r in log.records if r.exc_info or r.levelno >= logging.ERROR]
    assert sum("refused (400)" in r.getMessage() for r in log.records) == 8 * len(HOSTILE) + len(HOSTILE)


@pytest.mark.server
def test_requests_beyond_max_active_wait_then_get_503_with_retry_after(bundles, tiny_bundle):
    """Two requests hold both slots (their bodies half sent); a third /act and a websocket frame are refused
    503 without being read, and both held requests are answered once their bodies arrive."""
    import http.client
    import socket

    from websockets.sync.client import connect

    payload = body()
    data = json.dumps(payload).encode()
    with ServerThread(create_app(bundles, Limits(max_active=2, max_wait_s=0))) as srv:
        held = []
        for _ in range(2):
            sock = socket.create_connection((srv.host, srv.port))
            sock.sendall(b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(data)).encode() + b"\r\n\r\n" + data[:1000])
            held.append(sock)
        end = time.monotonic() + 30
        while metric(requests.get(srv.url + "/metrics").text, "xvla_serve_active_requests") < 2:
            assert time.monotonic() < end, "the two requests never took their slots"
            time.sleep(0.01)
        r = requests.post(srv.url + "/act", json=payload)
        assert (r.status_code, r.headers["Retry-After"]) == (503, "1")
        assert r.json() == {"error": "the server is busy: 2 requests are being read, decoded or computed; retry"}
        with connect(f"ws://{srv.host}:{srv.port}/ws") as ws:
            ws.recv(timeout=10)
            ws.send(pack({"image0": IMG, "language_instruction": "x", "proprio": np.zeros(20), "domain_id": 3}))
            busy = "503 the server is busy: 2 requests are being read, decoded or computed; retry"
            assert ws.recv(timeout=10) == busy
        want = local(tiny_bundle, payload)
        for sock in held:
            sock.sendall(data[1000:])
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            assert reply.status == 200
            np.testing.assert_array_equal(np.array(json.loads(reply.read())["action"], np.float32), want)
            sock.close()
        assert requests.post(srv.url + "/act", json=payload).status_code == 200  # the slots are free again
        after = requests.get(srv.url + "/metrics").text
        assert metric(after, "xvla_serve_active_requests") == 0
        assert metric(after, 'xvla_serve_errors_total{kind="busy"}') == 2


def test_a_refused_request_frees_its_body_without_the_garbage_collector(server):
    """A refusal's traceback held the request's frames, the body among them, in a reference cycle (through the
    worker thread's future): 32 refused 29 MB bodies stayed resident until a collection happened to run."""
    import gc

    def alive() -> list[str]:
        return [f"{o.f_code.co_name}" for o in gc.get_objects()
                if isinstance(o, types.FrameType) and o.f_code.co_name in ("act", "parse_body", "_read_body")]

    gc.collect()
    gc.disable()
    try:
        for payload in ({"proprio": None}, {"proprio": json_numpy.dumps(np.zeros(5000))}, {"image0": "not json"}):
            assert requests.post(server.url + "/act", json=body(**payload)).status_code == 400
        assert requests.post(server.url + "/act", json=body(proprio=[0.0] * 20, domain_id=9)).status_code == 400
        assert alive() == []
    finally:
        gc.enable()


def exchange(srv, data: bytes, piece: int = 0) -> bytes:
    """``data`` sent on a raw socket (in ``piece``-byte writes), then everything the server sends until it closes."""
    import socket

    with socket.create_connection((srv.host, srv.port), timeout=30) as sock:
        try:
            for start in range(0, len(data), piece or len(data)):
                sock.sendall(data[start:start + (piece or len(data))])
        except OSError:  # the server refused the head and closed while the rest was on its way
            pass
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 16):
                reply += chunk
    return reply


WS_HEAD = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize("data, piece, status", [
    (b"POST /act HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 2\r\n\r\n{}", 0, 431),
    (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(1000)) + b"\r\n", 0,
     431),
    (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", 8192, 431),  # a head that never ends
    (WS_HEAD + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n", 0, 431),  # a websocket handshake is a request too
    (b"GET /healthz?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 0, 414),
], ids=["one-100k-header", "1000-headers", "endless-header", "websocket-handshake", "100k-url"])
def test_a_request_head_over_32_kib_is_answered_431_and_closed(server, data, piece, status):
    """A 100 KB header was closed with no reply; a 1 MB one was read whole and served."""
    reply = exchange(server, data, piece)
    head, _, body_ = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == {414: b"HTTP/1.1 414 URI Too Long",
                                      431: b"HTTP/1.1 431 Request Header Fields Too Large"}[status]
    part = "request line" if status == 414 else "request line and headers"
    assert json.loads(body_) == {"error": f"{part} larger than 32768 bytes"}
    assert b"connection: close" in head


def test_heads_under_the_limit_are_served_however_they_arrive(server):
    big = b"X-Big: " + b"a" * 30_000 + b"\r\n"
    assert exchange(server, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n" + big + b"\r\n", 1000).startswith(
        b"HTTP/1.1 200 OK")
    two = (b"GET /healthz HTTP/1.1\r\n" + big + b"\r\n"
           + b"GET /healthz HTTP/1.1\r\nConnection: close\r\n" + big + b"\r\n")
    assert exchange(server, two, 3000).count(b"HTTP/1.1 200 OK") == 2  # each request's head counts alone
