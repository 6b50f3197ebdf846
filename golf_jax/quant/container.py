"""GOLFJAX1: our binary container for the quantized model (replaces torch.save).

Format, version 1 (all integers little-endian)::

    offset  size  field
    0       8     magic b"GOLFJAX1"
    8       4     u32 H = length of the header in bytes
    12      4     u32 CRC-32 of the header bytes
    16      H     header: compact UTF-8 JSON (below)
    16+H    P     payload: the tensors' bytes back to back, in table order

    header = {"version": 1, "int6_storage": "int8" | "packed6",
              "payload_bytes": P, "payload_crc32": crc, "tensors": [entry, ...]}
    entry  = {"name": str, "kind": "int6"|"int8"|"int7"|"fp16"|"fp32"|"bf16raw",
              "shape": [..], "orig_dtype": "float32"|"bfloat16"|...,
              "storage": "int8"|"packed6"|"raw", "offset": o, "nbytes": n,
              "scale_offset": o2, "scale_nbytes": n2}       # scale_* only when quantized

Offsets count from the start of the payload. Every tensor is contiguous and
row-major (the layout drives compressibility): first its values, then, for the
quantized kinds, one fp16 scale per row (shape[0] rows). Values:

* int6 / int7 / int8: signed bytes (int6 in [-32, 31], int7 in [-64, 63]);
  int6 may instead be "packed6": 4 values in 3 bytes, value k of a group in bits
  6k..6k+5 of a little-endian 24-bit word (two's complement 6-bit), the last
  group zero-padded.
* fp16 / fp32: IEEE little-endian. bf16raw: the raw bfloat16 bit patterns (u16 LE).

Dequantization: W = q * scale[row] in fp32, then cast to orig_dtype.

Version 2 (written only when some tensor carries one) adds an optional low-rank
correction of the quantization error to a 2-D quantized entry (LQER, #1797 / #1855;
golf_jax.quant.lqer)::

    entry["lqer"] = [fa, fb]      # factor A [rows, r], then B [r, cols]
    f = {"shape": [..], "bits": b, "group": g, "offset": o, "nbytes": n,
         "scale_offset": o2, "scale_nbytes": n2}

placed after the entry's scales: the values packed at 2, 4 or 8 bits each (the
smallest width that holds b; golf_jax.quant.lowrank.pack_bits), then one fp16 scale
per g consecutive values of the factor's row-major flattening. Dequantization then
adds Â·B̂ (Â = q_A·s_A, B̂ = q_B·s_B per group) in fp32 as r rank-1 terms in order,
before the cast. Version-1 containers read as before.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np


MAGIC = b"GOLFJAX1"
VERSION = 1  # written when no tensor has a low-rank correction
VERSION_LQER = 2
PERGROUP_MAGIC = b"GOLFPGR1"  # a per-group artifact (golf_jax.quant.pergroup), not a container
QUANT_KINDS = {"int6": (-32, 31), "int7": (-64, 63), "int8": (-128, 127)}
RAW_KINDS = {"fp16": "<f2", "fp32": "<f4", "bf16raw": "<u2"}
_PRE = struct.Struct("<8sII")


class ContainerError(ValueError):
    """A blob that is not a valid, complete GOLFJAX1 container."""


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclass
class QuantTensor:
    """One stored tensor: int values + fp16 row scales, or a raw float passthrough."""

    kind: str
    data: np.ndarray  # int8 for int6/int7/int8; fp16 / fp32 / bfloat16 for passthroughs
    scale: np.ndarray | None = None  # fp16 [shape[0]] for the quantized kinds
    orig_dtype: str = "float32"
    # (A, B) golf_jax.quant.lowrank.Factor: W += Â·B̂ at dequantization (2-D quantized only). lowrank and
    # lqer are imported where a correction is met, so submissions without LQER need not pack them.
    lqer: tuple | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def passthrough(x: np.ndarray, kind: str = "fp16") -> QuantTensor:
    """Store a float tensor as fp16 / fp32 / raw bf16, remembering its dtype."""
    x = np.asarray(x)
    target = {"fp16": np.float16, "fp32": np.float32, "bf16raw": _np_dtype("bfloat16")}[kind]
    return QuantTensor(kind, x.astype(target), None, x.dtype.name)


def pack6(values: np.ndarray) -> bytes:
    """Pack int values in [-32, 31] as 4 per 3 bytes (see the module docstring)."""
    v = np.asarray(values).reshape(-1)
    if v.size and (v.min() < -32 or v.max() > 31):
        raise ValueError(f"pack6: values must lie in [-32, 31], got [{v.min()}, {v.max()}]")
    u = (v.astype(np.int64) & 0x3F).astype(np.uint32)
    u = np.concatenate([u, np.zeros((-u.size) % 4, dtype=np.uint32)]).reshape(-1, 4)
    word = u[:, 0] | (u[:, 1] << 6) | (u[:, 2] << 12) | (u[:, 3] << 18)
    return np.stack([word & 0xFF, (word >> 8) & 0xFF, word >> 16], axis=1).astype(np.uint8).tobytes()


def unpack6(buf: bytes, count: int) -> np.ndarray:
    """Inverse of pack6: the first ``count`` values as int8."""
    b = np.frombuffer(buf, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
    word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    u = np.stack([(word >> (6 * k)) & 0x3F for k in range(4)], axis=1).reshape(-1)[:count]
    return ((u.astype(np.int16) ^ 32) - 32).astype(np.int8)


def _values_nbytes(kind: str, storage: str, n: int) -> int:
    if kind in RAW_KINDS:
        return 2 * n if kind != "fp32" else 4 * n
    return 3 * ((n + 3) // 4) if storage == "packed6" else n


def _check(name: str, t: QuantTensor) -> None:
    if t.kind in QUANT_KINDS:
        lo, hi = QUANT_KINDS[t.kind]
        if t.data.dtype != np.int8 or t.data.ndim < 1:
            raise ValueError(
                f"tensor {name!r}: kind {t.kind} needs int8 values with ndim >= 1, got {t.data.dtype} {t.shape}"
            )
        if t.data.size and (t.data.min() < lo or t.data.max() > hi):
            raise ValueError(f"tensor {name!r}: {t.kind} values must lie in [{lo}, {hi}]")
        if t.scale is None or t.scale.shape != (t.shape[0],):
            raise ValueError(f"tensor {name!r}: needs fp16 scales of shape ({t.shape[0]},)")
        if t.lqer is not None:
            _check_lqer(name, t)
    elif t.kind not in RAW_KINDS:
        kinds = sorted(QUANT_KINDS) + sorted(RAW_KINDS)
        raise ValueError(f"tensor {name!r}: unknown kind {t.kind!r}; use one of {kinds}")
    else:
        ok = {"fp16": ("float16",), "fp32": ("float32",), "bf16raw": ("bfloat16", "uint16")}[t.kind]
        if t.data.dtype.name not in ok:
            raise ValueError(f"tensor {name!r}: kind {t.kind} stores {ok[0]} data, got {t.data.dtype} "
                             "(convert with container.passthrough(x, kind))")


def _check_lqer(name: str, t: QuantTensor) -> None:
    from golf_jax.quant import lowrank

    a, b = t.lqer
    if t.data.ndim != 2 or a.q.ndim != 2 or b.q.ndim != 2 or a.q.shape[0] != t.shape[0] \
            or b.q.shape[1] != t.shape[1] or a.q.shape[1] != b.q.shape[0]:
        raise ValueError(f"tensor {name!r}: a low-rank correction needs A [rows, r] and B [r, cols] of a 2-D "
                         f"tensor {t.shape}, got {a.q.shape} and {b.q.shape}")
    for f in (a, b):
        lo, hi = lowrank.signed_range(f.bits)
        if f.q.dtype != np.int8 or (f.q.size and (f.q.min() < lo or f.q.max() > hi)):
            raise ValueError(f"tensor {name!r}: {f.bits}-bit factor values must be int8 in [{lo}, {hi}]")
        if f.group <= 0 or f.q.size % f.group or f.scale.shape != (f.q.size // f.group,):
            raise ValueError(f"tensor {name!r}: a factor of {f.q.size} values needs one fp16 scale per "
                             f"group of {f.group}, got {f.scale.shape}")


def _pack_factor(f, off: int) -> tuple[dict, list[bytes]]:
    from golf_jax.quant import lowrank

    vals = lowrank.pack_bits(f.q, lowrank.storage_width(f.bits))
    sc = np.asarray(f.scale).astype("<f2").tobytes()
    e = {"shape": list(f.q.shape), "bits": int(f.bits), "group": int(f.group), "offset": off,
         "nbytes": len(vals), "scale_offset": off + len(vals), "scale_nbytes": len(sc)}
    return e, [vals, sc]


def _parse_factor(name: str, e: dict, payload: bytes):
    from golf_jax.quant import lowrank

    shape, bits, group = tuple(e["shape"]), int(e["bits"]), int(e["group"])
    n = int(np.prod(shape, dtype=np.int64))
    if (group <= 0 or n % group or e["nbytes"] != lowrank.packed_nbytes(n, bits)
            or e["scale_nbytes"] != 2 * (n // group)):
        raise ContainerError(f"tensor {name!r}: low-rank factor {shape} ({bits} bits, group {group}) has "
                             f"{e['nbytes']} + {e['scale_nbytes']} bytes")
    q = lowrank.unpack_bits(payload[e["offset"] : e["offset"] + e["nbytes"]], lowrank.storage_width(bits), n)
    sb = payload[e["scale_offset"] : e["scale_offset"] + e["scale_nbytes"]]
    return lowrank.Factor(q.reshape(shape), np.frombuffer(sb, dtype="<f2").astype(np.float16), group, bits)


def pack(tensors: dict[str, QuantTensor], int6_storage: str = "int8") -> bytes:
    """The uncompressed GOLFJAX1 container."""
    if int6_storage not in ("int8", "packed6"):
        raise ValueError(f"int6_storage must be 'int8' or 'packed6', got {int6_storage!r}")
    entries, chunks, off = [], [], 0
    for name, t in tensors.items():
        _check(name, t)
        e = {"name": str(name), "kind": t.kind, "shape": list(t.shape), "orig_dtype": t.orig_dtype}
        if t.kind in RAW_KINDS:
            e["storage"] = "raw"
            vals = np.ascontiguousarray(t.data).view(np.uint16 if t.kind == "bf16raw" else t.data.dtype)
            vals = vals.astype(RAW_KINDS[t.kind]).tobytes()
        else:
            e["storage"] = int6_storage if t.kind == "int6" else "int8"
            flat = np.ascontiguousarray(t.data)
            vals = pack6(flat) if e["storage"] == "packed6" else flat.tobytes()
        e["offset"], e["nbytes"] = off, len(vals)
        chunks.append(vals)
        off += len(vals)
        if t.kind in QUANT_KINDS:
            sc = np.asarray(t.scale).astype("<f2").tobytes()
            e["scale_offset"], e["scale_nbytes"] = off, len(sc)
            chunks.append(sc)
            off += len(sc)
        if t.kind in QUANT_KINDS and t.lqer is not None:
            e["lqer"] = []
            for f in t.lqer:
                fe, parts = _pack_factor(f, off)
                e["lqer"].append(fe)
                chunks += parts
                off += sum(len(p) for p in parts)
        entries.append(e)
    payload = b"".join(chunks)
    version = VERSION_LQER if any("lqer" in e for e in entries) else VERSION
    header = json.dumps(
        {"version": version, "int6_storage": int6_storage, "payload_bytes": len(payload),
         "payload_crc32": zlib.crc32(payload), "tensors": entries},
        separators=(",", ":"),
    ).encode("utf-8")
    return _PRE.pack(MAGIC, len(header), zlib.crc32(header)) + header + payload


def read_header(raw: bytes) -> tuple[dict, int]:
    """(header, offset of the payload) of an uncompressed container (or a prefix that
    holds its whole header), the header's checksum verified."""
    raw = bytes(raw)
    if len(raw) < _PRE.size or raw[:8] != MAGIC:
        raise ContainerError(f"not a GOLFJAX1 container (first bytes {raw[:8]!r}, {len(raw)} bytes)")
    _, hlen, hcrc = _PRE.unpack_from(raw)
    header_b = raw[_PRE.size : _PRE.size + hlen]
    if len(header_b) != hlen or zlib.crc32(header_b) != hcrc:
        raise ContainerError(f"GOLFJAX1 header truncated or corrupted ({len(raw)} bytes, header says {hlen})")
    try:
        return json.loads(header_b.decode("utf-8")), _PRE.size + hlen
    except ValueError as exc:
        raise ContainerError(f"GOLFJAX1 header is malformed: {exc!r}") from exc


