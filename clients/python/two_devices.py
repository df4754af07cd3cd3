"""Two devices through a hub from Python, with apsw (pip install apsw).

Device A tracks a table, enrolls, writes and syncs; device B enrolls and syncs, and must see
A's rows.

usage: python3 two_devices.py EXTENSION DB_A DB_B CODE_A CODE_B
"""

import json
import sys

import apsw


def open_device(ext: str, path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.enable_load_extension(True)
    conn.load_extension(ext, "sqlite3_outpost_init")
    conn.enable_load_extension(False)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS visits("
        "id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), patient TEXT NOT NULL, note TEXT)"
    )
    conn.execute("SELECT outpost_track('visits')").get
    return conn


def main() -> int:
    ext, db_a, db_b, code_a, code_b = sys.argv[1:6]

    a = open_device(ext, db_a)
    peer = json.loads(a.execute("SELECT outpost_enroll(?)", (code_a,)).get)
    print("A enrolled with", peer["role"], peer["site"][:12])
    # apsw runs in autocommit mode unless you open a transaction: `with a:` is one transaction.
    with a:
        a.executemany(
            "INSERT INTO visits(patient, note) VALUES (?, ?)",
            [("amina", "fever"), ("bruno", "follow-up"), ("chen", "vaccination")],
        )
    # outpost_sync must run outside a transaction.
    counts = json.loads(a.execute("SELECT outpost_sync()").get)
    print("A synced:", counts)
    status = json.loads(a.execute("SELECT outpost_status()").get)
    assert status["pending_changes"] == 0, status

    b = open_device(ext, db_b)
    b.execute("SELECT outpost_enroll(?)", (code_b,)).get
    counts = json.loads(b.execute("SELECT outpost_sync()").get)
    print("B synced:", counts)
    rows = [r[0] for r in b.execute("SELECT patient FROM visits ORDER BY patient")]
    if rows != ["amina", "bruno", "chen"]:
        print("device B sees", rows, file=sys.stderr)
        return 1
    print("ok: device B sees", ",".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
