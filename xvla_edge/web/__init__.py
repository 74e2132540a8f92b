"""HTTP plumbing shared by the daemon's health/control server and ``xvla-edge serve``: the token and loopback
rules (:mod:`~xvla_edge.web.auth`), Prometheus registries with the build info and the package version
(:mod:`~xvla_edge.web.metrics`)."""
