"""Status page weight and update latency, in a real headless Chromium.

Two ``hasup run`` processes on 127.0.0.1 (advert 100 ms); Chromium (over the DevTools
protocol) shows edge-b's page. Each run toggles maintenance on edge-b through
``/control/maintenance`` and measures (after a random pause of 0-0.5 s, so the change falls at a random point of
the page's poll cycle), polling both every 5 ms, the time from ``/status``
showing the change to the page showing it. Prints the page weight and the median, min
and max latency. No keepalived reference: keepalived has no page.

    .venv/bin/python bench/page.py --runs 40
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_cli_run import Node, free_port
from tests.test_page_browser import OPERATOR_TOKEN, Browser


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hasup-page-bench-") as tmpdir:
        tmp = Path(tmpdir)
        subprocess.run([sys.executable, "-m", "hasup", "keygen", str(tmp / "group.key")], check=True)
        token = tmp / "operator.token"
        token.write_text(OPERATOR_TOKEN + "\n")
        token.chmod(0o600)
        extra = f'operator_token_file = "{token}"\n'
        ua, ub = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        a, b = Node(tmp, "edge-a", 100, ua, ub, extra), Node(tmp, "edge-b", 90, ub, ua, extra)
        browser = None
        try:
            a.start()
            b.start()
            deadline = time.monotonic() + 30
            while not (a.state() == "MASTER" and b.state() == "BACKUP"):
                if time.monotonic() > deadline:
                    raise SystemExit("the pair did not settle")
                time.sleep(0.05)
            weight = 0
            for path in ("/", "/page.js", "/page.css"):
                with urllib.request.urlopen(f"http://127.0.0.1:{b.status_port}{path}", timeout=5) as r:
                    weight += len(r.read())
            browser = Browser(tmp)
            browser.call("Page.navigate", url=f"http://127.0.0.1:{b.status_port}/")
            shown = "document.querySelector('#members tr[data-node=\"edge-b\"]')?.textContent.includes('maintenance')"
            latencies = []
            rng = random.Random(args.seed)
            for i in range(args.runs):
                on = i % 2 == 0
                # a random phase against the page's 0.5 s poll (else every toggle lands
                # just after a poll and measures the worst case only)
                time.sleep(rng.uniform(0.0, 0.5))
                assert post_maintenance(b, on) == 200
                t_status = t_page = None
                deadline = time.monotonic() + 10
                while (t_status is None or t_page is None) and time.monotonic() < deadline:
                    if t_status is None and b.status().get("maintenance") is on:
                        t_status = time.monotonic()
                    if t_page is None and bool(browser.eval(shown)) is on:
                        t_page = time.monotonic()
                    time.sleep(0.005)
                if t_status is None or t_page is None:
                    raise SystemExit(f"run {i}: the change never showed")
                latencies.append(t_page - t_status)
        finally:
            if browser is not None:
                browser.close()
            a.stop()
            b.stop()
    print(f"page weight: {weight} bytes (HTML+JS+CSS, uncompressed, one load; then /status every 0.5 s)")
    print(
        f"update latency /status -> page over {len(latencies)} runs: median {statistics.median(latencies):.3f} s, "
        f"min {min(latencies):.3f} s, max {max(latencies):.3f} s"
    )
    return 0


def post_maintenance(node: Node, on: bool) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.status_port}/control/maintenance",
        data=b'{"on": true}' if on else b'{"on": false}',
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.status)


if __name__ == "__main__":
    raise SystemExit(main())
