"""A Modbus TCP device simulator: holding register 0 counts poll periods.

``python -m tests.neuronex.device --listen HOST:PORT --period 1.0``

The register holds ``floor(time.time() / period) mod 65536`` and changes exactly at the
period boundaries of the wall clock (shared by every namespace of the machine). A
collector that polls at mid-period (see :mod:`.standin`) reads each value exactly once,
so a lost or duplicated sample is exact: a tick nobody published, or one published twice.
"""

from __future__ import annotations

import argparse
import time

from pymodbus.server import StartTcpServer
from pymodbus.simulator.simdata import DataType, SimData
from pymodbus.simulator.simdevice import SimDevice


def tick(period: float, now: float | None = None) -> int:
    """The counter value at ``now`` (wall clock)."""
    return int((time.time() if now is None else now) // period) % 65536


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--period", type=float, default=1.0)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    period = args.period

    async def counter(
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: object,
    ) -> None:
        # the register counts poll periods: it holds the current tick whenever it is read
        current_registers[0] = tick(period)

    device = SimDevice(id=1, simdata=[SimData(0, count=4, values=0, datatype=DataType.REGISTERS)], action=counter)
    print(f"device listening on {host}:{port}, period {period:g}s", flush=True)
    StartTcpServer(context=device, address=(host, int(port)))


if __name__ == "__main__":
    main()
