#!/usr/bin/env python3
# Writes test/corpus/bencode/*.ng: NG datagrams ("<cookie> <bencode>") that are malformed at
# the bencode level or carry a command the relay must refuse. Each must get an NG error reply
# (unit.mediarelay) and never crash the decoder (unit.bencode).
import os
import sys

SDP = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio\r\n"
cases = {
    "empty": b"",
    "only-cookie": b"abc",
    "cookie-space-nothing": b"abc ",
    "cookie-only-spaces": b"   ",
    "no-space": b"abcd7:command4:pinge",
    "truncated-dict": b"c1 d7:command4:ping",
    "truncated-string": b"c1 d7:command40:ping",
    "string-length-huge": b"c1 d7:command99999999999999999999999:pinge",
    "string-length-overflow": b"c1 d7:command18446744073709551617:xe",
    "string-leading-zero": b"c1 d07:command4:pinge",
    "int-empty": b"c1 d7:commandiee",
    "int-negative-zero": b"c1 d7:commandi-0ee",
    "int-leading-zero": b"c1 d7:commandi042ee",
    "int-overflow": b"c1 d7:commandi99999999999999999999999ee",
    "int-bare-minus": b"c1 d7:commandi-ee",
    "int-garbage": b"c1 d7:commandi4x2ee",
    "key-not-string": b"c1 di1e4:pinge",
    "key-without-value": b"c1 d7:commande",
    "deep-nesting": b"c1 " + b"l" * 5000 + b"e" * 5000,
    "deep-dict-nesting": b"c1 d1:a" + b"d1:a" * 200 + b"i1e" + b"e" * 201,
    "trailing-garbage": b"c1 d7:command4:pingeXYZ",
    "not-a-dict": b"c1 l7:command4:pinge",
    "top-level-string": b"c1 4:ping",
    "top-level-int": b"c1 i4e",
    "unknown-byte": b"c1 d7:command4:ping1:xZe",
    "command-not-string": b"c1 d7:commandi1ee",
    "command-missing": b"c1 d3:foo3:bare",
    "command-unknown": b"c1 d7:command5:dancee",
    "command-empty": b"c1 d7:command0:e",
    "offer-no-callid": b"c1 d7:command5:offer8:from-tag1:a3:sdp4:v=0\re",
    "offer-no-fromtag": b"c1 d7:command5:offer7:call-id1:x3:sdp3:v=0e",
    "offer-no-sdp": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:ae",
    "offer-sdp-garbage": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:a3:sdp11:hello worlde",
    "offer-sdp-not-string": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:a3:sdpli1eee",
    "offer-flags-not-list": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:a5:flagsi3e3:sdp3:v=0e",
    "offer-replace-bad": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:a7:replacel5:bogusee",
    "offer-ice-bad": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:a3:ICE5:bogus3:sdp3:v=0e",
    "offer-transport-bad": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:a18:transport-protocol7:TCP/XYZ3:sdp3:v=0e",
    "offer-callid-with-nul": b"c1 d7:command5:offer7:call-id3:a\x00b8:from-tag1:a3:sdp3:v=0e",
    "offer-sdp-no-media-port": b"c1 d7:command5:offer7:call-id1:x8:from-tag1:a3:sdp%d:%se" % (len(SDP), SDP),
    "answer-unknown-call": b"c1 d7:command6:answer7:call-id7:nothere8:from-tag1:a6:to-tag1:b3:sdp3:v=0e",
    "answer-no-totag": b"c1 d7:command6:answer7:call-id1:x8:from-tag1:a3:sdp3:v=0e",
    "delete-unknown-call": b"c1 d7:command6:delete7:call-id7:nothere8:from-tag1:ae",
    "query-no-callid": b"c1 d7:command5:querye",
    "list-limit-negative": b"c1 d7:command4:list5:limiti-5ee",
    "list-limit-string": b"c1 d7:command4:list5:limit3:abce",
    "binary-noise": bytes(range(256)),
    "many-items": b"c1 d7:command4:ping1:xl" + b"i1e" * 70000 + b"ee",
}

out = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "bencode")
os.makedirs(out, exist_ok=True)
for name, data in cases.items():
    with open(os.path.join(out, name + ".ng"), "wb") as f:
        f.write(data)
print(f"{len(cases)} files in {out}")
