"""A Web Push endpoint that is not ours: the push service and the browser in one.

`subscribe` makes a subscription as a browser would (a P-256 key pair and a 16-byte auth
secret) and answers its endpoint and public keys. Every POST to an endpoint is checked like a
push service checks it (VAPID JWT of RFC 8292: ES256 signature with the key in `k`, `aud` the
endpoint's origin, `exp` within 24 h, `sub` a mailto: or https: URI) and decrypted like a
browser decrypts it (RFC 8291 aes128gcm with the subscription's private key, by `http_ece`),
then recorded. `mode` makes an endpoint (or all) answer 404 / 410 / 500 or hang.
"""

import argparse
import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from common import emit, record, serve_commands, server_tls_context

SUBS = {}  # id -> {"key": private key, "auth": bytes}
MODES = {}  # id or "*" -> "ok" | "gone" | "notfound" | "error" | "hang"
LOCK = threading.Lock()
ORIGIN = None


def b64url_decode(s):
    s = s.strip()
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def check_vapid(header):
    """Returns (claims, key_b64, problems)."""
    problems = []
    if not header or not header.startswith("vapid "):
        return None, None, ["Authorization is not `vapid t=…, k=…`"]
    params = {}
    for part in header[len("vapid "):].split(","):
        if "=" in part:
            k, v = part.strip().split("=", 1)
            params[k] = v
    token, key = params.get("t"), params.get("k")
    if not token or not key:
        return None, key, ["t or k missing"]
    try:
        head_b64, claims_b64, sig_b64 = token.split(".")
        head = json.loads(b64url_decode(head_b64))
        claims = json.loads(b64url_decode(claims_b64))
        sig = b64url_decode(sig_b64)
    except ValueError:
        return None, key, ["JWT not parseable"]
    if head.get("alg") != "ES256":
        problems.append("alg is not ES256")
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        if len(sig) != 64:
            raise InvalidSignature()
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        public.verify(der, (head_b64 + "." + claims_b64).encode(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        problems.append("signature does not verify with k")
    if claims.get("aud") != ORIGIN:
        problems.append("aud is not the endpoint origin")
    now = time.time()
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now or exp > now + 24 * 3600:
        problems.append("exp not within 24 h")
    sub = claims.get("sub", "")
    if not (isinstance(sub, str) and (sub.startswith("mailto:") or sub.startswith("https:"))):
        problems.append("sub is not mailto: or https:")
    return claims, key, problems


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        parts = self.path.strip("/").split("/")
        sub_id = parts[1] if len(parts) == 2 and parts[0] == "push" else None
        with LOCK:
            sub = SUBS.get(sub_id)
            mode = MODES.get(sub_id) or MODES.get("*") or "ok"
        rec = {
            "subscription": sub_id,
            "ttl": self.headers.get("TTL"),
            "urgency": self.headers.get("Urgency"),
            "topic": self.headers.get("Topic"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "content_type": self.headers.get("Content-Type"),
            "mode": mode,
        }
        claims, key, problems = check_vapid(self.headers.get("Authorization"))
        rec["vapid"] = {"claims": claims, "k": key, "problems": problems}
        if sub is None:
            rec["error"] = "unknown subscription"
        elif rec["content_encoding"] != "aes128gcm":
            rec["error"] = "Content-Encoding is not aes128gcm"
        else:
            try:
                plain = http_ece.decrypt(
                    body, private_key=sub["key"], auth_secret=sub["auth"], version="aes128gcm"
                )
                rec["payload_raw"] = plain.decode("utf-8")
                rec["payload"] = json.loads(plain)
            except Exception as e:
                rec["error"] = "decryption failed: " + repr(e)
        record(rec)
        if mode == "hang":
            time.sleep(30)
        statuses = {"ok": 201, "gone": 410, "notfound": 404, "error": 500, "hang": 201}
        status = statuses.get(mode, 201)
        if status == 201 and ("error" in rec or problems):
            status = 400 if "error" in rec else 403
        self.answer(status)


def handle(cmd):
    if cmd["cmd"] == "subscribe":
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        sub_id = b64url(os.urandom(9))
        with LOCK:
            SUBS[sub_id] = {"key": key, "auth": auth}
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "subscription": sub_id,
            "endpoint": ORIGIN + "/push/" + sub_id,
            "p256dh": b64url(public),
            "auth": b64url(auth),
        }
    if cmd["cmd"] == "mode":
        with LOCK:
            MODES[cmd.get("subscription") or "*"] = cmd["mode"]
        return {}
    raise ValueError("unknown command")


def main():
    global ORIGIN
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    ctx = server_tls_context(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    ORIGIN = "https://127.0.0.1:%d" % port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emit({"ready": "push", "port": port, "origin": ORIGIN})
    serve_commands(handle)


if __name__ == "__main__":
    main()
