"""Shared plumbing of the test peers: JSON lines out, JSON commands in.

Every peer prints one JSON object per line on stdout: first {"ready": ..., "port": N}, then one
{"record": {...}} per message it received, and {"reply": ID, ...} for each command. Commands
come as JSON lines on stdin ({"id": ID, "cmd": "...", ...}); when stdin closes (the test
harness went away) the peer exits, so no peer outlives its test.
"""

import json
import os
import ssl
import sys
import threading

_out_lock = threading.Lock()


def emit(obj):
    line = json.dumps(obj, sort_keys=True)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def record(obj):
    emit({"record": obj})


def serve_commands(handle):
    """Reads commands until stdin closes, then ends the whole process."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError:
            emit({"reply": None, "error": "not JSON"})
            continue
        try:
            reply = handle(cmd) or {}
        except Exception as e:  # a bad command must not kill the peer
            reply = {"error": repr(e)}
        reply["reply"] = cmd.get("id")
        emit(reply)
    os._exit(0)


def server_tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
