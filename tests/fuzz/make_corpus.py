#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/) from the cases below.

Run from anywhere: python3 tests/fuzz/make_corpus.py. It rewrites the files it names and leaves
others alone, so inputs that found bugs (added by hand, named after the bug) stay. The requests
are encoded here by hand rather than with protobuf's Python API, which refuses what hostile
clients send: invalid UTF-8 in string fields, wrong wire types, truncated messages.

File formats (tests/fuzz/rpc_harness.hpp): codec inputs are one byte of nesting limit (1 + byte %
80) followed by the payload text; the RPC targets' inputs are records, each a selector byte, a
16-bit little-endian length and that many bytes of one serialized request.
"""
import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def varint(n):
    n &= (1 << 64) - 1  # negative int32s are sign-extended to 64 bits, as protobuf does
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """A field: int (varint), bytes/str (length-delimited)."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint((number << 3) | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields if v is not None)


def key(dag="dag", task="task", run="run", map_index=-1):
    return message((1, dag), (2, task), (3, run), (4, map_index))


def send(payload, **k):
    return message((1, key(**k)), (2, payload))


def frame(id, payload="{}", timeout_ms=None, cancel=None, **k):
    return message((1, id), (2, key(**k)), (3, payload), (4, timeout_ms), (5, cancel))


def batch(*frames):
    return message(*((1, f) for f in frames))


def records(*items):
    """items: (selector, bytes) pairs."""
    return b"".join(struct.pack("<BH", s, len(b)) + b for s, b in items)


def pull(dag="dag", run="run", task="task", key_="last", map_index=None, all_map_indexes=None, wait=None,
         min_count=None):
    return message((1, dag), (2, run), (3, task), (4, key_), (5, map_index), (6, all_map_indexes), (7, wait),
                   (8, min_count))


def watch(dag="dag", run="run", task=None, map_index=None, all_map_indexes=None, from_start=None, after=None):
    return message((1, dag), (2, run), (3, task), (4, map_index), (5, all_map_indexes), (6, from_start), (7, after))


def list_request(dag=None, run=None, task=None, page_size=None, page_token=None):
    return message((1, dag), (2, run), (3, task), (4, page_size), (5, page_token))


LONG = "k" * 10_000
BAD_UTF8 = b"\xff\xfe"
NESTED_65 = "{\"a\":" * 65 + "1" + "}" * 65