def unpack(raw: bytes) -> dict[str, QuantTensor]:
    """Parse an uncompressed container, checking sizes and checksums."""
    raw = bytes(raw)
    header, start = read_header(raw)
    try:
        return _parse(header, raw[start:])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ContainerError):
            raise
        raise ContainerError(f"GOLFJAX1 header is malformed: {exc!r}") from exc


def _parse(header: dict, payload: bytes) -> dict[str, QuantTensor]:
    if header.get("version") not in (VERSION, VERSION_LQER):
        raise ContainerError(f"GOLFJAX1 version {header.get('version')} is not supported "
                             f"(expected {VERSION} or {VERSION_LQER})")
    if len(payload) != header["payload_bytes"] or zlib.crc32(payload) != header["payload_crc32"]:
        raise ContainerError(
            f"GOLFJAX1 payload truncated or corrupted: {len(payload)} bytes, expected {header['payload_bytes']}"
        )
    out: dict[str, QuantTensor] = {}
    for e in header["tensors"]:
        kind, shape, storage = e["kind"], tuple(e["shape"]), e["storage"]
        n = int(np.prod(shape, dtype=np.int64))
        if e["nbytes"] != _values_nbytes(kind, storage, n):
            raise ContainerError(f"tensor {e['name']!r}: {e['nbytes']} bytes do not fit {kind}/{storage} {shape}")
        buf = payload[e["offset"] : e["offset"] + e["nbytes"]]
        if kind in RAW_KINDS:
            native = {"fp16": np.float16, "fp32": np.float32, "bf16raw": np.uint16}[kind]
            data = np.frombuffer(buf, dtype=RAW_KINDS[kind]).astype(native).reshape(shape)
            if kind == "bf16raw":
                data = data.view(_np_dtype("bfloat16"))
            out[e["name"]] = QuantTensor(kind, data, None, e["orig_dtype"])
            continue
        data = unpack6(buf, n) if storage == "packed6" else np.frombuffer(buf, dtype=np.int8).copy()
        sb = payload[e["scale_offset"] : e["scale_offset"] + e["scale_nbytes"]]
        if len(sb) != 2 * shape[0]:
            raise ContainerError(f"tensor {e['name']!r}: scale bytes {len(sb)} != 2 * {shape[0]} rows")
        scale = np.frombuffer(sb, dtype="<f2").astype(np.float16)
        lq = None
        if "lqer" in e:
            if header["version"] < VERSION_LQER or len(e["lqer"]) != 2:
                raise ContainerError(f"tensor {e['name']!r}: a low-rank correction needs version {VERSION_LQER} "
                                     "and two factors")
            lq = tuple(_parse_factor(e["name"], fe, payload) for fe in e["lqer"])
        out[e["name"]] = QuantTensor(kind, data.reshape(shape), scale, e["orig_dtype"], lq)
    return out


