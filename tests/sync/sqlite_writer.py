"""Insert rows 1, 2, 3, ... into a WAL-mode SQLite database, one transaction each,
until killed. Prints "STARTED" after the first commit."""

from __future__ import annotations

import sqlite3
import sys


def main() -> None:
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    n = 0
    while True:
        n += 1
        con.execute("BEGIN")
        con.execute("INSERT INTO t (id, v) VALUES (?, ?)", (n, "x" * (n % 500)))
        con.execute("COMMIT")
        if n == 1:
            print("STARTED", flush=True)


if __name__ == "__main__":
    main()
