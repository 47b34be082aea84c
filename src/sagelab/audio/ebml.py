"""A push-style WebM (Matroska) demuxer for one audio track, fed bytes as they arrive.

FFmpeg's demuxer pulls its input through a blocking read callback, so decoding a live stream
with it takes a thread per stream, and at 50 relay sessions those threads (and their
per-frame hand-offs back to asyncio) cost far more than decoding Opus. This demuxer is
sans-I/O instead: :meth:`WebmDemuxer.feed` takes whatever bytes arrived and returns the audio
blocks that are now complete, on the caller's thread, so the decoder needs no thread at all.

It reads what browsers' ``MediaRecorder`` and FFmpeg write: an EBML header, one Segment
(often of unknown size), Tracks, then Clusters (of known or unknown size) of SimpleBlocks or
BlockGroups, with Xiph, EBML or fixed-size lacing. Everything else (SeekHead, Cues, Tags,
Void, ...) is skipped without being buffered. Memory is bounded: only one incomplete element
is ever held, and an element larger than ``max_element_bytes`` is an error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EBML_HEADER = 0x1A45DFA3
DOC_TYPE = 0x4282
SEGMENT = 0x18538067
TRACKS = 0x1654AE6B
CLUSTER = 0x1F43B675
CUES = 0x1C53BB6B  # one of the Segment children that are skipped unread
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_TYPE = 0x83
CODEC_ID = 0x86
CODEC_PRIVATE = 0x63A2
AUDIO = 0xE1
SAMPLING_FREQUENCY = 0xB5
CHANNELS = 0x9F
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
DISCARD_PADDING = 0x75A2
VOID = 0xEC
CRC32 = 0xBF

AUDIO_TRACK_TYPE = 2
# Cluster children per the Matroska spec (Timestamp, SilentTracks, Position, PrevSize,
# SimpleBlock, BlockGroup, EncryptedBlock) plus the global Void and CRC-32. Any other ID ends
# a cluster of unknown size: that is how a live stream says the next cluster has begun.
_CLUSTER_CHILDREN = frozenset({0xE7, 0x5854, 0xA7, 0xAB, SIMPLE_BLOCK, BLOCK_GROUP, 0xAF})
_GLOBAL = frozenset({VOID, CRC32})
_LACING_NONE, _LACING_XIPH, _LACING_FIXED, _LACING_EBML = 0, 1, 2, 3


class WebmFormatError(ValueError):
    """The bytes are not a WebM stream this demuxer can follow (corrupt, truncated, not WebM)."""


@dataclass(frozen=True)
class AudioTrack:
    """The first audio track of the Tracks element."""

    number: int
    codec_id: str
    codec_private: bytes
    sample_rate: float | None
    channels: int


@dataclass(frozen=True)
class AudioBlock:
    """The codec frames of one (Simple)Block of the audio track, in order.

    ``discard_padding_ns`` is the Matroska DiscardPadding of a BlockGroup: how much of the
    decoded audio's end is encoder padding, not signal (the last block of a stream).
    """

    frames: tuple[bytes, ...]
    discard_padding_ns: int = 0


def read_vint(
    data: bytes | bytearray, pos: int, *, keep_marker: bool, offset: int = 0
) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, length), or None if incomplete.

    ``keep_marker`` is for element IDs, which keep their length bit; sizes drop it. An
    "unknown" size (all value bits set) is returned as -1. ``offset`` is where ``data``
    starts in the stream, for error messages.
    """
    if pos >= len(data):
        return None
    first = data[pos]
    if first == 0:
        raise WebmFormatError(
            f"corrupt WebM: invalid EBML variable-length integer at byte {offset + pos}"
        )
    length = 9 - first.bit_length()  # the leading 1 bit marks the length
    if pos + length > len(data):
        return None
    value = first if keep_marker else first & ((0x80 >> (length - 1)) - 1)
    for b in data[pos + 1 : pos + length]:
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


def read_header(
    data: bytes | bytearray, pos: int, offset: int = 0
) -> tuple[int, int | None, int] | None:
    """(element id, payload size or None if unknown, header length), or None if incomplete."""
    got = read_vint(data, pos, keep_marker=True, offset=offset)
    if got is None:
        return None
    element_id, id_len = got
    if id_len > 4:
        raise WebmFormatError(
            f"corrupt WebM at byte {offset + pos}: an element ID of {id_len} bytes (at most 4)"
        )
    got = read_vint(data, pos + id_len, keep_marker=False, offset=offset)
    if got is None:
        return None
    size, size_len = got
    return element_id, (None if size < 0 else size), id_len + size_len


def _children(payload: bytes) -> list[tuple[int, bytes]]:
    """The child elements of a master element held whole in memory."""
    out = []
    pos = 0
    while pos < len(payload):
        head = read_header(payload, pos, 0)
        if head is None:
            raise WebmFormatError("corrupt WebM: a truncated element inside a buffered element")
        element_id, size, head_len = head
        if size is None or pos + head_len + size > len(payload):
            raise WebmFormatError(
                f"corrupt WebM: element {element_id:#x} overruns its parent's size"
            )
        out.append((element_id, payload[pos + head_len : pos + head_len + size]))
        pos += head_len + size
    return out


