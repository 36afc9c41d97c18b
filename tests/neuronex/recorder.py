"""An MQTT subscriber that records every sample with its source node.

``python -m tests.neuronex.recorder --mqtt HOST:PORT --out FILE [--topic T]``

Each received sample is appended to ``FILE`` as one JSON line
``{"value", "source", "ts", "rx"}`` (``rx``: receive time, wall clock) and flushed, so
a test or the benchmark reads it while the recorder runs. ``ready`` is printed on
stdout once the subscription is acknowledged.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import paho.mqtt.client as mqtt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mqtt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--topic", default="neuron/samples")
    args = parser.parse_args()
    host, port = args.mqtt.rsplit(":", 1)
    out = open(args.out, "a", buffering=1)  # noqa: SIM115 - for the process lifetime

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        print("ready", flush=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            sample = json.loads(message.payload)
        except ValueError:
            return
        sample["rx"] = time.time()
        out.write(json.dumps(sample) + "\n")

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="continuity-recorder")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, int(port), keepalive=5)
    client.loop_forever(retry_first_connection=True)


if __name__ == "__main__":
    main()
