"""Every default of NanoMoni, in one place (SPEC §7, §8).

The command line shows these in `--help`; the services' configurations, the
protocol's caps, the client and the tools take them from here.
"""

from __future__ import annotations

from pathlib import Path

# --- both services ---------------------------------------------------------------------
HOST = "127.0.0.1"
ISSUER_PORT = 8001
VENDOR_PORT = 8000
DATA_DIR = Path("./nanomoni-data")
WORKERS = 1
MAX_BODY = 64 * 1024  # bytes per request body
LOG_LEVEL = "warning"
STORE_TIMEOUT = 2.0  # seconds: the deadline of every store call (503 past it)
HEADER_TIMEOUT = 10.0  # seconds for a request head, then its body, or to read an answer
MAX_CONNECTIONS = 10_000  # open connections per worker

# --- issuer ------------------------------------------------------------------------------
INITIAL_BALANCE = 10_000_000  # granted to a newly registered account (0 in production)
MAX_INDEX = 2**24  # largest max_k / max_i a channel may commit to
# Client protection (SPEC §4.6): a channel closing (asked by its client, or expired)
# closes for good this long after, whatever the vendor does.
DISPUTE_WINDOW = 3600.0  # seconds
MIN_CHANNEL_TTL = 60.0  # seconds an open's ttl_s may ask for, at least ...
MAX_CHANNEL_TTL = 30 * 24 * 3600.0  # ... and at most (also the default lifetime)
FINALIZE_INTERVAL = 1.0  # seconds between the issuer's sweeps for due expiries/deadlines
FINALIZE_BATCH = 100  # channels one sweep step advances (one store transaction)
# The ledger audit (issue 15): how often each issuer worker recomputes the invariants
# from one read of the whole ledger (0: never), and how often the stats gauges are
# refreshed from such a read. Both cost a read of every account, channel and receipt
# (~30-40 µs per channel on SQLite and Redis), with its own deadline.
AUDIT_INTERVAL = 300.0  # seconds
STATS_INTERVAL = 60.0  # seconds
LEDGER_READ_TIMEOUT = 60.0  # seconds

# --- vendor ------------------------------------------------------------------------------
MAX_HASHES = 2**20  # hashes one PayWord payment may make the vendor walk
# Failed walks longer than crypto.INLINE_HASHES (2^14, one place: csrc/thresholds.h) are
# expensive: they spend from these budgets (SPEC §6 rate_limited).
HASH_BUDGET_PER_CLIENT = 2**24  # failed expensive hashes per minute per (channel, address)
HASH_BUDGET_PER_WORKER = 2**26  # ... and per worker, whoever sends them
HASH_BUDGET_CLIENTS = 100_000  # (channel, address) pairs a worker remembers
ISSUER_TIMEOUT = 10.0  # seconds the vendor waits for the issuer
TERMS_CACHE = 200_000  # channels whose terms a vendor worker keeps in memory
MAX_BATCH_BODY = 1024 * 1024  # bytes per batch body or stream frame (SPEC §12)
MAX_BATCH_ITEMS = 1024  # payments per batch or stream frame (SPEC §12)
# The watch (SPEC §4.6): how often a vendor asks the issuer for its closing channels and
# settles them. Keep it well below the issuer's dispute window.
WATCH_INTERVAL = 30.0  # seconds
SETTLE_CONCURRENCY = 16  # settlements the watch runs at once
# Checkpoints (SPEC §4.5): withdraw what open channels owe this often, bounding what a
# lost vendor store could cost. Off (0) by default: a checkpoint costs the issuer a
# proof check (up to max_k hashes in payword mode) per channel and interval.
CHECKPOINT_INTERVAL = 0.0  # seconds; 0: off
AMOUNT_RECHECK = 5.0  # seconds between re-reads of one channel's amount (top-ups)

# --- client --------------------------------------------------------------------------------
CLIENT_MAX_INDEX = 2**16  # a committed channel's size when the caller names none
CLIENT_CONNECTIONS = 100
CLIENT_TIMEOUT = 30.0
CLIENT_RETRIES = 5
CLIENT_RETRY_DELAY = 0.05
CLIENT_CLOSE_TIMEOUT = 10.0  # seconds the vendor gets to settle before the client closes
CLIENT_RENEW_MARGIN = 0.1  # renew (top up, or open a successor) with this share left

# --- tools -----------------------------------------------------------------------------------
DEMO_PAYMENTS = 1000  # per mode
# Every mode on SHA-256 (the registry's order), plus the hash-heavy ones on BLAKE3.
DEMO_EXTRA_RUNS = ("payword:blake3", "paytree_second_opt:blake3")
BENCH_PAYMENTS = 5000  # per mode: enough that CPU read in 10 ms /proc ticks is precise
BENCH_MAX_PAYMENTS = 1_000_000  # bounds a run and its pre-computed requests (~1 GB)
BENCH_CHANNELS = 16
BENCH_CONCURRENCY = 16
BENCH_OUT = Path("bench-results")
