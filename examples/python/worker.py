"""A downstream worker for thryve-bridge, in Python with psycopg 3.

It LISTENs on `thryve_dirty_ranges`, claims ranges with `thryve.claim_dirty_ranges`, does the
work for each (here: prints the Thryve data request it would make), and marks each done with
`thryve.complete_dirty_range` or retries it later with `thryve.fail_dirty_range`. It also
claims every POLL_SECONDS without a notification: retried ranges and expired leases send none.

    DATABASE_URL=postgres://... python worker.py [--exit-when-idle SECONDS]

Environment: DATABASE_URL (required), WORKER_NAME (default: host:pid), BATCH (10),
LEASE_SECONDS (300), RETRY_SECONDS (60), POLL_SECONDS (30), FAIL_END_USERS (comma-separated
end users whose ranges this demo fails, to show the retry path).
"""

import argparse
import os
import socket
import sys
import time

import psycopg
from psycopg.rows import dict_row

CHANNEL = "thryve_dirty_ranges"


def fetch_from_thryve(r):
    """Your work: re-fetch the range's data from Thryve and store it. Raise to fail it."""
    if r["end_user_id"] in FAIL_END_USERS:
        raise RuntimeError(f"demo failure for {r['end_user_id']}")
    if r["granularity"] == "epoch":
        span = f"startTimestamp={r['start_time'].isoformat()} endTimestamp={r['end_time'].isoformat()}"
    else:
        span = f"startDay={r['start_day']} endDay={r['end_day']}"
    print(
        f"fetch {r['granularity']} endUserId={r['end_user_id']} dataSourceId={r['data_source_id']} "
        f"dataTypeIds={r['data_type_ids']} {span}",
        flush=True,
    )


def work_once(conn, worker):
    """Claims one batch and settles every range in it; returns how many it claimed."""
    ranges = conn.execute(
        "SELECT * FROM thryve.claim_dirty_ranges(%s, %s, make_interval(secs => %s))",
        (worker, BATCH, LEASE_SECONDS),
    ).fetchall()
    for r in ranges:
        try:
            fetch_from_thryve(r)
        except Exception as error:  # noqa: BLE001: any failure is recorded on the range
            held = conn.execute(
                "SELECT thryve.fail_dirty_range(%s, %s, %s, make_interval(secs => %s), %s)",
                (r["id"], worker, str(error), RETRY_SECONDS, r["claim_token"]),
            ).fetchone()
            print(f"failed range {r['id']}: {error} (still held: {held['fail_dirty_range']})", flush=True)
            continue
        # The claim token: only this claim may settle the range, even if this worker's lease
        # expired and the same worker name claimed it again meanwhile.
        held = conn.execute(
            "SELECT thryve.complete_dirty_range(%s, %s, %s)", (r["id"], worker, r["claim_token"])
        ).fetchone()
        # False: the lease expired and another claim holds the range; it does the work.
        print(f"completed range {r['id']} (still held: {held['complete_dirty_range']})", flush=True)
    return len(ranges)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit after this long without work (for tests); default: run forever",
    )
    args = parser.parse_args()
    worker = os.environ.get("WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"
    # Autocommit: each function call is its own transaction, and notifications arrive
    # between calls rather than waiting for a transaction to end.
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, row_factory=dict_row) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        print(f"worker {worker} listening on {CHANNEL}", flush=True)
        idle_since = time.monotonic()
        while True:
            # Drain: claim until a batch comes back empty.
            while work_once(conn, worker):
                idle_since = time.monotonic()
            if args.exit_when_idle is not None:
                left = args.exit_when_idle - (time.monotonic() - idle_since)
                if left <= 0:
                    return
                timeout = min(POLL_SECONDS, left)
            else:
                timeout = POLL_SECONDS
            # Sleep until a NOTIFY (or the timeout); what it says does not matter. psycopg 3.3
            # keeps notifications that arrived while claiming, so none is lost in between.
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                pass


FAIL_END_USERS = {u for u in os.environ.get("FAIL_END_USERS", "").split(",") if u}
BATCH = int(os.environ.get("BATCH", "10"))
LEASE_SECONDS = int(os.environ.get("LEASE_SECONDS", "300"))
RETRY_SECONDS = int(os.environ.get("RETRY_SECONDS", "60"))
POLL_SECONDS = float(os.environ.get("POLL_SECONDS", "30"))

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
