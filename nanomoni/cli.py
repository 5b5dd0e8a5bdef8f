"""The `nanomoni` command (SPEC §8): issuer, vendor, demo, bench.

Every service flag can also come from NANOMONI_<SERVICE>_<FLAG>
(e.g. NANOMONI_VENDOR_STORE, NANOMONI_ISSUER_ADMIN_TOKEN); a flag on the
command line wins over the environment.
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

DEFAULT_DATA_DIR = "./nanomoni-data"


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
        self.parser.add_argument(
            flag, type=type, default=default, required=required, help=f"{help} [env {env_name}]"
        )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _common(flags: _Flags, port: int) -> None:
    flags.add("--host", default="127.0.0.1", help="address to listen on")
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
        type=_positive_seconds,
        default=2.0,
        help="deadline of every store call in seconds; past it a request gets 503",
    )
    flags.add(
        "--key-file",
        type=Path,
        help="PKCS#8 PEM private key (default: created in the data directory)",
    )
    flags.add(
        "--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR), help="where default files live"
    )
    flags.add("--workers", type=_positive, default=1, help="worker processes sharing the socket")
    flags.add("--max-body", type=_positive, default=64 * 1024, help="request body limit in bytes")
    flags.add("--log-level", default="warning", help="logging level")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanomoni", description="NanoMoni micropayments")
    commands = parser.add_subparsers(dest="command", required=True)

    issuer = _Flags(commands.add_parser("issuer", help="run the issuer service"), "issuer")
    _common(issuer, 8001)
    issuer.add(
        "--initial-balance",
        type=_non_negative,
        default=10_000_000,
        help="balance granted to a newly registered account",
    )
    issuer.add(
        "--admin-token", help="bearer token that authorises deposits (none: deposits refused)"
    )
    issuer.add(
        "--max-index",
        type=_positive,
        default=2**24,
        help="largest max_k / max_i a channel may have",
    )

    vendor = _Flags(commands.add_parser("vendor", help="run the vendor service"), "vendor")
    _common(vendor, 8000)
    vendor.add(
        "--issuer-url", required=True, help="the issuer's root URL, e.g. http://127.0.0.1:8001"
    )
    vendor.add(
        "--max-hashes", type=_positive, default=2**20, help="hashes one payword payment may cost"
    )
    vendor.add("--issuer-timeout", type=float, default=10.0, help="seconds to wait for the issuer")
    vendor.add(
        "--terms-cache",
        type=_positive,
        default=200_000,
        help="channel terms kept in memory per worker",
    )

    commands.add_parser("demo", help="run the whole lifecycle for every mode", add_help=False)
    commands.add_parser("bench", help="load benchmark", add_help=False)
    return parser


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
        from nanomoni.serve import serve
        from nanomoni.store import set_default_timeout

        set_default_timeout(args.store_timeout)  # every store this process and its workers open
        factory = _issuer_factory(args) if args.command == "issuer" else _vendor_factory(args)
        return serve(factory, host=args.host, port=args.port, workers=args.workers)
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
    )
    _prepare(config.data_dir, config.key_path, lambda: open_issuer_store(config.store_url))
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
        max_hashes=args.max_hashes,
        issuer_timeout=args.issuer_timeout,
        terms_cache=args.terms_cache,
    )
    _prepare(config.data_dir, config.key_path, lambda: open_vendor_store(config.store_url))
    return lambda: create_app(config)


def _prepare(data_dir: Path, key_path: Path, open_store: Callable[[], Awaitable[Any]]) -> None:
    """Before any worker starts: create the data directory and the key, and open the
    store once, so its schema exists before workers race to create it and a bad or
    unreachable store fails here, with a message, instead of inside every worker."""
    from nanomoni.serve import load_or_create_key
    from nanomoni.store import StoreUnavailable

    data_dir.mkdir(parents=True, exist_ok=True)
    load_or_create_key(key_path)

    async def touch() -> None:
        store = await open_store()
        await store.close()

    try:
        asyncio.run(touch())
    except (OSError, ValueError, StoreUnavailable) as exc:
        raise SystemExit(f"nanomoni: cannot open the store: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("demo", "bench"):
        # Imported lazily: the services never load the client library.
        command = importlib.import_module(f"nanomoni.client.{argv[0]}")
        return int(command.main(argv[1:]))
    args = _parser().parse_args(argv)
    return _run_service(args)


if __name__ == "__main__":
    raise SystemExit(main())
