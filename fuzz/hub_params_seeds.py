#!/usr/bin/env python3
"""Writes the hand-made seeds of the hub_params target that exercise the global memory bound,
epochs, TTL and bounded answers into corpus/hub_params/ (the older seeds were written by
hand as bytes). The input layout is described at the top of fuzz_targets/hub_params.rs.

    python3 fuzz/hub_params_seeds.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "hub_params")

# Channel indexes: 0 and 1 are the two fuzzed parser strings, 2 is "a", 3 is "b.c-1:_".
S1, S2, A, B = 0, 1, 2, 3
# Epoch of a subscribe's cursor.
ABSENT, CURRENT, WRONG, PREVIOUS = 0, 1, 2, 3
# Clock steps before an operation: 0, 1, 9 or 100 ms.
NOW, MS1, MS9, MS100 = 0, 1, 2, 3


def seed(ctl, lim, ops, s1=b"x", s2=b"y", secs=90061, nanos=1953125):
    """ctl: bits 0-1 retain-1, 2-3 retain_bytes, 4-5 max_batch-1, 7 service phase.
    lim: bits 0-2 max_retained_bytes, 3-4 max_answer_bytes, 5-6 TTL, 7 max_channels 2."""
    return (bytes([ctl, lim, len(s1)]) + s1 + bytes([len(s2)]) + s2
            + secs.to_bytes(8, "little") + nanos.to_bytes(8, "little") + b"".join(ops))


def op(kind, name, epoch=0, step=NOW):
    return bytes([kind | name << 2 | epoch << 4 | step << 6])


def pub(name, data, step=NOW):
    return op(0, name, step=step) + bytes([len(data)]) + data


def sub(name, step=NOW):
    """A subscribe without cursor."""
    return op(1, name, step=step)


def cur(name, since, epoch=ABSENT, step=NOW):
    """A subscribe with cursor `since` (0..11) and an epoch choice."""
    return op(2, name, epoch, step) + bytes([since])


def raw(name, query, inm=None, on_pub=False, step=NOW):
    flags = (1 if inm is not None else 0) | (2 if on_pub else 0)
    out = op(3, name, step=step) + bytes([flags, len(query)]) + query
    if inm is not None:
        out += bytes([len(inm)]) + inm
    return out


# ctl: retain 4, retain_bytes 4096, max_batch 4.
ROOMY = 0x3F
SERVICE = 0x80

SEEDS = {
    # max_retained_bytes 300: four 10-byte messages (74 B each) fit; the fifth evicts the
    # globally oldest, whatever its channel. "a" loses all its messages, is dropped and comes
    # back with a new epoch, so a cursor of its old life is a reset.
    "global_evict": seed(ROOMY, 0x05, [
        pub(A, b"a-00000001"), pub(B, b"b-00000001"), pub(A, b"a-00000002"),
        pub(B, b"b-00000002"), cur(A, 0, CURRENT), pub(B, b"b-00000003"),
        cur(A, 0), pub(B, b"b-00000004"), pub(B, b"b-00000005"), cur(B, 0),
        pub(A, b"a-new-life"), cur(A, 2, PREVIOUS), cur(A, 1, CURRENT), cur(B, 2, CURRENT),
    ]),
    # Epochs in cursors; TTL 10 ms drops "a" after a step of 100 ms.
    "epoch_cursors": seed(ROOMY, 0x40, [
        pub(A, b"m1"), pub(A, b"m2"), cur(A, 1, CURRENT), cur(A, 5, CURRENT), cur(A, 1, WRONG),
        cur(A, 0, WRONG), cur(A, 5), sub(A, step=MS100), pub(A, b"n1"), cur(A, 2, PREVIOUS),
        cur(A, 0, PREVIOUS), cur(A, 1, CURRENT), cur(B, 0, WRONG), cur(B, 3, WRONG), cur(B, 3),
        cur(B, 0, CURRENT),
    ]),
    # TTL 10 ms, steps landing exactly on the deadlines.
    "ttl_expire": seed(ROOMY, 0x40, [
        pub(A, b"1"), pub(B, b"2", step=MS9), cur(A, 0, step=MS1), cur(B, 0), pub(A, b"3"),
        cur(B, 0, step=MS9), pub(B, b"4", step=MS1), cur(A, 0, CURRENT, step=MS9),
        cur(B, 0, CURRENT, step=MS1),
    ]),
    # max_answer_bytes = frame + 110: text, base64 (control bytes, quotes), UTF-8, empty.
    "answer_cut": seed(ROOMY, 0x10, [
        pub(A, b"hello"), pub(A, bytes([1]) * 30), pub(A, b'""""'), pub(A, "d\u00e9j\u00e0".encode()),
        pub(A, b""), pub(A, b"a\"bcdef"), cur(A, 0), cur(A, 1), cur(A, 2), cur(A, 3),
        pub(A, bytes(range(0x80, 0xa8))), cur(A, 4),
    ]),
    # max_answer_bytes = frame + 110, filled exactly: an empty message (2 + 48 bytes) and a
    # 10-byte text (12 + 48) fit together, a third does not.
    "answer_exact_fit": seed(ROOMY, 0x10, [
        pub(A, b""), pub(A, b"0123456789"), pub(A, b"x"), cur(A, 0), cur(A, 1),
        pub(B, b"0123456789"), pub(B, b""), pub(B, b""), cur(B, 0),
    ]),
    # max_answer_bytes = the frame: one message an answer, however many max_batch allows.
    "answer_one": seed(ROOMY, 0x08, [
        pub(B, b"1"), pub(B, b"22"), pub(B, b"333"), cur(B, 0), cur(B, 1), cur(B, 2),
    ]),
    # max_channels 2, max_retained_bytes 150 (two 10-byte messages): evicting a channel's
    # last message frees its slot; subscribes never fail on the limit.
    "channel_limit_drop": seed(ROOMY, 0x83, [
        pub(A, b"0123456789"), pub(B, b"0123456789"), pub(S1, b"0123456789"), sub(S2),
        cur(S2, 4, WRONG), pub(A, b"0123456789"), cur(B, 0), pub(S2, b""), pub(S1, b""),
    ]),
    # Only empty messages fit in the hub (max_retained_bytes 64): anything else is TooLarge.
    "too_large": seed(0x00, 0x01, [
        pub(A, b"x"), pub(A, b""), pub(A, b""), cur(A, 0), pub(B, b""), cur(B, 0, CURRENT),
    ]),
    # The service: epochs learnt from answers, in queries (lowercase, uppercase, wrong) and in
    # If-None-Match, and malformed ones.
    "service_epochs": seed(SERVICE | ROOMY, 0x00, [
        pub(A, b"m1"), cur(A, 0), pub(A, b"m2"), cur(A, 1, CURRENT), cur(A, 1, WRONG),
        cur(A, 1, PREVIOUS), cur(A, 2, CURRENT),
        raw(A, b"since=1&epoch=xyz&timeout=0"), raw(A, b"since=1&epoch=0123456&timeout=0"),
        raw(A, b"since=1&epoch=ABCDEF01&timeout=0"), raw(A, b"epoch=zz&timeout=0"),
        raw(A, b"since=x&epoch=zz&timeout=0"),
        raw(A, b"timeout=0", b'"01234567:1"'), raw(A, b"timeout=0", b'W/"abcdef01:2"'),
        raw(A, b"timeout=0", b'"0123456g:1"'), raw(A, b"timeout=0", b'"abcdef01:"'),
        raw(A, b"timeout=0", b'":5"'), raw(A, b"timeout=0", b'"abcdef01:1:2"'),
        raw(A, b"timeout=0", b'"7"'),
    ]),
    # The service with a 1 ms TTL, a small hub and answers of one message: a held poll woken
    # by a publish, messages evicted by age and by the bound, the TTL timer.
    "service_bounds_ttl": seed(SERVICE | ROOMY, 0x2D, [
        raw(A, b"timeout=5"), pub(A, b"wake up"), pub(A, b"0123456789"), pub(B, b"0123456789"),
        pub(A, b"0123456789"), pub(B, bytes([2]) * 20), cur(B, 0), cur(A, 0, CURRENT),
        raw(B, b"since=0&timeout=0", on_pub=True), pub(B, b"z"),
    ]),
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")
