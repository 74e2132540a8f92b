"""``xvla-edge serve BUNDLE [BUNDLE ...]``: serve bundles to existing X-VLA clients and to robots.

One process serves several bundles: robots' bundles, one per domain, and server bundles (``xvla-edge export
--domains``), each serving every domain it lists from one backbone (``domain_id`` of a request picks the
bundle, and the domain within a server bundle): ``POST /act`` (the
official X-VLA contract, so its evaluation clients work unchanged), a msgpack websocket at ``/ws`` (and
``/``) for :class:`runtime.remote.client.RemotePolicy` and openpi-style clients, ``/healthz`` and ``/metrics``
(:mod:`xvla_edge.serve.app`). Binds 127.0.0.1 by default; any other address needs a token
(``--token-file``, ``--token`` or ``XVLA_SERVE_TOKEN``), which every request must then carry, unless
``--allow-unauthenticated`` opts into lab mode (for clients that cannot send one, on a trusted network; announced
by a warning). File-path images are refused unless ``--image-dir`` names the one directory they may come from.
``--connection-info PATH`` writes the official server's ``info.json`` for clients that wait for it
(:mod:`xvla_edge.serve.connection_info`); ``--ws-layout`` reads another client's websocket messages, such as
openpi's (:mod:`xvla_edge.serve.client_layouts`).

``--ray`` serves the same endpoints from Ray Serve (:mod:`xvla_edge.serve.ray_app`, the ``[fleet]`` extra): a
local Ray instance, or the cluster at ``--address``; requests batched per domain, replicas scaled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from pathlib import Path

from runtime.backends.names import AUTO, CHOICES, DEVICES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE",
                   help="bundle directories: one per domain, or server bundles (no domain served twice)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=port_number, default=8000,
                   help="TCP port (default 8000; 0: a free one, printed and written to --connection-info)")
    p.add_argument("--backend", default=AUTO, choices=CHOICES)
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the token every request must carry (first line)")
    p.add_argument("--token", default=None, help="the token itself (visible in the process list: prefer "
                   "--token-file or XVLA_SERVE_TOKEN)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="lab mode: serve a non-loopback --host without a token, for clients that cannot send one "
                        "(the official ones), on a trusted network only; never the default")
    p.add_argument("--connection-info", type=Path, default=None, metavar="PATH",
                   help="write the official server's info.json here (host, port, job_id, node_list) for clients' "
                        "--connection_info; refused if it exists, removed on a clean stop")
    p.add_argument("--ws-layout", default=None, metavar="NAME|FILE",
                   help="read websocket messages of another client's layout: openpi-libero, openpi-droid, "
                        "openpi-aloha, or a JSON layout file")
    p.add_argument("--ws-domain", type=int, default=None,
                   help="the domain of --ws-layout's messages (default: the one domain served)")
    p.add_argument("--image-dir", type=Path, default=None,
                   help="the only directory file-path images may be read from (default: file paths refused)")
    p.add_argument("--max-body-mb", type=positive(float, 1024), default=32.0,
                   help="largest /act request body, MiB (default 32)")
    p.add_argument("--max-frame-mb", type=positive(float, 1024), default=8.0,
                   help="largest websocket frame, MiB (default 8: three 1280×720 views; each open connection may "
                        "hold one)")
    p.add_argument("--max-image-pixels", type=positive(int, 1 << 28), default=4096 * 4096,
                   help="largest image, width × height (default 4096²)")
    p.add_argument("--max-active", type=positive(int, 1024), default=None,
                   help="requests read, decoded or computed at once, each holding up to ~5× --max-body-mb; one "
                        "beyond them waits up to 5 s, then is answered 503 (default 4; with --ray 64)")
    ray = p.add_argument_group("Ray Serve (--ray, the [fleet] extra)")
    ray.add_argument("--ray", action="store_true", help="serve on Ray Serve: batching, replicas, a cluster")
    ray.add_argument("--address", default=None, help="Ray cluster to join, e.g. 'auto' or ray://head:10001 "
                     "(default: start a local Ray instance)")
    ray.add_argument("--max-batch-size", type=positive(int, 64), default=None,
                     help="requests computed together (default: each bundle's largest --batch-sizes)")
    ray.add_argument("--batch-wait-ms", type=positive(float, 1000), default=10.0,
                     help="longest wait for a batch to fill (default 10 ms)")
    ray.add_argument("--replicas", type=positive(int, 1024), default=1, help="replicas per bundle (no autoscaling)")
    ray.add_argument("--max-replicas", type=positive(int, 1024), default=None,
                     help="autoscale each bundle between --replicas and this many replicas")
    ray.add_argument("--target-ongoing-requests", type=positive(float, 1024), default=8.0,
                     help="autoscaling target: ongoing requests per replica (default 8)")
    ray.add_argument("--num-cpus", type=positive(float, 1024), default=1.0, help="CPUs per replica (default 1)")
    ray.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica (default 0; 1 with --device cuda)")
    ray.add_argument("--threads", type=positive(int, 1024), default=None, help="intra-op threads per replica")


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port 0 ... 65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0 ... 65535, got {port}")
    return port


def positive(kind: type, high: float):  # noqa: ANN201 - an argparse type
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number > 0 and <= {high}, got {text!r}") from None
        if not 0 < value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected a number > 0 and <= {high}, got {text!r}")
        return value

    return parse


def read_token(args: argparse.Namespace) -> str | None:
    """The token from ``--token-file``, ``--token`` or ``XVLA_SERVE_TOKEN`` (None: none given), checked by the
    rule of :mod:`xvla_edge.web.auth`; a refusal names where the token came from."""
    from xvla_edge.web.auth import TokenError, check_token, read_token_file
    from xvla_edge.serve.server import ServeError

    given = [name for name, value in (("--token", args.token), ("--token-file", args.token_file)) if value]
    if len(given) > 1:
        raise ServeError("give one of --token and --token-file")
    if args.token_file is not None:
        source, read = f"--token-file {args.token_file}", lambda: read_token_file(args.token_file)
    elif args.token:
        source, read = "--token", lambda: check_token(args.token)
    elif os.environ.get("XVLA_SERVE_TOKEN"):
        source, read = "XVLA_SERVE_TOKEN", lambda: check_token(os.environ["XVLA_SERVE_TOKEN"])
    else:
        return None
    try:
        return read()
    except TokenError as exc:
        raise ServeError(f"{source}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from xvla.extras import needs
    from xvla_edge.serve.client_layouts import for_domain, load_layout
    from xvla_edge.serve.connection_info import check_free, published
    from xvla_edge.serve.server import ServeError, check_exposure

    token = read_token(args)  # the options first: they are wrong whatever is installed
    check_exposure(args.host, token, allow_unauthenticated=args.allow_unauthenticated)
    if args.image_dir is not None and not args.image_dir.is_dir():
        raise ServeError(f"--image-dir {args.image_dir}: not a directory")
    if args.ws_domain is not None and args.ws_layout is None:
        raise ServeError("--ws-domain names the domain of --ws-layout's messages: give --ws-layout too")
    if args.ray:
        for given, flag in ((args.ws_layout, "--ws-layout"), (args.connection_info, "--connection-info"),
                            (args.port == 0, "--port 0")):
            if given:
                raise ServeError(f"{flag} is not supported with --ray yet: serve without --ray")
    layout = load_layout(args.ws_layout) if args.ws_layout else None
    if args.connection_info is not None:
        check_free(args.connection_info)
    with needs("serve"):
        import fastapi  # noqa: F401
        import httptools  # noqa: F401
        import msgpack  # noqa: F401
        import uvicorn  # noqa: F401
    from xvla_edge.serve.app import create_app
    from xvla_edge.serve.bundles import BundleSet
    from xvla_edge.serve.request import Limits
    from xvla_edge.serve.server import bind, lab_mode_warning, uvicorn_server

    limits = Limits(max_body_bytes=int(args.max_body_mb * (1 << 20)), max_frame_bytes=int(args.max_frame_mb * (1 << 20)),
                    max_image_pixels=args.max_image_pixels,
                    image_dir=args.image_dir, max_active=args.max_active or Limits.max_active)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.ray:
        return run_ray(args, token, limits)
    sock = bind(args.host, args.port)
    bound, port = sock.getsockname()[:2]
    bundles = BundleSet.load(args.bundles, backend=args.backend, device=args.device)
    try:
        if layout is not None:
            layout = for_domain(layout, args.ws_domain, bundles.domains)
        for domain, served in sorted(bundles.served.items()):
            print(f"domain {domain}: {served.path} (bundle {served.manifest.bundle_id[:12]}, "
                  f"{served.manifest.precision}, {served.policy.backend.__class__.__name__})", flush=True)
        print(f"serving on http://{args.host}:{port} (POST /act, websocket /ws, /healthz, /metrics)"
              f"{' — token required' if token else ''}"
              f"{f'; websocket layout {layout.name} for domain {layout.domain_id}' if layout else ''}", flush=True)
        if args.allow_unauthenticated:
            logging.getLogger("xvla_edge.serve").warning(lab_mode_warning(args.host, port))
        app = create_app(bundles, limits, token, allow_unauthenticated=args.allow_unauthenticated, layout=layout)
        with contextlib.ExitStack() as stack:
            if args.connection_info is not None:
                info = stack.enter_context(published(args.connection_info, bound, port))
                print(f"connection info: {info.path} {json.dumps(info.fields)}", flush=True)
            uvicorn_server(app).run(sockets=[sock])
    finally:
        bundles.close()
        sock.close()
    return 0


def run_ray(args: argparse.Namespace, token: str | None, limits) -> int:  # noqa: ANN001 - Limits, imported late
    """Serve on Ray Serve until interrupted (a local Ray instance, or the cluster at ``--address``)."""
    from xvla.extras import needs
    from xvla_edge.serve.server import ServeError

    with needs("fleet"):
        import ray
        from ray import serve
    from xvla_edge.serve.ray_app import FleetOptions, build_app
    from xvla_edge.serve.server import lab_mode_warning

    if args.max_replicas is not None and args.max_replicas < args.replicas:
        raise ServeError(f"--max-replicas {args.max_replicas} is below --replicas {args.replicas}")
    if not 0 <= args.num_gpus <= 64:
        raise ServeError(f"--num-gpus {args.num_gpus}: expected 0 ... 64")
    autoscaling = None if args.max_replicas is None else {
        "min_replicas": args.replicas, "max_replicas": args.max_replicas,
        "target_ongoing_requests": args.target_ongoing_requests}
    opts = FleetOptions(
        bundles=[str(b) for b in args.bundles], backend=args.backend, device=args.device, threads=args.threads,
        max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000,
        num_replicas=args.replicas, autoscaling=autoscaling, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        token=token, allow_unauthenticated=args.allow_unauthenticated,
        limits={"max_body_bytes": limits.max_body_bytes, "max_frame_bytes": limits.max_frame_bytes,
                             "max_image_pixels": limits.max_image_pixels,
                             "image_dir": str(limits.image_dir) if limits.image_dir else None,
                             **({"max_active": args.max_active} if args.max_active else {})})
    app = build_app(opts)  # reads and checks every manifest before Ray starts
    if args.allow_unauthenticated:
        logging.getLogger("xvla_edge.serve").warning(lab_mode_warning(args.host, args.port))
    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    print(f"serving {len(args.bundles)} bundle(s) on Ray Serve at http://{args.host}:{args.port} (POST /act, "
          f"websocket /ws, /healthz, /metrics){' — token required' if token else ''}; Ctrl-C stops", flush=True)
    serve.run(app, name="xvla", route_prefix="/", blocking=True)
    return 0
