"""The queue's stored form of a message: JSON with the runs every message repeats as single bytes.

A leaf module (no imports of ours): the queue stores and reads this form, and the mapping builds
it directly from constant parts, so that neither ``emit()`` nor the background step that moves
the journal into the queue scans each message for the runs (eleven scans cost ~5 µs a record).
"""

from __future__ import annotations

from typing import Final

# Records are stored in a shorthand: the long runs every message repeats (its envelope's keys, the
# constant tail of its properties) become single control bytes. JSON never contains a raw control
# byte (encoders escape them in strings), so the substitution is exactly reversible. A 530-byte
# ChatTurn is stored in ~350 (SPEC 10: <= 600 bytes on disk per event), and emit() builds that form
# from parts it encoded once (mapping.Envelope); zlib against a preset dictionary stored less but
# cost 7 µs of emit()'s 50. A stored record starts
# with b"\x00" and a format version; plain JSON (b"{") reads as it is, so older queues stay valid.
SHORTHAND_V1: Final = (
    b',"schema_version":1,"$lib":"analytics-telemetry","$lib_version":"',
    b'","$geoip_disable":true}}',
    b'{"event":"',
    b'","distinct_id":"',
    b'","uuid":"',
    b'","timestamp":"',
    b'","properties":{',
    b',"$session_id":"',
    b'","app_version":"',
)
# Control bytes 0x01-0x08 and 0x0B-0x0C: never tab, newline or carriage return.
TOKEN_BYTES: Final = (1, 2, 3, 4, 5, 6, 7, 8, 11)
ENCODE_V1: Final = tuple(
    (text, bytes([token])) for text, token in zip(SHORTHAND_V1, TOKEN_BYTES, strict=True)
)
DECODE_V1: Final = tuple(reversed(ENCODE_V1))
STORED_PREFIX_V1: Final = b"\x00\x01"
# Format 2 adds the runs that an anonymous install's events and LLM events repeat. It is written
# from now on; format 1 still reads. The first run goes first: it holds format 1's `,"$session_id":"`.
SHORTHAND_V2_ADDED: Final = (
    b',"$process_person_profile":false,"$session_id":"',
    b'"$ai_lib":"analytics-telemetry","$ai_lib_version":"',
)
ENCODE_V2: Final = (
    *((text, bytes([token])) for text, token in zip(SHORTHAND_V2_ADDED, (12, 14), strict=True)),
    *ENCODE_V1,
)
DECODE_V2: Final = tuple(reversed(ENCODE_V2))
STORED_PREFIX: Final = b"\x00\x02"


def pack(record: bytes) -> bytes:
    """The stored form of an encoded message (a record already in it is returned as it is)."""
    if record.startswith(b"\x00"):
        return record
    return STORED_PREFIX + shorten(record)


def shorten(fragment: bytes) -> bytes:
    """``fragment`` with each run replaced by its byte: a whole message, or a constant part of one."""
    for text, token in ENCODE_V2:
        fragment = fragment.replace(text, token)
    return fragment


def unpack(stored: bytes) -> bytes:
    """The encoded message from its stored form (plain JSON passes through)."""
    if stored.startswith(STORED_PREFIX):
        table = DECODE_V2
    elif stored.startswith(STORED_PREFIX_V1):
        table = DECODE_V1
    else:
        return stored
    record = stored[len(STORED_PREFIX) :]
    for text, token in table:
        record = record.replace(token, text)
    return record


def unpack_many(stored: list[bytes]) -> list[bytes]:
    """``unpack`` of each record, in one pass over all of them: eleven scans of a whole batch
    instead of eleven per record (the uploader reads 500 at a time, beside an app that emits)."""
    if not all(record.startswith(STORED_PREFIX) for record in stored):
        return [unpack(record) for record in stored]
    # No record of ours holds a zero byte past its prefix (JSON escapes control characters, and
    # the runs' bytes start at 1), so a zero byte can separate them; one that does (written by
    # something else) is read record by record.
    joined = b"\x00".join([record[len(STORED_PREFIX) :] for record in stored])
    for text, token in DECODE_V2:
        joined = joined.replace(token, text)
    plain = joined.split(b"\x00") if stored else []
    return plain if len(plain) == len(stored) else [unpack(record) for record in stored]
