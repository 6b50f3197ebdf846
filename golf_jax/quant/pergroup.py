"""Per-group compression of the artifact (#1855's COMPRESSOR=pergroup; docs/reference-notes.md#pergroup: "per-group
lrzip (ZPAQ) + L1 similarity-sorted rows + brotli", about 280 KB below brotli alone).

A lossless transport of the GOLFJAX1 container's bytes. Its large int8-stored
matrices are cut out of the container and gathered by role across layers (the group
key is the name without ``blocks_<i>/``: "attn/c_q/kernel", "mlp/fc/kernel",
"tok_emb/embedding", ...), so that similarly distributed codes sit together. Within a
group, each matrix [rows, cols] is written transposed (column after column), and the
rows of the SORTED_GROUPS matrices are first reordered by a greedy L1
nearest-neighbour walk, so neighbouring bytes of a column come from similar rows. Each
group is compressed on its own (brotli-11, or ZPAQ level 5 through the PyPI package
``zpaq``, the reference's lrzip -z back end); the row orders (u16, u32 past 65,536
rows) and the rest of the container (its header, every scale, LQER factors, small
tensors) are brotli-11 streams. Decoding puts the bytes back where they were: the
container's own CRCs then vouch for the reassembly.

Blob::

    magic b"GOLFPGR1" | u32 H | u32 CRC-32 of the next H bytes | brotli(header JSON) | streams
    header = {"version": 1, "codec": "brotli" | "zpaq", "raw_bytes": N, "raw_crc32": c,
              "groups": [{"key": k, "tensors": [container table indices], "ordered": bool}],
              "streams": [bytes of each group's stream..., of the orders, of the rest]}

An empty group stream is zero bytes. Streams are decoded in threads (the codecs
release the GIL).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from golf_jax.quant import container
from golf_jax.quant.container import ContainerError, QuantTensor

MAGIC = container.PERGROUP_MAGIC
VERSION = 1
CODECS = ("brotli", "zpaq")
SORTED_GROUPS = ("tok_emb/embedding", "attn/c_q/kernel", "mlp/fc/kernel")  # the reference's _SIMSORT_KEYS
MIN_GROUP_NUMEL = 4096  # smaller matrices (e.g. the sparse attention gate) stay in the rest
ZPAQ_LEVEL = 5
_PRE = struct.Struct("<8sII")
_LAYER = re.compile(r"^blocks_(\d+)/")


def _encode(data: bytes, codec: str) -> bytes:
    if not data:
        return b""
    if codec == "brotli":
        import brotli

        return brotli.compress(data, quality=11, lgwin=24)
    if codec == "zpaq":
        import zpaq

        return zpaq.compress(data, level=ZPAQ_LEVEL, threads=1)
    raise ValueError(f"per-group codec must be one of {CODECS}, got {codec!r}")


def _decode(data: bytes, codec: str) -> bytes:
    if not data:
        return b""
    try:
        if codec == "brotli":
            import brotli

            return brotli.decompress(data)
        if codec == "zpaq":
            import zpaq

            return zpaq.decompress(data)
    except Exception as exc:  # brotli.error, zpaq.Error
        raise ContainerError(f"per-group {codec} stream is truncated or corrupted: {exc}") from exc
    raise ContainerError(f"per-group artifact names an unknown codec {codec!r}; known: {CODECS}")


def similarity_order(q: np.ndarray) -> np.ndarray:
    """Greedy L1 walk over the rows of q [rows, cols]: start at row 0, then always the
    nearest unused row (ties: the smallest index), as the reference's
    _similarity_sort_l1. O(rows² · cols); the unused rows are kept compacted."""
    q = np.asarray(q)
    n = q.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    rest = q.astype(np.int16)
    idx = np.arange(n)
    order = np.empty(n, np.int64)
    order[0] = 0
    cur = rest[0].copy()
    rest[0], idx[0] = rest[n - 1], idx[n - 1]
    m = n - 1
    for k in range(1, n):
        d = np.abs(rest[:m] - cur).sum(axis=1, dtype=np.int64)
        ties = np.flatnonzero(d == d.min())
        j = ties[np.argmin(idx[ties])] if ties.size > 1 else ties[0]
        order[k] = idx[j]
        cur = rest[j].copy()
        m -= 1
        rest[j], idx[j] = rest[m], idx[m]
    return order


def _order_dtype(rows: int) -> str:
    return "<u2" if rows <= 65536 else "<u4"


def _key(name: str) -> str:
    return _LAYER.sub("", name)


def _layer(name: str) -> int:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def plan(header: dict) -> list[dict]:
    """The groups of a container header: [{"key", "tensors": [table indices], "ordered"}],
    groups in order of first appearance, members by layer."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(header["tensors"]):
        shape = e["shape"]
        if (e["kind"] in container.QUANT_KINDS and e["storage"] == "int8" and len(shape) == 2
                and shape[0] * shape[1] >= MIN_GROUP_NUMEL):
            groups.setdefault(_key(e["name"]), []).append(i)
    entries = header["tensors"]
    return [{"key": k, "tensors": sorted(ix, key=lambda i: (_layer(entries[i]["name"]), i)),
             "ordered": k in SORTED_GROUPS} for k, ix in groups.items()]


