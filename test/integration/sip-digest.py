#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A small SIP client for the Authentication tests, for what SIPp cannot do: SHA-256 digests
(Debian's SIPp knows MD5 only), replaying an Authorization header, waiting for a nonce to go
stale, and TLS with a client certificate. Each mode checks its exchange and exits 0 when it
went as expected, 1 with a reason otherwise."""
import argparse
import hashlib
import os
import socket
import ssl
import sys
import time


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def H(alg, s):
    h = hashlib.sha256 if alg.upper() in ("SHA-256", "SHA256") else hashlib.md5
    return h(s.encode()).hexdigest()


def parse_params(text):
    """'Digest a="x, y", b=z' -> ("Digest", {"a": "x, y", "b": "z"})."""
    scheme, _, rest = text.strip().partition(" ")
    params, i = {}, 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = rest.index('"', i + 1)
            params[name] = rest[i + 1:end]
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[name] = rest[i:end].strip()
            i = end
    return scheme, params


class Response:
    def __init__(self, raw):
        head = raw.split("\r\n\r\n", 1)[0]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if parts[0] != "SIP/2.0":
            fail("not a response: " + lines[0])
        self.status = int(parts[1])
        self.phrase = parts[2] if len(parts) > 2 else ""
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))
        self.raw = raw

    def all(self, name):
        return [v for n, v in self.headers if n == name.lower()]

    def get(self, name):
        values = self.all(name)
        return values[0] if values else None


class Client:
    def __init__(self, args):
        host, port = args.proxy.rsplit(":", 1)
        self.addr = (host, int(port))
        self.tls = args.tls
        if args.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(args.ca)
            ctx.check_hostname = False
            if args.cert:
                ctx.load_cert_chain(args.cert, args.key)
            raw = socket.create_connection(self.addr, timeout=5)
            self.sock = ctx.wrap_socket(raw)
            self.transport = "TLS"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.transport = "UDP"
        self.sock.settimeout(5)
        self.local = self.sock.getsockname()
        self.buf = b""
        self.n = 0
        self.tag = "t%d" % os.getpid()
        self.call_id = "c%d-%d@127.0.0.1" % (os.getpid(), time.monotonic_ns())

    def send(self, text):
        self.last_sent = text
        data = text.encode()
        if self.tls:
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, self.addr)

    def recv(self):
        if not self.tls:
            data, _ = self.sock.recvfrom(65535)
            return Response(data.decode(errors="replace"))
        while True:
            if b"\r\n\r\n" in self.buf:
                head, rest = self.buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if len(rest) >= length:
                    self.buf = rest[length:]
                    return Response((head + b"\r\n\r\n" + rest[:length]).decode(errors="replace"))
            chunk = self.sock.recv(65535)
            if not chunk:
                fail("connection closed")
            self.buf += chunk

    def request(self, method, ruri, from_user, to_user, domain, headers=(), cseq=None,
                branch=None, to_tag=None):
        self.n += 1
        branch = branch or "z9hG4bK-%d-%d" % (os.getpid(), self.n)
        cseq = cseq or self.n
        scheme = "sips" if self.tls else "sip"
        lines = [
            "%s %s SIP/2.0" % (method, ruri),
            "Via: SIP/2.0/%s %s:%d;branch=%s;rport" % (self.transport, self.local[0],
                                                     self.local[1], branch),
            "From: <sip:%s@%s>;tag=%s" % (from_user, domain, self.tag),
            "To: <sip:%s@%s>%s" % (to_user, domain, ";tag=" + to_tag if to_tag else ""),
            "Call-ID: " + self.call_id,
            "CSeq: %d %s" % (cseq, method),
            "Contact: <sip:%s@%s:%d;transport=%s>" % (from_user, self.local[0], self.local[1],
                                                      self.transport.lower()),
            "Max-Forwards: 70",
        ]
        if method == "REGISTER":
            lines.append("Expires: 600")
        lines += list(headers)
        lines += ["Content-Length: 0", "", ""]
        self.send("\r\n".join(lines))
        return branch, cseq

    def final(self):
        while True:
            r = self.recv()
            if r.status >= 200:
                return r


def challenges(resp):
    name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
    return [parse_params(v)[1] for v in resp.all(name)]


def credentials(ch, method, uri, user, password, nc=1, cnonce="0a4f113b"):
    alg = ch.get("algorithm", "MD5")
    ha1 = H(alg, "%s:%s:%s" % (user, ch["realm"], password))
    ha2 = H(alg, "%s:%s" % (method, uri))
    ncs = "%08x" % nc
    resp = H(alg, ":".join([ha1, ch["nonce"], ncs, cnonce, "auth", ha2]))
    return ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            'algorithm=%s, cnonce="%s", qop=auth, nc=%s' % (user, ch["realm"], ch["nonce"], uri,
                                                            resp, alg, cnonce, ncs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["register", "invite", "replay", "stale", "plain",
                                     "retransmit"])
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--domain", default="example.org")
    ap.add_argument("--user", required=True, help="identity user (From)")
    ap.add_argument("--auth-user", help="digest username (default: --user)")
    ap.add_argument("--password", default="")
    ap.add_argument("--algorithm", help="answer the challenge of this algorithm")
    ap.add_argument("--expect-algorithms", help="challenges in this order, comma-separated")
    ap.add_argument("--expect", type=int, default=200)
    ap.add_argument("--expect-realm", help="realm every challenge must name")
    ap.add_argument("--wait", type=float, default=0)
    ap.add_argument("--method", default="REGISTER")
    ap.add_argument("--header", action="append", default=[],
                    help="one more header line in every request")
    ap.add_argument("--digest-uri", help="uri= of the credentials (default: the Request-URI)")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    c = Client(args)
    auth_user = args.auth_user or args.user
    d = args.domain

    def send(method, headers=(), cseq=None):
        headers = list(headers) + args.header
        if method == "REGISTER":
            return c.request(method, "sip:" + d, args.user, args.user, d, headers, cseq)
        return c.request(method, "sip:callee@" + d, args.user, "callee", d, headers, cseq)

    def ack(method_cseq, branch, resp):
        """ACK for a non-2xx final answer to an INVITE (same branch, the response's To tag)."""
        to_tag = parse_to_tag(resp.get("to"))
        lines = ["ACK sip:callee@%s SIP/2.0" % d, "Via: " + resp.get("via"),
                 "From: <sip:%s@%s>;tag=%s" % (args.user, d, c.tag),
                 "To: <sip:callee@%s>;tag=%s" % (d, to_tag), "Call-ID: " + c.call_id,
                 "CSeq: %d ACK" % method_cseq, "Max-Forwards: 70", "Content-Length: 0", "", ""]
        c.send("\r\n".join(lines))

    def exchange(method, headers=()):
        branch, cseq = send(method, headers)
        r = c.final()
        if method == "INVITE":
            ack(cseq, branch, r)
        return r

    def expect_challenge(r, stale=False):
        want = 401 if args.method == "REGISTER" else 407
        if r.status != want:
            fail("expected %d, got %d %s" % (want, r.status, r.phrase))
        chs = challenges(r)
        algs = [ch.get("algorithm", "MD5") for ch in chs]
        if args.expect_algorithms and algs != args.expect_algorithms.split(","):
            fail("challenged with %s, expected %s" % (algs, args.expect_algorithms))
        for ch in chs:
            if args.expect_realm and ch.get("realm") != args.expect_realm:
                fail("challenge for realm %s, expected %s" % (ch.get("realm"), args.expect_realm))
            if ch.get("qop") != "auth":
                fail("challenge without qop=auth: %s" % ch)
            if (ch.get("stale", "").lower() == "true") != stale:
                fail("stale=%s expected, got %s" % (stale, ch))
        pick = args.algorithm or algs[0]
        for ch in chs:
            if ch.get("algorithm", "MD5").upper() == pick.upper():
                return ch
        fail("no %s challenge among %s" % (pick, algs))

    hname = "Authorization" if args.method == "REGISTER" else "Proxy-Authorization"
    uri = "sip:" + d if args.method == "REGISTER" else "sip:callee@" + d
    uri = args.digest_uri or uri

    if args.mode == "plain":
        r = exchange(args.method)
        if r.status != args.expect:
            fail("expected %d, got %d %s" % (args.expect, r.status, r.phrase))
    elif args.mode in ("register", "invite"):
        ch = expect_challenge(exchange(args.method))
        r = exchange(args.method, [hname + ": " + credentials(ch, args.method, uri, auth_user,
                                                               args.password)])
        if r.status != args.expect:
            fail("expected %d after authenticating, got %d %s" % (args.expect, r.status,
                                                                 r.phrase))
    elif args.mode == "replay":
        ch = expect_challenge(exchange(args.method))
        cred = hname + ": " + credentials(ch, args.method, uri, auth_user, args.password)
        r = exchange(args.method, [cred])
        if r.status != args.expect:
            fail("expected %d, got %d %s" % (args.expect, r.status, r.phrase))
        # The same header again in a new transaction: refused with a fresh challenge.
        r = exchange(args.method, [cred])
        expect_challenge(r)
        # The same nonce with the next count is a legitimate reuse.
        r = exchange(args.method, [hname + ": " + credentials(ch, args.method, uri, auth_user,
                                                               args.password, nc=2)])
        if r.status != args.expect:
            fail("nonce reused with nc=2: expected %d, got %d %s" % (args.expect, r.status,
                                                                     r.phrase))
    elif args.mode == "retransmit":
        # A retransmission of the authenticated request (same branch) is the same transaction:
        # answered again with the same final response, not taken for a replay.
        ch = expect_challenge(exchange(args.method))
        send(args.method, [hname + ": " + credentials(ch, args.method, uri, auth_user,
                                                      args.password)])
        first = c.final()
        if first.status != args.expect:
            fail("expected %d, got %d %s" % (args.expect, first.status, first.phrase))
        c.send(c.last_sent)
        again = c.final()
        if again.status != first.status or again.get("to") != first.get("to"):
            fail("retransmission answered %d %s (first %d)" % (again.status, again.phrase,
                                                                first.status))
    elif args.mode == "stale":
        ch = expect_challenge(exchange(args.method))
        time.sleep(args.wait)
        r = exchange(args.method, [hname + ": " + credentials(ch, args.method, uri, auth_user,
                                                               args.password)])
        ch = expect_challenge(r, stale=True)
        r = exchange(args.method, [hname + ": " + credentials(ch, args.method, uri, auth_user,
                                                               args.password)])
        if r.status != args.expect:
            fail("after the stale challenge: expected %d, got %d %s" % (args.expect, r.status,
                                                                       r.phrase))
    print("OK", flush=True)


def parse_to_tag(to):
    for p in (to or "").split(";")[1:]:
        if p.strip().startswith("tag="):
            return p.strip()[4:]
    return ""


if __name__ == "__main__":
    main()