def _uint(payload: bytes) -> int:
    return int.from_bytes(payload, "big") if payload else 0


def _sint(payload: bytes) -> int:
    return int.from_bytes(payload, "big", signed=True) if payload else 0


def _float(payload: bytes) -> float:
    if len(payload) == 4:
        return float(struct.unpack(">f", payload)[0])
    if len(payload) == 8:
        return float(struct.unpack(">d", payload)[0])
    raise WebmFormatError(f"corrupt WebM: a float element of {len(payload)} bytes (4 or 8)")


def parse_audio_track(tracks_payload: bytes) -> AudioTrack | None:
    """The first audio TrackEntry of a Tracks element, or None when there is none."""
    for element_id, entry in _children(tracks_payload):
        if element_id != TRACK_ENTRY:
            continue
        fields = dict(_children(entry))
        if _uint(fields.get(TRACK_TYPE, b"")) != AUDIO_TRACK_TYPE:
            continue
        audio = dict(_children(fields.get(AUDIO, b"")))
        rate = audio.get(SAMPLING_FREQUENCY)
        return AudioTrack(
            number=_uint(fields.get(TRACK_NUMBER, b"")),
            codec_id=fields.get(CODEC_ID, b"").rstrip(b"\0").decode("ascii", "replace"),
            codec_private=fields.get(CODEC_PRIVATE, b""),
            sample_rate=_float(rate) if rate is not None else None,
            channels=_uint(audio.get(CHANNELS, b"\x01")),
        )
    return None


def _lace_sizes(data: bytes, pos: int, lacing: int, count: int) -> tuple[list[int], int]:
    """Sizes of the first ``count - 1`` laced frames and where the frame data starts."""
    sizes: list[int] = []
    if lacing == _LACING_XIPH:
        for _ in range(count - 1):
            size = 0
            while True:
                if pos >= len(data):
                    raise WebmFormatError("corrupt WebM: truncated Xiph lacing")
                size += data[pos]
                pos += 1
                if data[pos - 1] != 255:
                    break
            sizes.append(size)
    elif lacing == _LACING_EBML:
        got = read_vint(data, pos, keep_marker=False)
        if got is None or got[0] < 0:
            raise WebmFormatError("corrupt WebM: truncated EBML lacing")
        size, length = got
        sizes.append(size)
        pos += length
        for _ in range(count - 2):
            got = read_vint(data, pos, keep_marker=True)
            if got is None:
                raise WebmFormatError("corrupt WebM: truncated EBML lacing")
            raw, length = got
            # A signed difference: the raw value minus half its range.
            size += (raw & ((1 << (7 * length)) - 1)) - ((1 << (7 * length - 1)) - 1)
            if size < 0:
                raise WebmFormatError("corrupt WebM: negative frame size in EBML lacing")
            sizes.append(size)
            pos += length
    return sizes, pos


def parse_block(payload: bytes) -> tuple[int, tuple[bytes, ...]]:
    """A SimpleBlock or Block: (track number, its frames, lacing undone)."""
    got = read_vint(payload, 0, keep_marker=False)
    if got is None or got[0] < 0 or got[1] + 3 > len(payload):
        raise WebmFormatError("corrupt WebM: a block shorter than its header")
    track, pos = got
    flags = payload[pos + 2]
    pos += 3
    lacing = (flags >> 1) & 3
    if lacing == _LACING_NONE:
        return track, (payload[pos:],)
    if pos >= len(payload):
        raise WebmFormatError("corrupt WebM: a laced block without a frame count")
    count = payload[pos] + 1
    pos += 1
    if lacing == _LACING_FIXED:
        total = len(payload) - pos
        if total % count:
            raise WebmFormatError(
                f"corrupt WebM: {total} bytes cannot be {count} frames of the same size"
            )
        size = total // count
        return track, tuple(payload[pos + i * size : pos + (i + 1) * size] for i in range(count))
    sizes, pos = _lace_sizes(payload, pos, lacing, count)
    last = len(payload) - pos - sum(sizes)
    if last < 0:
        raise WebmFormatError("corrupt WebM: laced frame sizes exceed the block")
    frames = []
    for size in [*sizes, last]:
        frames.append(payload[pos : pos + size])
        pos += size
    return track, tuple(frames)


@dataclass
class _Open:
    """A master element being read: where it ends (None: unknown size, ended by a sibling)."""

    element_id: int
    end: int | None


def _belongs(element_id: int, parent_id: int) -> bool:
    """Whether ``element_id`` may sit in ``parent_id``; if not, an unknown-size parent ended."""
    if parent_id == SEGMENT:
        return element_id not in (EBML_HEADER, SEGMENT)
    if parent_id == CLUSTER:
        return element_id in _CLUSTER_CHILDREN or element_id in _GLOBAL
    return False


