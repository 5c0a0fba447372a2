"""Write small CIFAR10-DVS recordings in the two real file formats, for tests.

Coordinates and polarity are given in the loader's output convention (see
spikeguard/data/aedat.py); the writers store them the way each format does,
so reading a file back must return exactly what was written.

AEDAT 2.0: "#" header lines, then big-endian uint32 (address, timestamp) pairs,
address = (1 - p) | (127 - y) << 1 | (127 - x) << 8 (the reader's inverse).

AEDAT 4.0: "#!AER-DAT4.0\\r\\n", a little-endian uint32 length and an IOHeader
flatbuffer (identifier "IOHE": compression, file_data_position, an XML
description of the streams), then packets: little-endian int32 stream id,
uint32 byte length, and a size-prefixed "EVTS" flatbuffer EventPacket
{elements: [Event]} with struct Event {t: int64; x: int16; y: int16; on: bool}
(16 bytes with padding), compressed as the header says.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np

from spikeguard.data.cifar10_dvs import CLASSES

COMPRESSION = {"none": 0, "lz4": 1, "lz4high": 2, "zstd": 3, "zstdhigh": 4}
# The Event struct's memory layout: 8 + 2 + 2 + 1 bytes, padded to 16 (alignment of t).
EVENT_STRUCT = np.dtype({"names": ["t", "x", "y", "on"], "formats": ["<i8", "<i2", "<i2", "u1"],
                         "offsets": [0, 8, 10, 12], "itemsize": 16})


def write_aedat2(path, x, y, p, t, header: bytes = b"#!AER-DAT2.0\r\n") -> None:
    x, y, p, t = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t))
    address = (1 - p) | (127 - y) << 1 | (127 - x) << 8
    pairs = np.stack([address, t], axis=1).astype(">u4")
    lines = header + b"# This is a raw AE data file - do not edit\r\n# created by spikeguard's tests\r\n"
    Path(path).write_bytes(lines + pairs.tobytes())


def _description(stream_ids) -> str:
    streams = "".join(
        f'<node name="{i}" path="/mainloop/Recorder/outInfo/{i}/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="originalModuleName" type="string">capture</attr>'
        '<attr key="originalOutputName" type="string">events</attr>'
        '<attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        f'<node name="info" path="/mainloop/Recorder/outInfo/{i}/info/">'
        '<attr key="sizeX" type="int">128</attr><attr key="sizeY" type="int">128</attr>'
        '<attr key="source" type="string">DVS128</attr></node></node>'
        for i in stream_ids)
    return f'<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">{streams}</node></dv>'


def _io_header(compression: int, file_data_position: int, stream_ids) -> bytes:
    builder = flatbuffers.Builder(1024)
    description = builder.CreateString(_description(stream_ids))
    builder.StartObject(3)
    builder.PrependInt32Slot(0, compression, 0)
    builder.PrependInt64Slot(1, file_data_position, -1)
    builder.PrependUOffsetTRelativeSlot(2, description, 0)
    builder.Finish(builder.EndObject(), file_identifier=b"IOHE")
    return bytes(builder.Output())


def _event_packet(t, x, y, on) -> bytes:
    structs = np.zeros(len(t), dtype=EVENT_STRUCT)
    structs["t"], structs["x"], structs["y"], structs["on"] = t, x, y, on
    raw = structs.tobytes()
    builder = flatbuffers.Builder(len(raw) + 64)
    # A vector of structs is their bytes back to back; StartVector reserves and aligns the room, and
    # we copy the bytes in at once (prepending 16-byte structs one field at a time is slow in Python).
    builder.StartVector(EVENT_STRUCT.itemsize, len(t), 8)
    builder.head -= len(raw)
    builder.Bytes[builder.head:builder.head + len(raw)] = raw
    elements = builder.EndVector()
    builder.StartObject(1)
    builder.PrependUOffsetTRelativeSlot(0, elements, 0)
    builder.FinishSizePrefixed(builder.EndObject(), file_identifier=b"EVTS")
    return bytes(builder.Output())


def _compress(data: bytes, compression: str) -> bytes:
    if compression == "none":
        return data
    if compression.startswith("lz4"):
        import lz4.frame

        return lz4.frame.compress(data, compression_level=9 if compression == "lz4high" else 0)
    import zstandard

    return zstandard.ZstdCompressor(level=19 if compression == "zstdhigh" else 3).compress(data)


def write_aedat4(path, x, y, p, t, compression: str = "none", packet_events: int = 1000,
                 decoy_stream: bool = False, trailer: bool = False) -> None:
    """An AEDAT 4 file of the events in stream 0, `packet_events` per packet.

    decoy_stream: also a stream 1 of other events, interleaved, that a reader must ignore.
    trailer: record file_data_position and append bytes after the packets (as DV appends its file
    table), which a reader must not take for packets.
    """
    x, y, p, t = (np.asarray(a) for a in (x, y, p, t))
    ids = (0, 1) if decoy_stream else (0,)
    packets = []
    for start in range(0, max(len(t), 1), packet_events):
        end = start + packet_events
        packets.append((0, _event_packet(t[start:end], x[start:end], y[start:end], p[start:end])))
        if decoy_stream:
            n = min(end, len(t)) - start
            packets.append((1, _event_packet(t[start:end], np.full(n, 5), np.full(n, 7), np.ones(n))))
    body = b"".join(np.array([i, len(c)], dtype="<u4").tobytes() + c
                    for i, c in ((i, _compress(buf, compression)) for i, buf in packets))

    def header(position: int) -> bytes:
        flat = _io_header(COMPRESSION[compression], position, ids)
        return b"#!AER-DAT4.0\r\n" + np.uint32(len(flat)).astype("<u4").tobytes() + flat

    if trailer:  # the header's size does not depend on the position's value (an int64 slot), only on it being set
        data = header(len(header(0)) + len(body)) + body + b"\x07" * 40
    else:
        data = header(-1) + body
    Path(path).write_bytes(data)


def random_events(rng: np.random.Generator, n: int, duration_us: int = 1_300_000):
    """n events (x, y, p, t) uniformly on the 128 x 128 sensor, with sorted timestamps."""
    x = rng.integers(0, 128, n)
    y = rng.integers(0, 128, n)
    p = rng.integers(0, 2, n)
    t = np.sort(rng.integers(0, duration_us, n))
    return x, y, p, t


def write_synthetic_recordings(root, per_class: int = 4, fmt: str = "aedat2", seed: int = 0,
                               events_per_sample: int = 3000) -> list[tuple[Path, tuple]]:
    """Write a tiny CIFAR10-DVS copy: `root`/<class>/<class>_<i>.aedat or .aedat4 (fmt "aedat2" or "aedat"
    for AEDAT 2.0, "aedat4" for AEDAT 4), `per_class` recordings per class.

    Each class puts most of its events in its own block-and-polarity pattern, so a model can learn
    something. Returns [(path, (x, y, p, t))] in class order.
    """
    if fmt not in ("aedat", "aedat2", "aedat4"):
        raise ValueError(f"fmt must be aedat2 or aedat4, got {fmt!r}")
    suffix, write = (".aedat4", write_aedat4) if fmt == "aedat4" else (".aedat", write_aedat2)
    rng = np.random.default_rng(seed)
    written = []
    for label, name in enumerate(CLASSES):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            x, y, p, t = random_events(rng, events_per_sample)
            focus = rng.random(events_per_sample) < 0.6  # class signal: a 32 x 32 block chosen by the label
            x[focus] = (label % 4) * 32 + x[focus] % 32
            y[focus] = (label // 4) * 32 + y[focus] % 32
            p[focus] = label % 2
            path = folder / f"{name}_{i}{suffix}"
            write(path, x, y, p, t)
            written.append((path, (x, y, p, t)))
    return written


def make_synthetic_cifar10dvs(root, per_class: int = 4, fmt: str = "aedat2", seed: int = 0,
                              events_per_sample: int = 3000) -> Path:
    """`write_synthetic_recordings`, returning the data directory `root` to pass as --data-dir."""
    write_synthetic_recordings(root, per_class, fmt, seed, events_per_sample)
    return Path(root)
