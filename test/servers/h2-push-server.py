#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""An HTTP/2-over-TLS server that plays a push provider for the pushd tests.

Modes: "apns" (POST /3/device/<token>, errors as {"reason": ...}), "fcm" (POST
/v1/projects/<id>/messages:send with a Bearer access token, errors in Google's format, plus the
OAuth2 token endpoint POST /token) and "generic" (any method and path, empty answers).

Every request is appended to --record as one JSON line once its body is complete:
  {"time": epoch seconds, "conn": n, "stream": id, "method", "path", "headers": {name: value}, "body": text,
   "client-cert": subject or null}
conn numbers the TLS connections in accept order, so a test sees which requests shared one.

Answers follow --scenario, a JSON file read again for every request so a test can change it:
  {"default": ANSWER, "tokens": {"<substring of path or body>": [ANSWER, ANSWER, ...]}}
An ANSWER is {"status": 200, "reason": "Unregistered", "fcm": "UNREGISTERED", "delay": 0.5,
"body": {...}, "headers": {"retry-after": "1"}}; for a token the answers are used in turn, the last one repeating. The token
endpoint answers {"access_token": "access-<n>", "expires_in": <scenario "token-lifetime", 3600>}.
"""

import argparse
import asyncio
import json
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events

ARGS = None
CONNECTIONS = 0
TOKENS_ISSUED = 0
USED = {}  # token key -> answers used so far


def load_scenario():
    try:
        with open(ARGS.scenario) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def pick_answer(path, body):
    sc = load_scenario()
    for key, answers in sc.get("tokens", {}).items():
        if key in path or key in body:
            n = USED.get(key, 0)
            USED[key] = n + 1
            return answers[min(n, len(answers) - 1)]
    return sc.get("default", {"status": 200})


def record(entry):
    with open(ARGS.record, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


def error_body(mode, answer):
    st = answer.get("status", 200)
    if "body" in answer:
        return json.dumps(answer["body"]).encode()
    if st == 200:
        if mode == "fcm":
            return json.dumps({"name": "projects/p/messages/1"}).encode()
        return b""
    if mode == "apns":
        return json.dumps({"reason": answer.get("reason", "InternalServerError")}).encode()
    if mode == "fcm":
        code = answer.get("fcm", "INTERNAL")
        return json.dumps({"error": {"code": st, "message": "test", "status": code,
                                     "details": [{"@type": "type.googleapis.com/google.firebase"
                                                  ".fcm.v1.FcmError", "errorCode": code}]}}).encode()
    return b""


class Conn(asyncio.Protocol):
    def __init__(self):
        global CONNECTIONS
        CONNECTIONS += 1
        self.n = CONNECTIONS
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams = {}
        self.transport = None
        self.cert = None

    def connection_made(self, transport):
        self.transport = transport
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            peer = sslobj.getpeercert()
            if peer:
                self.cert = dict(x[0] for x in peer.get("subject", ())).get("commonName")
        self.h2.initiate_connection()
        self.flush()

    def flush(self):
        if self.transport and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def data_received(self, data):
        try:
            events = self.h2.receive_data(data)
        except Exception:
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = {"headers": dict(ev.headers), "body": b""}
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id]["body"] += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.request(ev.stream_id)
        self.flush()

    def request(self, sid):
        st = self.streams.pop(sid)
        hdrs = st["headers"]
        body = st["body"].decode("utf-8", "replace")
        path = hdrs.get(":path", "")
        method = hdrs.get(":method", "")
        record({"time": time.time(), "conn": self.n, "stream": sid, "method": method,
                "path": path,
                "headers": {k: v for k, v in hdrs.items()}, "body": body,
                "client-cert": self.cert})
        if ARGS.mode == "fcm" and path == "/token":
            global TOKENS_ISSUED
            TOKENS_ISSUED += 1
            sc = load_scenario()
            ans = sc.get("token-answer", {"status": 200})
            if ans.get("status", 200) == 200:
                out = json.dumps({"access_token": "access-%d" % TOKENS_ISSUED,
                                  "expires_in": sc.get("token-lifetime", 3600),
                                  "token_type": "Bearer"}).encode()
            else:
                out = json.dumps({"error": "invalid_grant"}).encode()
            self.respond(sid, ans.get("status", 200), out, ans.get("delay", 0))
            return
        ans = pick_answer(path, body)
        self.respond(sid, ans.get("status", 200), error_body(ARGS.mode, ans), ans.get("delay", 0),
                     ans.get("headers", {}))

    def respond(self, sid, status, body, delay, extra_headers=None):
        def send():
            if self.transport.is_closing():
                return
            headers = [(":status", str(status)), ("content-length", str(len(body)))]
            if ARGS.mode == "apns":
                headers.append(("apns-id", "00000000-0000-0000-0000-%012d" % sid))
            if body:
                headers.append(("content-type", "application/json"))
            headers.extend((k, str(v)) for k, v in (extra_headers or {}).items())
            try:
                self.h2.send_headers(sid, headers, end_stream=not body)
                if body:
                    self.h2.send_data(sid, body, end_stream=True)
            except Exception:
                return
            self.flush()
        if delay:
            asyncio.get_running_loop().call_later(delay, send)
        else:
            send()


async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(ARGS.cert, ARGS.key)
    ctx.set_alpn_protocols(["h2"])
    if ARGS.client_ca:
        ctx.load_verify_locations(ARGS.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", ARGS.port, ssl=ctx)
    print("listening on 127.0.0.1:%d (%s)" % (ARGS.port, ARGS.mode), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["apns", "fcm", "generic"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-ca", help="require a client certificate signed by this CA")
    ap.add_argument("--record", required=True)
    ap.add_argument("--scenario", required=True)
    ARGS = ap.parse_args()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
