"""A policy served by another machine: :mod:`.client` (``RemotePolicy``) and :mod:`.wire` (its msgpack frames)."""