def _values(raw: bytes, start: int, e: dict) -> np.ndarray:
    off = start + e["offset"]
    return np.frombuffer(raw, np.int8, e["nbytes"], off).reshape(e["shape"])


def row_orders(raw: bytes) -> dict[str, np.ndarray]:
    """{name: row order} of the SORTED_GROUPS matrices of an uncompressed container."""
    header, start = container.read_header(raw)
    out = {}
    for g in plan(header):
        if g["ordered"]:
            for i in g["tensors"]:
                e = header["tensors"][i]
                out[e["name"]] = similarity_order(_values(raw, start, e))
    return out


def encode(raw: bytes, codec: str = "brotli", orders: dict[str, np.ndarray] | None = None) -> bytes:
    """The per-group blob of an uncompressed container. ``orders`` (from row_orders, e.g.
    of the unpruned tensors) saves the O(rows²) sort; any permutation decodes exactly."""
    if codec not in CODECS:
        raise ValueError(f"per-group codec must be one of {CODECS}, got {codec!r}")
    raw = bytes(raw)
    header, start = container.read_header(raw)
    groups = plan(header)
    orders = dict(orders or {})
    blobs, order_bytes, holes = [], [], []
    for g in groups:
        parts = []
        for i in g["tensors"]:
            e = header["tensors"][i]
            q = _values(raw, start, e)
            holes.append((start + e["offset"], e["nbytes"]))
            if g["ordered"]:
                o = orders.get(e["name"])
                o = similarity_order(q) if o is None else np.asarray(o)
                if sorted(o.tolist()) != list(range(q.shape[0])):
                    raise ValueError(f"row order of {e['name']!r} is not a permutation of its {q.shape[0]} rows")
                order_bytes.append(o.astype(_order_dtype(q.shape[0])).tobytes())
                q = q[o]
            parts.append(np.ascontiguousarray(q.T).tobytes())
        blobs.append(b"".join(parts))
    rest, pos = [], 0
    for off, n in sorted(holes):
        rest.append(raw[pos:off])
        pos = off + n
    rest.append(raw[pos:])
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(blobs)))) as pool:
        streams = list(pool.map(lambda b: _encode(b, codec), blobs))
    import brotli

    streams.append(brotli.compress(b"".join(order_bytes), quality=11) if order_bytes else b"")
    streams.append(brotli.compress(b"".join(rest), quality=11, lgwin=24))
    head = {"version": VERSION, "codec": codec, "raw_bytes": len(raw), "raw_crc32": zlib.crc32(raw),
            "groups": groups, "streams": [len(s) for s in streams]}
    hb = brotli.compress(json.dumps(head, separators=(",", ":")).encode("utf-8"), quality=11)
    return _PRE.pack(MAGIC, len(hb), zlib.crc32(hb)) + hb + b"".join(streams)


def is_pergroup(blob: bytes) -> bool:
    return bytes(blob[:8]) == MAGIC