def serialize(
    tensors: dict[str, QuantTensor], int6_storage: str = "auto", compressor: str | None = "lzma"
) -> bytes:
    """Container, compressed (``compressor=None``: raw). ``int6_storage="auto"``
    compresses both the int8 and the packed6 layouts and keeps the smaller one
    (the header records which)."""
    from golf_jax.quant.compress import compress  # here only: a per-group submission need not pack it

    options = ("int8", "packed6") if int6_storage == "auto" else (int6_storage,)
    best = None
    for storage in options:
        raw = pack(tensors, storage)
        blob = raw if compressor is None else compress(raw, compressor)
        if best is None or len(blob) < len(best):
            best = blob
    return best


def _decompress(blob: bytes) -> bytes:
    from golf_jax.quant.compress import decompress  # here only, as in serialize

    return decompress(blob)


def deserialize(blob: bytes) -> dict[str, QuantTensor]:
    """Inverse of ``serialize`` (raw or compressed; the stream names its codec)."""
    blob = bytes(blob)
    if blob[:8] == PERGROUP_MAGIC:
        raise ContainerError("a per-group artifact (export.compressor='pergroup_*'): read it with "
                             "golf_jax.quant.export.read_tensors")
    return unpack(blob if blob[:8] == MAGIC else _decompress(blob))


def int6_storage_of(blob: bytes) -> str:
    """Which int6 layout a blob uses (read from its header)."""
    raw = bytes(blob) if bytes(blob[:8]) == MAGIC else _decompress(blob)
    _, hlen, _ = _PRE.unpack_from(raw)
    return json.loads(raw[_PRE.size : _PRE.size + hlen].decode("utf-8"))["int6_storage"]


def dequantize_all(tensors: dict[str, QuantTensor], cast: bool = True) -> dict[str, np.ndarray]:
    """W = q * scale[row] (+ Â·B̂) in fp32 (passthroughs as stored), cast to orig_dtype if ``cast``."""
    out = {}
    for name, t in tensors.items():
        if t.kind in QUANT_KINDS:
            s = t.scale.astype(np.float32).reshape((t.shape[0],) + (1,) * (t.data.ndim - 1))
            w = t.data.astype(np.float32) * s
            if t.lqer is not None:
                from golf_jax.quant import lqer

                w += lqer.correction(*t.lqer)
        else:
            w = t.data
        out[name] = w.astype(_np_dtype(t.orig_dtype)) if cast else w
    return out
