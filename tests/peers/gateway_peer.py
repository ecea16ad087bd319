"""A push gateway that is not ours: receives the Matrix push-gateway shaped POST, checks its
HMAC-SHA256 signature (header `X-Renkei-Signature: sha256=<hex>` over the exact body, key the
tenant's gateway secret) and records it. `reject` names pushkeys to answer in `rejected`;
`mode` makes it answer 500 or hang.
"""

import argparse
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import emit, record, serve_commands, server_tls_context

STATE = {"secret": b"", "mode": "ok", "rejected": set()}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with LOCK:
            secret, mode, rejected = STATE["secret"], STATE["mode"], set(STATE["rejected"])
        given = self.headers.get("X-Renkei-Signature", "")
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        rec = {
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "signature_valid": hmac.compare_digest(given, expected),
            "body_raw": body.decode("utf-8", "replace"),
            "mode": mode,
        }
        try:
            rec["body"] = json.loads(body)
        except ValueError:
            rec["body"] = None
        record(rec)
        if mode == "hang":
            time.sleep(30)
        if mode == "error":
            status, out = 500, b"{}"
        elif not rec["signature_valid"]:
            status, out = 401, b'{"error":"bad signature"}'
        else:
            devices = ((rec["body"] or {}).get("notification") or {}).get("devices") or []
            hit = [d.get("pushkey") for d in devices if d.get("pushkey") in rejected]
            status, out = 200, json.dumps({"rejected": hit}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def handle(cmd):
    with LOCK:
        if cmd["cmd"] == "secret":
            STATE["secret"] = cmd["secret"].encode()
        elif cmd["cmd"] == "mode":
            STATE["mode"] = cmd["mode"]
        elif cmd["cmd"] == "reject":
            STATE["rejected"] = set(cmd["pushkeys"])
        else:
            raise ValueError("unknown command")
    return {}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    server.socket = server_tls_context(a.cert, a.key).wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emit({"ready": "gateway", "port": port, "url": "https://127.0.0.1:%d/_matrix/push/v1/notify" % port})
    serve_commands(handle)


if __name__ == "__main__":
    main()
