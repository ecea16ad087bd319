"""An SMTP server that is not ours (aiosmtpd): records every mail with its envelope, headers
and text. With --cert/--key it offers STARTTLS and refuses mail without it; with --auth
USER:PASSWORD it requires that login. `mode tempfail` answers 451 to every RCPT.
"""

import argparse
import asyncio
import email
import email.policy
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from common import emit, record, serve_commands, server_tls_context

STATE = {"mode": "ok"}


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if STATE["mode"] == "tempfail":
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "headers": {k.lower(): str(v) for k, v in msg.items()},
                "content_type": msg.get_content_type(),
                "text": body.get_content() if body is not None else None,
                "raw": (envelope.original_content or envelope.content).decode("utf-8", "replace"),
            }
        )
        return "250 Message accepted"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth")
    a = p.parse_args()
    tls = server_tls_context(a.cert, a.key) if a.cert else None
    user, password = (a.auth.split(":", 1) if a.auth else (None, None))

    def authenticator(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
        return AuthResult(success=ok)

    def factory():
        kwargs = {"tls_context": tls, "require_starttls": tls is not None, "hostname": "peer.test"}
        if a.auth:
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=tls is not None)
        return SMTP(Handler(), **kwargs)

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", a.port))
    port = server.sockets[0].getsockname()[1]
    threading.Thread(target=loop.run_forever, daemon=True).start()
    emit({"ready": "smtp", "port": port})

    def handle(cmd):
        if cmd["cmd"] == "mode":
            STATE["mode"] = cmd["mode"]
            return {}
        raise ValueError("unknown command")

    serve_commands(handle)


if __name__ == "__main__":
    main()
