"""A minimal Jupyter kernel client over jupyter_server's websocket, what a browser tab does.

Runs under the Python of a venv that has jupyter_server (it uses that venv's tornado),
e.g. /opt/jupyter/bin/python on a systemd test host, so the test box needs no websocket
library:

    python jupyter_ws.py URL TOKEN KERNEL_ID run CODE     send CODE, wait until the kernel
                                                          is busy with it, then hang up
                                                          (the cell keeps running)
    python jupyter_ws.py URL TOKEN KERNEL_ID hold         stay connected until killed
    python jupyter_ws.py URL TOKEN KERNEL_ID open         connect until the kernel says it
                                                          is idle, then hang up (what opening
                                                          a notebook does; a kernel nobody
                                                          connected to stays "starting")

Prints "busy" once the kernel runs the cell, "connected" once a hold is open, "idle"
once an opened kernel reported idle. The
messages are the Jupyter messaging protocol v5.3 on the channels websocket without a
subprotocol (jupyter_server then speaks the legacy JSON form).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


def message(session: str, code: str) -> str:
    return json.dumps({
        "header": {"msg_id": uuid.uuid4().hex, "username": "test", "session": session,
                   "msg_type": "execute_request", "version": "5.3",
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    })


async def main(url: str, token: str, kernel: str, action: str, code: str = "") -> int:
    ws_url = url.replace("http://", "ws://") + f"/api/kernels/{kernel}/channels"
    request = HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
    conn = await websocket_connect(request)
    if action == "hold":
        print("connected", flush=True)
        while await conn.read_message() is not None:
            pass
        return 0
    if action == "open":  # jupyter_server sends kernel_info on connect; the kernel answers
        while True:
            raw = await conn.read_message()
            if raw is None:
                return 1
            msg = json.loads(raw)
            if msg.get("msg_type") == "status" and \
                    msg["content"].get("execution_state") == "idle":
                print("idle", flush=True)
                conn.close()
                return 0
    session = uuid.uuid4().hex
    conn.write_message(message(session, code))
    while True:
        raw = await conn.read_message()
        if raw is None:
            return 1
        msg = json.loads(raw)
        if (msg.get("msg_type") == "status" and msg["content"].get("execution_state") == "busy"
                and msg.get("parent_header", {}).get("session") == session):
            print("busy", flush=True)
            conn.close()
            return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:])))
