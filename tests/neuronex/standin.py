"""A NeuronEX stand-in: the HTTP API subset hasup's ``neuronex`` backend uses, a
southbound Modbus TCP driver and a northbound MQTT app that really collect.

``python -m tests.neuronex.standin --listen HOST:PORT --modbus HOST:PORT --mqtt HOST:PORT
--source n1 [--period 1.0] [--startup-delay 5] [--state-file PATH]``

The API follows emqx/neuron exactly (paths, JSON bodies, auth, error codes and the
HTTP status each error code maps to):

* ``POST /api/v2/login`` ``{"name", "pass"}`` → 200 ``{"token"}``; wrong credentials →
  401 ``{"error": 1009}``. Other calls need ``Authorization: Bearer <token>``: none →
  401 ``{"error": 1004}``, an unknown token → 401 ``{"error": 1005}`` (decode failure).
* ``GET /api/v2/node?type=1|2`` → ``{"nodes": [{"name", "plugin"}]}``; another type →
  400 ``{"error": 1003}``.
* ``POST /api/v2/node/ctl`` ``{"node", "cmd": 0|1}`` → 200 ``{"error": 0}``; unknown
  node → 404 2003; start of a running node → 409 2007; stop of a stopped one → 409
  2009; a malformed body → 400 1002.
* ``GET /api/v2/node/state?node=NAME`` → ``{"running", "link", "rtt", ...}`` with
  ``running`` 3 (RUNNING) or 4 (STOPPED); without ``node`` → ``{"states": [...]}``.

Pages followed: emqx/neuron ``plugins/restful/handle.c`` (routes),
``plugins/restful/adapter_handle.c`` (node, node/ctl, node/state),
``plugins/restful/normal_handle.c`` (login), ``src/utils/http.c`` (error → HTTP
status), ``include/neuron/errcodes.h``, ``include/neuron/adapter.h``
(neu_node_running_state_e), ``include/neuron/msg.h`` (NEU_ADAPTER_CTL_START = 0,
STOP = 1), ``tests/ft/neuron/api.py`` (request bodies and the Bearer header);
https://docs.emqx.com/en/neuronex/latest/api/api-docs.html.

Collection: the driver ``modbus-1`` reads holding register 0 of the device (a counter
of poll periods, :mod:`.device`) at the middle of every period while it runs; the app
``mqtt-1`` publishes each sample (QoS 1) as ``{"value", "source", "ts"}`` while it runs.
``--startup-delay`` models NeuronEX's start-up (no figure is documented: default 5 s)
before the API answers. Like NeuronEX (which keeps node states in its database and
restores them at start), ``--state-file`` keeps the nodes' running states across a
restart.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
from pymodbus.client import ModbusTcpClient

RUNNING, STOPPED = 3, 4
DRIVER, APP = 1, 2
NODES = {"modbus-1": (DRIVER, "Modbus TCP"), "mqtt-1": (APP, "MQTT")}


class Standin:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.running = dict.fromkeys(NODES, False)
        self.tokens: set[str] = set()
        self.link = False
        self.mqtt: mqtt.Client | None = None
        self.published = 0
        if args.state_file and os.path.exists(args.state_file):
            with open(args.state_file) as f:
                saved = json.load(f)
            for name in NODES:
                if saved.get(name):
                    self.set_running(name, True)

    # -- nodes --------------------------------------------------------------------------
    def set_running(self, name: str, on: bool) -> None:
        with self.lock:
            self.running[name] = on
            if name == "mqtt-1":
                if on:
                    host, port = self.args.mqtt.rsplit(":", 1)
                    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"neuronex-{self.args.source}")
                    client.connect_async(host, int(port), keepalive=5)
                    client.loop_start()
                    self.mqtt = client
                elif self.mqtt is not None:
                    self.mqtt.disconnect()
                    self.mqtt.loop_stop()
                    self.mqtt = None
            if self.args.state_file:
                tmp = self.args.state_file + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(self.running, f)
                os.replace(tmp, self.args.state_file)

    def poll_forever(self) -> None:
        """The southbound driver: one read at the middle of every period while running."""
        host, port = self.args.modbus.rsplit(":", 1)
        client = ModbusTcpClient(host, port=int(port), timeout=0.5)
        period = self.args.period
        while True:
            phase = time.time() % period  # wake at the middle of the next period
            time.sleep(period / 2 - phase if phase < period / 2 else 1.5 * period - phase)
            if not self.running["modbus-1"]:
                continue
            try:
                if not client.connected:
                    client.connect()
                reply = client.read_holding_registers(0, count=1, device_id=1)
                self.link = not reply.isError()
                if reply.isError():
                    continue
                value = int(reply.registers[0])
            except Exception:
                self.link = False
                client.close()
                continue
            with self.lock:
                app = self.mqtt if self.running["mqtt-1"] else None
            if app is not None:
                sample = {"value": value, "source": self.args.source, "ts": time.time()}
                app.publish(self.args.topic, json.dumps(sample), qos=1)
                self.published += 1

    # -- HTTP ---------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/api/v2/login":
            try:
                req = json.loads(body)
                name, password = req["name"], req["pass"]
            except (ValueError, KeyError, TypeError):
                return 400, {"error": 1002}
            if name != self.args.user or password != self.args.password:
                return 401, {"error": 1009}
            token = secrets.token_hex(16)
            self.tokens.add(token)
            return 200, {"token": token}
        auth = headers.get("Authorization", "")
        if not auth:
            return 401, {"error": 1004}
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return 401, {"error": 1005}
        if method == "GET" and path == "/api/v2/node":
            kind = query.get("type")
            if kind not in ("1", "2"):
                return 400, {"error": 1003}
            nodes = [{"name": n, "plugin": p} for n, (t, p) in NODES.items() if t == int(kind)]
            return 200, {"nodes": nodes}
        if method == "POST" and path == "/api/v2/node/ctl":
            try:
                req = json.loads(body)
                node, cmd = str(req["node"]), int(req["cmd"])
            except (ValueError, KeyError, TypeError):
                return 400, {"error": 1002}
            if node not in NODES:
                return 404, {"error": 2003}
            if cmd not in (0, 1):
                return 400, {"error": 1003}
            if cmd == 0 and self.running[node]:
                return 409, {"error": 2007}
            if cmd == 1 and not self.running[node]:
                return 409, {"error": 2009}
            self.set_running(node, cmd == 0)
            return 200, {"error": 0}
        if method == "GET" and path == "/api/v2/node/state":
            node = query.get("node")
            if node is None:
                return 200, {"states": [self.state(n) | {"node": n} for n in NODES], "core_level": "notice"}
            if node not in NODES:
                return 404, {"error": 2003}
            return 200, self.state(node) | {"core_level": "notice"}
        return 404, {"error": 1011}

    def state(self, node: str) -> dict[str, Any]:
        running = self.running[node]
        if NODES[node][0] == DRIVER:
            link = int(running and self.link)
        else:
            link = int(running and self.mqtt is not None and self.mqtt.is_connected())
        return {
            "running": RUNNING if running else STOPPED,
            "link": link,
            "rtt": 0,
            "sub_group_count": 1,
            "is_driver": NODES[node][0] == DRIVER,
            "log_level": "notice",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="NeuronEX stand-in")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--modbus", required=True)
    parser.add_argument("--mqtt", required=True)
    parser.add_argument("--source", required=True, help="this node's name, in every sample")
    parser.add_argument("--topic", default="neuron/samples")
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--startup-delay", type=float, default=5.0)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="0000")
    parser.add_argument("--state-file")
    args = parser.parse_args()
    time.sleep(args.startup_delay)  # NeuronEX loading its plugins and database
    standin = Standin(args)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload = standin.handle(method, url.path, query, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=standin.poll_forever, daemon=True).start()
    print(f"neuronex stand-in {args.source} listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
