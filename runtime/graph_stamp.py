"""The bundle's identity inside its graph: export writes the domain it folded into ``denoise.onnx`` as ONNX model
metadata (:data:`DOMAIN_KEY`), and a policy is only loaded when the manifest says the same. The manifest is not
covered by its own checksums, so without this a manifest edited to say ``domain_id = 7`` would run domain 3's
soft prompt and action weights under domain 7's name. A server bundle's graph is stamped with the list of the
domains whose rows it holds (:data:`DOMAINS_KEY`, ``0,3,6``), and the manifest's ``domains`` must list the same:
a domain added to the manifest would otherwise reach a graph without its row, and a robot's manifest over a
server graph (or the reverse) is refused too. Bundles exported before the stamp have none and load as before.

The metadata is read by a scan of the ONNX file's top-level protobuf fields instead of the ``onnx`` package:
that package is an export dependency and not installed on robots, and the scan needs only the wire format
(varint keys, length-delimited fields) and two field numbers of ``onnx.proto`` (``ModelProto.metadata_props``
= 14, ``StringStringEntryProto.key``/``value`` = 1/2). The graph itself (field 7) is skipped by its length,
never parsed.
"""

from __future__ import annotations

from pathlib import Path

from runtime.manifest import BundleError, Manifest

DOMAIN_KEY = "xvla_edge.domain_id"
DOMAINS_KEY = "xvla_edge.domains"  # a server bundle's domains, comma-separated, increasing
_METADATA_PROPS = 14
_KEY, _VALUE = 1, 2


def _varint(data: bytes, i: int, where: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise BundleError(f"{where}: not an ONNX model (a truncated or overlong varint at byte {i})")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes, where: str) -> list[tuple[int, int, bytes]]:
    """(field number, wire type, payload) of every field of one protobuf message; varints' payload empty."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i, where)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(data, i, where)
            out.append((number, wire, b""))
        elif wire == 2:
            size, i = _varint(data, i, where)
            if i + size > len(data):
                raise BundleError(f"{where}: not an ONNX model (field {number} runs past the end of the file)")
            out.append((number, wire, data[i:i + size]))
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            if i > len(data):
                raise BundleError(f"{where}: not an ONNX model (field {number} runs past the end of the file)")
        else:
            raise BundleError(f"{where}: not an ONNX model (wire type {wire} at field {number})")
    return out


def read_metadata(path: Path) -> dict[str, str]:
    """The model metadata (``metadata_props``) of the ONNX file at ``path``."""
    where = str(path)
    metadata = {}
    for number, wire, payload in _fields(path.read_bytes(), where):
        if number == _METADATA_PROPS and wire == 2:
            entry = {n: p for n, w, p in _fields(payload, where) if w == 2}
            try:
                metadata[entry.get(_KEY, b"").decode()] = entry.get(_VALUE, b"").decode()
            except UnicodeDecodeError:
                raise BundleError(f"{where}: not an ONNX model (metadata that is not UTF-8)") from None
    return metadata


def check_stamp(manifest: Manifest, bundle_dir: Path) -> None:
    """:class:`BundleError` when the denoise graph was exported for other domains than the manifest names."""
    path = Path(bundle_dir) / manifest.denoise.file
    metadata = read_metadata(path)
    one, listed = metadata.get(DOMAIN_KEY), metadata.get(DOMAINS_KEY)
    where = Path(bundle_dir) / "manifest.json"
    if manifest.is_server:
        named = ",".join(map(str, manifest.domain_ids))
        if one is not None or (listed is not None and listed != named):
            graph = f"domain {one}" if one is not None else f"domains {listed}"
            raise BundleError(f"{where}: domains = {named}, but {path.name} was exported for {graph} (its "
                              f"{DOMAIN_KEY if one is not None else DOMAINS_KEY}); the manifest was edited — "
                              "re-export the bundle with the domains you need (`xvla-edge export --domains`)")
    elif listed is not None or (one is not None and one != str(manifest.domain_id)):
        graph = f"domain {one}" if one is not None else f"the domains {listed} of a server bundle"
        raise BundleError(f"{where}: domain_id = {manifest.domain_id}, but {path.name} was exported for {graph} "
                          f"(its {DOMAIN_KEY if one is not None else DOMAINS_KEY}); the manifest was edited — "
                          "re-export the bundle for the domain you need")