def _read(blob: bytes) -> tuple[dict, list[bytes]]:
    blob = bytes(blob)
    if len(blob) < _PRE.size or not is_pergroup(blob):
        raise ContainerError(f"not a per-group artifact (first bytes {blob[:8]!r}, {len(blob)} bytes)")
    _, hlen, hcrc = _PRE.unpack_from(blob)
    hb = blob[_PRE.size : _PRE.size + hlen]
    if len(hb) != hlen or zlib.crc32(hb) != hcrc:
        raise ContainerError(f"per-group header truncated or corrupted ({len(blob)} bytes)")
    try:
        head = json.loads(_decode(hb, "brotli").decode("utf-8"))
    except ValueError as exc:  # ContainerError included
        raise ContainerError(f"per-group header is malformed: {exc}") from exc
    if head.get("version") != VERSION:
        raise ContainerError(f"per-group version {head.get('version')} is not supported (expected {VERSION})")
    streams, pos = [], _PRE.size + hlen
    for n in head["streams"]:
        streams.append(blob[pos : pos + n])
        pos += n
    if pos != len(blob) or len(streams) != len(head["groups"]) + 2:
        raise ContainerError(f"per-group artifact truncated or corrupted: {len(blob)} bytes, header says {pos}")
    return head, streams


def stream_bytes(blob: bytes) -> dict:
    """Compressed bytes per stream, for the export report."""
    head, streams = _read(blob)
    return {"codec": head["codec"], "header": len(blob) - sum(head["streams"]),
            "groups": {g["key"]: len(s) for g, s in zip(head["groups"], streams)},
            "orders": len(streams[-2]), "rest": len(streams[-1]), "total": len(blob)}


def decode(blob: bytes) -> bytes:
    """The uncompressed container a per-group blob carries, byte for byte."""
    head, streams = _read(blob)
    try:
        return _reassemble(head, streams)
    except (KeyError, TypeError, ValueError) as exc:  # ContainerError included
        if isinstance(exc, ContainerError):
            raise
        raise ContainerError(f"per-group artifact is corrupted: {exc!r}") from exc


def _reassemble(head: dict, streams: list[bytes]) -> bytes:
    codec = head["codec"]
    rest = _decode(streams[-1], "brotli")
    order_bytes = _decode(streams[-2], "brotli")
    header, start = container.read_header(rest)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(head["groups"])))) as pool:
        datas = list(pool.map(lambda s: _decode(s, codec), streams[:-2]))
    raw = bytearray(head["raw_bytes"])
    fills, opos = [], 0
    for g, data in zip(head["groups"], datas):
        pos = 0
        for i in g["tensors"]:
            e = header["tensors"][i]
            rows, cols = e["shape"]
            q = np.frombuffer(data, np.int8, rows * cols, pos).reshape(cols, rows).T
            pos += rows * cols
            if g["ordered"]:
                dt = np.dtype(_order_dtype(rows))
                o = np.frombuffer(order_bytes, dt, rows, opos).astype(np.int64)
                opos += rows * dt.itemsize
                inv = np.empty_like(o)
                inv[o] = np.arange(rows)
                q = q[inv]
            fills.append((start + e["offset"], np.ascontiguousarray(q).tobytes()))
    rpos = wpos = 0
    for off, vals in sorted(fills, key=lambda f: f[0]):
        n = off - wpos
        raw[wpos:off] = rest[rpos : rpos + n]
        rpos += n
        raw[off : off + len(vals)] = vals
        wpos = off + len(vals)
    raw[wpos:] = rest[rpos:]
    raw = bytes(raw)
    if len(raw) != head["raw_bytes"] or zlib.crc32(raw) != head["raw_crc32"]:
        raise ContainerError("per-group artifact does not reassemble to the container it was made from")
    return raw


def serialize(tensors: dict[str, QuantTensor], codec: str = "brotli",
              orders: dict[str, np.ndarray] | None = None) -> bytes:
    """Tensors → container (int6 stored as int8 bytes, so rows can be reordered) → per-group blob."""
    return encode(container.pack(tensors, "int8"), codec, orders)


def deserialize(blob: bytes) -> dict[str, QuantTensor]:
    """Tensors of any artifact blob: per-group, or a (compressed) GOLFJAX1 container."""
    return container.unpack(decode(blob)) if is_pergroup(blob) else container.deserialize(blob)
