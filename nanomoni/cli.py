"""The `nanomoni` command (SPEC §8): issuer, vendor, demo, bench — one parser.

Every service flag can also come from NANOMONI_<SERVICE>_<FLAG>
(e.g. NANOMONI_VENDOR_STORE, NANOMONI_ISSUER_ADMIN_TOKEN); a flag on the
command line wins over the environment. Defaults come from `nanomoni.config`
and every `--help` shows them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from nanomoni import __version__, config
from nanomoni.errors import StartupError


class _Flags:
    """Adds flags to a service parser with defaults read from the environment."""

    def __init__(self, parser: argparse.ArgumentParser, service: str) -> None:
        self.parser = parser
        self.prefix = f"NANOMONI_{service.upper()}_"

    def add(
        self,
        flag: str,
        *,
        type: Callable[[str], Any] = str,
        default: Any = None,
        required: bool = False,
        help: str,
    ) -> None:
        env_name = self.prefix + flag.lstrip("-").replace("-", "_").upper()
        from_env = os.environ.get(env_name)
        if from_env is not None:
            try:
                default, required = type(from_env), False
            except (ValueError, argparse.ArgumentTypeError) as exc:
                self.parser.error(f"{env_name}={from_env!r}: {exc}")
        shown = "" if default is None or default == "" else " (default: %(default)s)"
        self.parser.add_argument(
            flag,
            type=type,
            default=default,
            required=required,
            help=f"{help}{shown} [env {env_name}]",
        )


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _seconds(text: str) -> float:
    """A duration the stores keep exactly (SPEC §4.6 times, up to 100 years)."""
    from nanomoni.protocol.lifecycle import MAX_SECONDS

    value = _positive_float(text)
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SECONDS} s, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _common(flags: _Flags, port: int) -> None:
    flags.add("--host", default=config.HOST, help="address to listen on")
    flags.add(
        "--port", type=_non_negative, default=port, help="port to listen on (0: any free port)"
    )
    flags.add(
        "--store",
        help="sqlite:PATH, redis://HOST:PORT/DB or redis+cluster://HOST:PORT "
        "(default: a SQLite file in the data directory)",
    )
    flags.add(
        "--store-timeout",
        type=_positive_float,
        default=config.STORE_TIMEOUT,
        help="deadline of every store call in seconds; past it a request gets 503",
    )
    flags.add(
        "--key-file",
        type=Path,
        help="PKCS#8 PEM private key (default: created in the data directory)",
    )
    flags.add("--data-dir", type=Path, default=config.DATA_DIR, help="where default files live")
    flags.add(
        "--workers",
        type=_positive,
        default=config.WORKERS,
        help="worker processes sharing the socket",
    )
    flags.add(
        "--max-body", type=_positive, default=config.MAX_BODY, help="request body limit in bytes"
    )
    flags.add("--log-level", default=config.LOG_LEVEL, help="logging level")
    flags.add(
        "--header-timeout",
        type=_positive_float,
        default=config.HEADER_TIMEOUT,
        help="seconds a client may keep a worker waiting: for a request head, then its body, "
        "or to read an answer",
    )
    flags.add(
        "--max-connections",
        type=_positive,
        default=config.MAX_CONNECTIONS,
        help="open connections per worker; beyond it the one waiting longest for a request "
        "is closed, or the new one gets a 503 if none is waiting",
    )


def _issuer(parser: argparse.ArgumentParser) -> None:
    flags = _Flags(parser, "issuer")
    _common(flags, config.ISSUER_PORT)
    flags.add(
        "--initial-balance",
        type=_non_negative,
        default=config.INITIAL_BALANCE,
        help="balance granted to a newly registered account",
    )
    flags.add(
        "--admin-token", help="bearer token that authorises deposits (none: deposits refused)"
    )
    flags.add(
        "--max-index",
        type=_positive,
        default=config.MAX_INDEX,
        help="largest max_k / max_i a channel may have",
    )
    flags.add(
        "--dispute-window",
        type=_seconds,
        default=config.DISPUTE_WINDOW,
        help="seconds a closing channel waits for its vendor's settlement before the client "
        "gets back what checkpoints did not pay",
    )
    flags.add(
        "--min-channel-ttl",
        type=_seconds,
        default=config.MIN_CHANNEL_TTL,
        help="shortest lifetime (ttl_s) an open may ask for, in seconds",
    )
    flags.add(
        "--max-channel-ttl",
        type=_seconds,
        default=config.MAX_CHANNEL_TTL,
        help="longest lifetime an open may ask for, and the lifetime of one that asks none",
    )
    _issuer_operations(flags)


def _issuer_operations(flags: _Flags) -> None:
    flags.add(
        "--audit-interval",
        type=_non_negative_float,
        default=config.AUDIT_INTERVAL,
        help="seconds between audits of the whole ledger, each counted in "
        "nanomoni_audit_failures_total when a check fails (0: none)",
    )
    flags.add(
        "--stats-interval",
        type=_positive_float,
        default=config.STATS_INTERVAL,
        help="seconds between refreshes of the ledger gauges on /metrics (a read of the "
        "whole ledger)",
    )


def _vendor(parser: argparse.ArgumentParser) -> None:
    flags = _Flags(parser, "vendor")
    _common(flags, config.VENDOR_PORT)
    flags.add(
        "--issuer-url", required=True, help="the issuer's root URL, e.g. http://127.0.0.1:8001"
    )
    flags.add(
        "--max-hashes",
        type=_positive,
        default=config.MAX_HASHES,
        help="hashes one payword payment may cost",
    )
    flags.add(
        "--max-batch-body",
        type=_positive,
        default=config.MAX_BATCH_BODY,
        help="body limit in bytes of a payment batch or stream frame",
    )
    flags.add(
        "--issuer-timeout",
        type=_positive_float,
        default=config.ISSUER_TIMEOUT,
        help="seconds to wait for the issuer",
    )
    flags.add(
        "--terms-cache",
        type=_positive,
        default=config.TERMS_CACHE,
        help="channel terms kept in memory per worker",
    )
    flags.add(
        "--admin-token",
        help="bearer token that lets the operator ask for a closure (none: only clients can)",
    )
    flags.add(
        "--watch-interval",
        type=_positive_float,
        default=config.WATCH_INTERVAL,
        help="seconds between asking the issuer for closing channels to settle (also at "
        "start-up); keep it well below the issuer's dispute window",
    )
    flags.add(
        "--checkpoint-interval",
        type=_non_negative_float,
        default=config.CHECKPOINT_INTERVAL,
        help="seconds between checkpoints that withdraw what open channels owe (0: none)",
    )


def _demo(parser: argparse.ArgumentParser) -> None:
    from nanomoni.crypto import KEY_KINDS
    from nanomoni.tools.runs import DEMO_RUNS, parse_runs

    parser.add_argument(
        "--payments",
        type=_positive,
        default=config.DEMO_PAYMENTS,
        help="payments per mode (default: %(default)s)",
    )
    parser.add_argument(
        "--modes",
        type=parse_runs,
        default=parse_runs(DEMO_RUNS),
        help=f"comma-separated modes, each optionally ':blake3' (default: {DEMO_RUNS})",
    )
    parser.add_argument(
        "--key-kind", choices=KEY_KINDS, default="p256", help="the client's key (default: p256)"
    )


def _bench(parser: argparse.ArgumentParser) -> None:
    from nanomoni.crypto import KEY_KINDS
    from nanomoni.tools.runs import EVERY_MODE, parse_runs

    target = parser.add_argument_group("services (default: start them here)")
    target.add_argument("--issuer-url", help="a running issuer (loopback only)")
    target.add_argument("--vendor-url", help="a running vendor (loopback only)")
    target.add_argument("--vendor-pid", type=_positive, help="vendor PID, for CPU per payment")
    target.add_argument("--redis-pid", type=_positive, help="redis-server PID, for CPU per payment")
    target.add_argument("--admin-token", help="deposit the funds the run needs (issuers at 0)")
    target.add_argument(
        "--store",
        choices=("embedded", "redis"),
        default="embedded",
        help="store of the services it starts (default: %(default)s)",
    )
    target.add_argument(
        "--workers",
        type=_positive,
        default=config.WORKERS,
        help="workers of the services it starts (default: %(default)s)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--modes",
        type=parse_runs,
        default=parse_runs(EVERY_MODE),
        help="comma-separated modes, each optionally ':blake3' (default: every mode)",
    )

    def payments(text: str) -> int:
        value = _positive(text)
        if value > config.BENCH_MAX_PAYMENTS:
            raise argparse.ArgumentTypeError(f"at most {config.BENCH_MAX_PAYMENTS}")
        return value

    load.add_argument(
        "--payments",
        type=payments,
        default=config.BENCH_PAYMENTS,
        help="payments per mode (default: %(default)s)",
    )
    load.add_argument(
        "--channels",
        type=_positive,
        default=config.BENCH_CHANNELS,
        help="channels per mode (default: %(default)s)",
    )
    load.add_argument(
        "--concurrency",
        type=_positive,
        default=config.BENCH_CONCURRENCY,
        help="payments in flight (default: %(default)s)",
    )
    load.add_argument(
        "--rate",
        type=_non_negative_float,
        default=0.0,
        help="payments/s per mode, 0 for as fast as possible (default: %(default)s)",
    )
    load.add_argument(
        "--duration", type=_positive_float, help="cut each mode's timed phase after S seconds"
    )
    load.add_argument(
        "--key-kind", choices=KEY_KINDS, default="p256", help="the client's key (default: p256)"
    )
    load.add_argument(
        "--transport",
        choices=("post", "batch", "websocket"),
        default="post",
        help="one payment per POST, batches of --batch-size per POST, or per WebSocket frame "
        "(default: %(default)s)",
    )

    def batch_size(text: str) -> int:
        value = _positive(text)
        if value > config.MAX_BATCH_ITEMS:
            raise argparse.ArgumentTypeError(f"at most {config.MAX_BATCH_ITEMS}")
        return value

    load.add_argument(
        "--batch-size",
        type=batch_size,
        default=64,
        help="payments per batch or frame; a connection's channels take turns in it "
        "(default: %(default)s)",
    )
    measure = parser.add_argument_group("measurement")
    measure.add_argument(
        "--floor",
        action="store_true",
        help="also send the same requests to a bare ASGI app on the same server stack "
        "(the floor), measured in the same run",
    )
    measure.add_argument(
        "--pin",
        action="store_true",
        help="vendor and floor on CPU 0, everything else (load generator included) on CPU 1",
    )
    parser.add_argument(
        "--out", type=Path, default=config.BENCH_OUT, help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a result already in the output folder"
    )


def _backup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="the store to back up (as --store)")
    parser.add_argument("out", type=Path, help="the backup file to write (replaced whole)")


def _restore(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a file `nanomoni backup` wrote")
    parser.add_argument("--store", required=True, help="the store to restore into (as --store)")
    parser.add_argument("--force", action="store_true", help="replace what the store already holds")


def _run_backup(args: argparse.Namespace) -> int:
    """`nanomoni backup` / `nanomoni restore`: one line of outcome, one line of error."""
    from nanomoni.store import describe_failure, masked
    from nanomoni.store.backup import BackupError, backup, restore

    try:
        if args.command == "backup":
            done = asyncio.run(backup(args.store, args.out))
            where = f"from {masked(args.store)} to {args.out}"
        else:
            done = asyncio.run(restore(args.source, args.store, force=args.force))
            where = f"from {args.source} into {masked(args.store)}"
    except BackupError as exc:
        raise StartupError(str(exc)) from None
    except Exception as exc:  # an unreachable or failing store: one line, no traceback
        raise StartupError(f"{masked(args.store)}: {describe_failure(exc)}") from None
    kind = "rows" if args.store.startswith("sqlite:") else "keys"
    print(
        f"{args.command}: {done.keys} {kind} in {done.groups} consistent group(s) {where} "
        f"in {done.seconds:.2f} s"
    )
    return 0


def _audit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", required=True, help="the issuer or vendor store to audit (as --store)"
    )


def _run_audit(args: argparse.Namespace) -> int:
    """`nanomoni audit`: one line per check; exit 1 on any violation or when it cannot run."""
    from nanomoni.store import describe_failure, masked
    from nanomoni.store.audit import AuditError, audit

    try:
        report = asyncio.run(audit(args.store))
    except AuditError as exc:
        raise StartupError(str(exc)) from None
    except Exception as exc:  # an unreachable or failing store: one line, no traceback
        raise StartupError(f"{masked(args.store)}: {describe_failure(exc)}") from None
    print("\n".join(report.lines))
    failed = sum(not finding.ok for finding in report.findings)
    print(f"audit of {masked(args.store)}: " + (f"{failed} check(s) failed" if failed else "ok"))
    return 0 if report.ok else 1


_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {
    "issuer": (_issuer, "run the issuer service"),
    "vendor": (_vendor, "run the vendor service"),
    "demo": (_demo, "run the whole lifecycle for every mode on local services"),
    "bench": (_bench, "load benchmark (needs the tools extra: pip install 'nanomoni[tools]')"),
    "backup": (_backup, "copy a store, online: SQLite as one snapshot, Redis group by group"),
    "restore": (_restore, "load a backup into an empty store (or replace one, --force)"),
    "audit": (_audit, "check from the store alone that the books balance (read-only)"),
}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="nanomoni", description="NanoMoni micropayments")
    parser.add_argument("--version", action="version", version=f"nanomoni {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    subparsers = {}
    for name, (add_options, summary) in _COMMANDS.items():
        subparsers[name] = commands.add_parser(name, help=summary, description=summary)
        add_options(subparsers[name])
    return parser, subparsers


def build_parser() -> argparse.ArgumentParser:
    return _parser()[0]


def _run_service(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    multiproc_dir: str | None = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers aggregate metrics through files: the directory must exist before
        # prometheus_client is imported anywhere.
        multiproc_dir = tempfile.mkdtemp(prefix=f"nanomoni-{args.command}-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    try:
        from nanomoni.serve import ConnectionLimits, serve
        from nanomoni.store import set_default_timeout

        set_default_timeout(args.store_timeout)  # every store this process and its workers open
        factory = _issuer_factory(args) if args.command == "issuer" else _vendor_factory(args)
        limits = ConnectionLimits(args.header_timeout, args.max_connections)
        return serve(factory, host=args.host, port=args.port, workers=args.workers, limits=limits)
    finally:
        if multiproc_dir is not None:
            shutil.rmtree(multiproc_dir, ignore_errors=True)


def _issuer_factory(args: argparse.Namespace) -> Callable[[], Any]:
    from nanomoni.issuer.app import IssuerConfig, create_app
    from nanomoni.store import open_issuer_store

    config = IssuerConfig(
        data_dir=args.data_dir,
        store=args.store,
        key_file=args.key_file,
        initial_balance=args.initial_balance,
        admin_token=args.admin_token or None,
        max_body=args.max_body,
        max_index=args.max_index,
        dispute_window=args.dispute_window,
        min_channel_ttl=args.min_channel_ttl,
        max_channel_ttl=args.max_channel_ttl,
        audit_interval=args.audit_interval,
        stats_interval=args.stats_interval,
    )
    if config.min_channel_ttl > config.max_channel_ttl:
        raise SystemExit("nanomoni issuer: --min-channel-ttl exceeds --max-channel-ttl")
    _prepare(
        config.data_dir,
        config.key_path,
        config.store_url,
        lambda: open_issuer_store(config.store_url),
    )
    return lambda: create_app(config)


def _vendor_factory(args: argparse.Namespace) -> Callable[[], Any]:
    from nanomoni.store import open_vendor_store
    from nanomoni.vendor.app import VendorConfig, create_app

    config = VendorConfig(
        data_dir=args.data_dir,
        issuer_url=args.issuer_url,
        store=args.store,
        key_file=args.key_file,
        max_body=args.max_body,
        max_batch_body=args.max_batch_body,
        max_hashes=args.max_hashes,
        issuer_timeout=args.issuer_timeout,
        terms_cache=args.terms_cache,
        admin_token=args.admin_token or None,
        watch_interval=args.watch_interval,
        checkpoint_interval=args.checkpoint_interval,
    )
    _prepare(
        config.data_dir,
        config.key_path,
        config.store_url,
        lambda: open_vendor_store(config.store_url),
    )
    return lambda: create_app(config)


def _prepare(
    data_dir: Path, key_path: Path, store_url: str, open_store: Callable[[], Awaitable[Any]]
) -> None:
    """Before any worker starts: create the data directory and the key, and open the
    store once, so its schema exists before workers race to create it and a bad or
    unreachable store fails here, in one line, instead of inside every worker."""
    from nanomoni.serve import load_or_create_key
    from nanomoni.store import describe_failure, masked

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the data directory {data_dir}: {exc.strerror}") from None
    try:
        load_or_create_key(key_path)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(f"cannot use the key file {key_path}: {why}") from None

    async def touch() -> None:
        store = await open_store()
        await store.close()

    try:
        asyncio.run(touch())
    except Exception as exc:  # every way a store can fail to open says so in one line
        raise StartupError(
            f"cannot open the store {masked(store_url)}: {describe_failure(exc)}"
        ) from None


def _run_tool(args: argparse.Namespace, subparser: argparse.ArgumentParser) -> int:
    try:
        # Imported only when asked for: the services never load the tools.
        tool = importlib.import_module(f"nanomoni.tools.{args.command}")
    except ImportError as exc:
        raise SystemExit(
            f"nanomoni {args.command}: {exc.name or exc} is not installed: "
            "pip install 'nanomoni[tools]'"
        ) from None
    check = getattr(tool, "invalid", None)
    problem = check(args) if check is not None else None
    if problem:
        subparser.error(problem)
    try:
        return int(tool.main(args))
    except KeyboardInterrupt:  # Ctrl-C: what it started is stopped on the way out
        print(f"nanomoni {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser, subparsers = _parser()
    args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    subparser = subparsers[args.command]
    if unknown:  # said with the subcommand's usage, not the top-level one
        subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command in ("issuer", "vendor", "backup", "restore", "audit"):
        try:
            if args.command == "audit":
                return _run_audit(args)
            return (
                _run_backup(args) if args.command in ("backup", "restore") else _run_service(args)
            )
        except StartupError as exc:
            print(f"nanomoni {args.command}: {exc}", file=sys.stderr)
            return 1
    return _run_tool(args, subparser)


if __name__ == "__main__":
    raise SystemExit(main())
