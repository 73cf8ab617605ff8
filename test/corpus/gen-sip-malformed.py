#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Writes test/corpus/sip-malformed/*.sip: one broken request each, CRLF line endings.
# test/integration/test-proxy-sanity.c holds the expected outcome of each file.
import os

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sip-malformed")


def request(name, method="OPTIONS", ruri="sip:bob@example.com", via=True,
            frm="<sip:alice@example.com>;tag=t-{n}", to="<sip:bob@example.com>",
            call_id="{n}@corpus", cseq="1 {m}", mf="70", extra=(), body=b"",
            content_length=None):
    lines = [f"{method} {ruri} SIP/2.0"]
    if via:
        lines.append(f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK-{name}")
    for hdr, val in (("From", frm), ("To", to), ("Call-ID", call_id), ("CSeq", cseq),
                     ("Max-Forwards", mf)):
        if val is not None:
            lines.append(f"{hdr}: " + val.format(n=name, m=method))
    lines.extend(extra)
    cl = len(body) if content_length is None else content_length
    lines.append(f"Content-Length: {cl}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CASES = {
    "garbage": bytes((i * 37 + 11) % 256 for i in range(512)),
    "truncated": request("truncated", method="INVITE")[:120],
    "missing-via": request("missing-via", via=False),
    "from-no-host": request("from-no-host", frm="<sip:alice@>;tag=x"),
    "from-no-tag": request("from-no-tag", frm="<sip:alice@example.com>"),
    "from-extra-at": request("from-extra-at", frm="<sip:alice@evil@example.com>;tag=x"),
    "to-no-host": request("to-no-host", to="<sip:bob@>"),
    "to-backslash": request("to-backslash", to="<sip:bo\\b@example.com>"),
    "contact-bad-scheme": request("contact-bad-scheme", method="INVITE",
                                  extra=["Contact: <http://example.com/alice>"]),
    "contact-no-host": request("contact-no-host", method="INVITE",
                               extra=["Contact: <sip:alice@>"]),
    "contact-star-invite": request("contact-star-invite", method="INVITE",
                                   extra=["Contact: *"]),
    "contact-star-register": request("contact-star-register", method="REGISTER",
                                     ruri="sip:example.com", to="<sip:alice@example.com>",
                                     extra=["Contact: *", "Expires: 0"]),
    "ruri-no-host": request("ruri-no-host", ruri="sip:bob@"),
    "ruri-bad-host": request("ruri-bad-host", ruri="sip:bob@example..com"),
    "from-bad-host": request("from-bad-host", frm="<sip:alice@exa_mple.com>;tag=x"),
    "to-bad-host": request("to-bad-host", to="<sip:bob@1.2.3.4.5>"),
    "contact-bad-host": request("contact-bad-host", method="INVITE",
                                extra=["Contact: <sip:alice@exa_mple.com>"]),
    "subscribe-no-event": request("subscribe-no-event", method="SUBSCRIBE"),
    "max-forwards-bad": request("max-forwards-bad", mf="seventy"),
    "max-forwards-missing": request("max-forwards-missing", mf=None),
    "cseq-missing": request("cseq-missing", cseq=None),
    "cseq-mismatch": request("cseq-mismatch", cseq="1 INVITE"),
    "call-id-missing": request("call-id-missing", call_id=None),
    "ack-bad-from": request("ack-bad-from", method="ACK", frm="<sip:alice@exa_mple.com>;tag=x"),
    "ack-unparsable-from": request("ack-unparsable-from", method="ACK",
                                   frm="<sip:alice@>;tag=x"),
    "header-70k": request("header-70k", extra=["X-Padding: " + "a" * 70 * 1024]),
    "nul-bytes": request("nul-bytes", extra=["Subject: a\0b"]).replace(
        b"From: <sip:alice", b"From: <sip:al\0ice"),
    "bad-content-length": request("bad-content-length", content_length=500, body=b"short"),
}

os.makedirs(HERE, exist_ok=True)
for name, data in CASES.items():
    with open(os.path.join(HERE, name + ".sip"), "wb") as f:
        f.write(data)
