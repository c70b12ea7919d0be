#!/usr/bin/env python3
"""Session 12 (docs/decisions/0013): does `WITHOUT ROWID` make SQLite's
settlement group commit cheaper?  The insert pattern of a one-hop package
on the server's path, without Tally: per package one settled record (a
hash key and a ~180-byte body), one spent token (hash key, expiry) and one
upload row (hash key, ~120 bytes), per eight packages one stored answer;
groups of 256 packages, one transaction each (BEGIN IMMEDIATE ... COMMIT),
WAL, synchronous = FULL, 32 MiB page cache, after 20 000 packages already
stored. Prints the CPU time per package of 80 more groups.

    python3 docs/experiments/sqlite_without_rowid.py none spent spent+uploads spent+uploads+settled

A variant names the tables made `WITHOUT ROWID` (spent, settled, uploads,
ops). PS=1024|2048|4096|8192 sets the page size; NOIDX=1 drops the spent
expiry index. Run each variant several times, interleaved: the CPU time of
one run moves by 20-30 % on a shared machine.
"""
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time

DIR = tempfile.mkdtemp(prefix="tally-wr-")


def run(variant, n_groups=80, per_group=256, prefill=20000):
    path = os.path.join(DIR, f"{variant}.db")
    for s in ("", "-wal", "-shm"):
        try:
            os.remove(path + s)
        except FileNotFoundError:
            pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute(f"PRAGMA page_size={int(os.environ.get('PS', '4096'))}")
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("PRAGMA cache_size=-32768")

    def wr(t):
        return " WITHOUT ROWID" if t in variant.split("+") else ""

    c.execute(
        "CREATE TABLE spent (record BLOB NOT NULL, idx BIGINT NOT NULL, expiry_epoch BIGINT NOT NULL,"
        f" consumed_by BLOB NOT NULL, PRIMARY KEY (record, idx)){wr('spent')}"
    )
    if not os.environ.get("NOIDX"):
        c.execute("CREATE INDEX spent_by_expiry ON spent (expiry_epoch)")
    c.execute(
        "CREATE TABLE settled_records (id BLOB PRIMARY KEY, body BLOB NOT NULL,"
        f" expiry_epoch BIGINT NOT NULL){wr('settled')}"
    )
    c.execute("CREATE INDEX settled_records_by_expiry ON settled_records (expiry_epoch)")
    c.execute(
        "CREATE TABLE cb_uploads (transfer_id BLOB PRIMARY KEY, nonce BLOB NOT NULL, payee_key BLOB NOT NULL,"
        f" amount BIGINT NOT NULL, mailbox BLOB, dcp BIGINT NOT NULL DEFAULT 1){wr('uploads')}"
    )
    c.execute(f"CREATE TABLE cb_ops (op_id BLOB PRIMARY KEY, reply BLOB NOT NULL){wr('ops')}")
    rnd = random.Random(1)

    def group(k):
        c.execute("BEGIN IMMEDIATE")
        for i in range(k):
            tid = rnd.randbytes(32)
            c.execute("INSERT INTO settled_records VALUES (?,?,?)", (tid, rnd.randbytes(180), 1000))
            c.execute("INSERT INTO spent VALUES (?,?,?,?)", (rnd.randbytes(32), 0, 1000, tid))
            c.execute(
                "INSERT INTO cb_uploads VALUES (?,?,?,?,?,?)",
                (tid, rnd.randbytes(16), rnd.randbytes(34), 1000, rnd.randbytes(32), 1),
            )
            if i % 8 == 0:
                c.execute("INSERT INTO cb_ops VALUES (?,?)", (rnd.randbytes(32), rnd.randbytes(200)))
        c.execute("COMMIT")

    for _ in range(prefill // per_group):
        group(per_group)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    t0 = time.process_time()
    for _ in range(n_groups):
        group(per_group)
    cpu = time.process_time() - t0
    pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    print(f"{variant:28s} cpu {1e6 * cpu / (n_groups * per_group):6.1f} us/package  pages {pages}")


try:
    for v in sys.argv[1:] or ["none", "spent", "spent+uploads", "spent+uploads+settled"]:
        run(v)
finally:
    shutil.rmtree(DIR, ignore_errors=True)