class WebmDemuxer:
    """Follow one WebM stream, chunk by chunk; return the audio track's blocks as they complete.

    Errors raise :class:`WebmFormatError` naming the byte offset; a failed demuxer must not be
    fed again (a stream cannot be resynchronised reliably after corruption).
    """

    def __init__(self, *, max_element_bytes: int = 256 * 1024) -> None:
        if max_element_bytes <= 0:
            raise ValueError("max_element_bytes must be positive")
        self.max_element_bytes = max_element_bytes
        self.track: AudioTrack | None = None
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._skip = 0  # payload bytes of an ignored element still to drop
        self._open: list[_Open] = []

    @property
    def position(self) -> int:
        """Bytes of the stream consumed so far (parsed or skipped)."""
        return self._offset

    @property
    def pending_bytes(self) -> int:
        """Bytes held for an element that is not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[AudioBlock]:
        """Take the next bytes of the stream; the audio blocks they complete, in order."""
        buf = self._buf
        buf += data
        blocks: list[AudioBlock] = []
        pos = 0
        while True:
            if self._skip:
                take = min(self._skip, len(buf) - pos)
                self._skip -= take
                pos += take
                if self._skip:
                    break
            here = self._offset + pos
            head = read_header(buf, pos, self._offset)
            if head is None:
                break
            element_id, size, head_len = head
            parent = self._parent_of(element_id, here)
            end = None if size is None else here + head_len + size
            parent_end = parent.end if parent is not None else None
            if end is not None and parent_end is not None and end > parent_end:
                raise WebmFormatError(
                    f"corrupt WebM at byte {here}: element {element_id:#x} of {size} bytes "
                    f"overruns its parent, which ends at byte {parent_end}"
                )
            action = self._action(element_id, parent, here)
            if action == "enter":
                self._open.append(_Open(element_id, end))
                pos += head_len
                continue
            if size is None:
                raise WebmFormatError(
                    f"unsupported WebM at byte {here}: element {element_id:#x} has an unknown "
                    "size (only Segments and Clusters may)"
                )
            if action == "skip":
                pos += head_len
                self._skip = size
                continue
            if size > self.max_element_bytes:
                raise WebmFormatError(
                    f"WebM element {element_id:#x} at byte {here} is {size} bytes, over the "
                    f"limit of {self.max_element_bytes}: not a browser's audio stream"
                )
            if len(buf) - pos < head_len + size:
                break
            payload = bytes(buf[pos + head_len : pos + head_len + size])
            pos += head_len + size
            block = self._element(element_id, payload, here)
            if block is not None:
                blocks.append(block)
        del buf[:pos]
        self._offset += pos
        return blocks

    def _parent_of(self, element_id: int, here: int) -> _Open | None:
        """The open element ``element_id`` is a child of; closes those that ended before it."""
        while self._open:
            parent = self._open[-1]
            if parent.end is not None:
                if parent.end > here:
                    return parent
            elif _belongs(element_id, parent.element_id):
                return parent
            self._open.pop()  # a sized element ends at its size; an unknown one at a non-child
        return None

    def _action(self, element_id: int, parent: _Open | None, here: int) -> str:
        """ "enter" a master element child by child, "buffer" it whole, or "skip" it unread."""
        if parent is None:
            if here == 0 and element_id != EBML_HEADER:
                raise WebmFormatError(
                    "not a WebM stream: it must start with an EBML header (1a 45 df a3); send "
                    "the recorder's first chunk, which holds the header, first"
                )
            if element_id == EBML_HEADER:
                return "buffer"
            if element_id == SEGMENT:
                return "enter"
            raise WebmFormatError(
                f"corrupt WebM at byte {here}: element {element_id:#x} outside the Segment"
            )
        if parent.element_id == SEGMENT:
            if element_id == CLUSTER:
                return "enter"
            return "buffer" if element_id == TRACKS else "skip"
        if element_id in (SIMPLE_BLOCK, BLOCK_GROUP):
            return "buffer"
        return "skip"

    def _element(self, element_id: int, payload: bytes, here: int) -> AudioBlock | None:
        if element_id == EBML_HEADER:
            if here != 0:
                raise WebmFormatError(
                    f"a second WebM header at byte {here}: one connection carries one "
                    "recording; open a new connection for a new MediaRecorder stream"
                )
            doc_type = dict(_children(payload)).get(DOC_TYPE, b"webm").rstrip(b"\0")
            if doc_type not in (b"webm", b"matroska"):
                raise WebmFormatError(
                    f"not a WebM stream: its EBML DocType is {doc_type.decode('latin-1')!r}"
                )
            return None
        if element_id == TRACKS:
            if self.track is None:
                self.track = parse_audio_track(payload)
            if self.track is None:
                raise WebmFormatError("the WebM stream has no audio track")
            return None
        discard_ns = 0
        if element_id == BLOCK_GROUP:
            fields = dict(_children(payload))
            if BLOCK not in fields:
                return None
            discard_ns = _sint(fields.get(DISCARD_PADDING, b""))
            payload = fields[BLOCK]
        if self.track is None:
            raise WebmFormatError(
                f"corrupt WebM at byte {here}: audio before the Tracks element that describes it"
            )
        track, frames = parse_block(payload)
        if track != self.track.number:
            return None
        return AudioBlock(frames, max(0, discard_ns))