# Payload texts the issue and docs/protocol.md name: numbers out of range, nesting, non-objects.
PAYLOADS = {
    "object": '{"greeting":"hello","n":[1,2.5,-3,true,null]}',
    "empty": "",
    "exponent_overflow": '{"a":1e2147483648}',
    "exponent_underflow": '{"a":1e-2147483648}',
    "double_overflow": '{"a":1e400}',
    "double_underflow": '{"a":1e-400}',
    "max_double": '{"a":1.7976931348623157e308}',
    "big_integers": '{"a":18446744073709551615,"b":-9223372036854775808,"c":18446744073709551616}',
    "nested_65": NESTED_65,
    "array": "[1,2,3]",
    "string": '"x"',
    "bad_utf8": '{"a":"\xff"}',
    "escaped_surrogate": '{"a":"\\ud800"}',
    "duplicate_members": '{"a":1,"a":2}',
    "truncated": '{"a":[1,2',
    "comment": '{"a":1}/*x*/',
}


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def main():
    for name, text in PAYLOADS.items():
        raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        if name == "bad_utf8":
            raw = b'{"a":"\xff"}'
        write("codec", name, bytes([63]) + raw)  # limit 64, the server's default
    write("codec", "nested_limit_2", bytes([1]) + b'{"a":{"b":1}}')

    # Send: the payloads above through the server, and hostile keys.
    for name, text in PAYLOADS.items():
        raw = b'{"a":"\xff"}' if name == "bad_utf8" else text.encode()
        write("send", name, records((0, send(raw))))
    write("send", "long_dag_id", records((0, send("{}", dag=LONG))))
    write("send", "bad_utf8_task_id", records((0, send("{}", task=BAD_UTF8))))
    write("send", "unknown_key", records((0, send("{}", task="nobody"))))
    write("send", "mapped_keys", records(*((0, send('{"i":%d}' % i, task="mapped", map_index=i)) for i in range(4))))
    write("send", "two_messages", records((1, send("{}"))))
    write("send", "no_message", records((2, b"")))
    write("send", "truncated_message", records((0, send('{"a":1}')[:-3])))
    write("send", "wrong_wire_type", records((0, b"\x0d\x01\x02\x03\x04" + send("{}"))))
    write("send", "no_key", records((0, message((2, "{}")))))

    # Exchange: batches of frames on one stream, and new streams.
    write("exchange", "one_frame", records((0, batch(frame(1)))))
    write("exchange", "many_frames", records((0, batch(*(frame(i, '{"i":%d}' % i) for i in range(1, 65))))))
    write("exchange", "duplicate_ids", records((0, batch(frame(7), frame(7), frame(7, cancel=True)))))
    write("exchange", "cancel_unknown", records((0, batch(frame(99, cancel=True)))))
    write("exchange", "zero_id", records((0, batch(frame(0)))))
    write("exchange", "timeouts", records((0, batch(frame(1, timeout_ms=1), frame(2, timeout_ms=(1 << 64) - 1)))))
    write("exchange", "bad_payloads",
          records((0, batch(*(frame(i + 1, PAYLOADS[n].encode() if n != "bad_utf8" else b'{"a":"\xff"}')
                              for i, n in enumerate(sorted(PAYLOADS)))))))
    write("exchange", "hostile_keys",
          records((0, batch(frame(1, dag=LONG), frame(2, task=BAD_UTF8), frame(3, task="nobody"),
                            frame(4, task="mapped", map_index=7)))))
    write("exchange", "two_streams", records((0, batch(frame(1))), (0, batch(frame(2))), (1, batch(frame(1)))))
    write("exchange", "empty_batch", records((0, b"")))
    write("exchange", "truncated_batch", records((0, batch(frame(1), frame(2))[:-2])))

    # Pull (0), Watch (1), GetState (2), List (3), Send (4).
    write("xcom", "pull", records((0, pull())))
    write("xcom", "pull_mapped", records((0, pull(task="mapped", all_map_indexes=True))))
    write("xcom", "pull_wait", records((0, pull(key_="later", wait=True, min_count=3))))
    write("xcom", "pull_return_value", records((0, pull(key_="return_value", map_index=-1))))
    write("xcom", "pull_bad_map_index", records((0, pull(map_index=-7))))
    write("xcom", "pull_long_key", records((0, pull(key_=LONG))))
    write("xcom", "pull_bad_utf8", records((0, pull(key_=BAD_UTF8))))
    write("xcom", "pull_empty", records((0, b"")))
    write("xcom", "watch_from_start", records((1, watch(from_start=True))))
    write("xcom", "watch_mapped", records((1, watch(task="mapped", all_map_indexes=True, from_start=True))))
    write("xcom", "watch_after_far", records((1, watch(after=(1 << 64) - 1))))
    write("xcom", "watch_bad_utf8", records((1, watch(dag=BAD_UTF8))))
    write("xcom", "get_state", records((2, message((1, key())))))
    write("xcom", "get_state_unknown", records((2, message((1, key(task=LONG))))))
    write("xcom", "list", records((3, list_request(page_size=1)), (3, list_request(dag="dag", page_size=1 << 31))))
    write("xcom", "list_bad_token", records((3, list_request(page_token=b"\x00\xff garbage"))))
    write("xcom", "send_then_pull", records((4, send('{"v":1}')), (0, pull()), (1, watch(from_start=True))))


if __name__ == "__main__":
    main()
