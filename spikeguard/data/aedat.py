"""Readers for the two file formats CIFAR10-DVS is distributed in.

Both return the events of one recording as a numpy structured array with
fields t (int64, microseconds), x (int16), y (int16) and p (int8; 1 = ON,
0 = OFF), in the order the file stores them, for a 128 x 128 sensor.

AEDAT 2.0 (the original release by Li et al. 2017, recorded with jAER on a
DVS128): header lines starting with "#" (the first is "#!AER-DAT2.0\\r\\n"),
then big-endian uint32 pairs (address, timestamp in microseconds). The DVS128
address holds the polarity in bit 0, the sensor column in bits 1-7 and the row
in bits 8-14. We use the orientation of SpikingJelly's CIFAR10-DVS pipeline,
on which the paper's code was built:

    x = 127 - row,   y = 127 - column,   p = 1 - bit0

so that frames indexed [y, x] show the objects upright, as in that pipeline.
Higher address bits are ignored, as there. tonic reads this format only with
a generic helper that pulls in tonic's heavy dependencies, and SpikingJelly's
reader is private to its data-set module, so we read it with numpy here.

AEDAT 4.0 (the re-release tonic downloads, ".aedat4"): decoded by the `aedat`
package (the decoder tonic's own reader wraps). We take the event stream with
the lowest id, as tonic does, and keep its coordinates as stored (tonic applies
no orientation change either); p = the event's "on" flag.

Any problem with a file is a UserError whose one line names the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikeguard.errors import UserError, one_line

SENSOR_SIZE = 128
EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
AEDAT2_MAGIC = b"#!AER-DAT2.0"
AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"


def make_events(t, x, y, p) -> np.ndarray:
    """Pack equal-length sequences into an EVENT_DTYPE array."""
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t, x, y, p
    return events


def read_events(path: str | Path) -> np.ndarray:
    """Read a CIFAR10-DVS recording, choosing the reader by the file's suffix (.aedat or .aedat4)."""
    path = Path(path)
    if path.suffix == ".aedat4":
        return read_aedat4(path)
    if path.suffix == ".aedat":
        return read_aedat2(path)
    raise UserError(f"{path}: not an .aedat or .aedat4 file")


def _header_end(data: bytes, path: Path) -> int:
    """Offset of the first event byte: just past the last "#" header line."""
    if not data.startswith(AEDAT2_MAGIC):
        first = data.split(b"\n", 1)[0][:40].decode("latin1").strip()
        if first.startswith("#!AER-DAT"):
            raise UserError(f"{path}: AEDAT version {first[9:]!r} is not supported (only 2.0 for .aedat files)")
        raise UserError(f"{path}: not an AEDAT 2.0 file (it does not start with '#!AER-DAT2.0')")
    pos = 0
    while data[pos:pos + 1] == b"#":
        end = data.find(b"\n", pos)
        if end < 0:
            raise UserError(f"{path}: truncated header (a '#' line has no end)")
        pos = end + 1
    return pos


def read_aedat2(path: str | Path) -> np.ndarray:
    """Read an AEDAT 2.0 DVS128 file (see the module docstring for layout and orientation)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({one_line(e)})") from e
    start = _header_end(data, path)
    body = len(data) - start
    if body % 8:
        raise UserError(f"{path}: truncated or corrupt: {body} bytes of events is not a whole number of "
                        "8-byte (address, timestamp) pairs")
    words = np.frombuffer(data, dtype=">u4", offset=start).reshape(-1, 2)
    address, timestamp = words[:, 0], words[:, 1]
    column = (address >> 1) & 0x7F
    row = (address >> 8) & 0x7F
    return make_events(timestamp.astype(np.int64), 127 - row, 127 - column, 1 - (address & 1))


def _lowest_event_stream(decoder, path: Path) -> int:
    ids = [i for i, stream in decoder.id_to_stream().items() if stream.get("type") == "events"]
    if not ids:
        raise UserError(f"{path}: the AEDAT 4 file has no event stream")
    stream = decoder.id_to_stream()[min(ids)]
    size = (stream.get("width"), stream.get("height"))
    if any(s is not None and s > SENSOR_SIZE for s in size):
        raise UserError(f"{path}: sensor {size[0]}x{size[1]} is larger than CIFAR10-DVS's "
                        f"{SENSOR_SIZE}x{SENSOR_SIZE}")
    return min(ids)


def read_aedat4(path: str | Path) -> np.ndarray:
    """Read the lowest-id event stream of an AEDAT 4.0 file with the `aedat` package."""
    import aedat  # imported here: only AEDAT 4 files need it

    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(AEDAT4_MAGIC))
    except OSError as e:
        raise UserError(f"{path}: cannot read ({one_line(e)})") from e
    if magic != AEDAT4_MAGIC:
        raise UserError(f"{path}: not an AEDAT 4.0 file (it does not start with '#!AER-DAT4.0')")
    decoder: aedat.Decoder | None = None
    try:
        decoder = aedat.Decoder(path)
        target = _lowest_event_stream(decoder, path)
        parts = [packet["events"] for packet in decoder if packet["stream_id"] == target and "events" in packet]
    except UserError:
        raise
    except Exception as e:  # the decoder reports damage as various exception types
        raise UserError(f"{path}: corrupt or truncated AEDAT 4 file ({one_line(e)})") from e
    finally:
        decoder = None  # the decoder holds the file open until collected
    if not parts:
        return np.empty(0, dtype=EVENT_DTYPE)
    raw = np.concatenate(parts)
    if len(raw) and (raw["x"].max() >= SENSOR_SIZE or raw["y"].max() >= SENSOR_SIZE):
        raise UserError(f"{path}: event coordinates outside the {SENSOR_SIZE}x{SENSOR_SIZE} sensor")
    return make_events(raw["t"].astype(np.int64), raw["x"], raw["y"], raw["on"].astype(np.int8))
