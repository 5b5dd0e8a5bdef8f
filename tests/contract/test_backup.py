"""Online backup and restore on every backend: what is restored is what was stored,
a store holding data is replaced only with --force, mistakes are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from commands import nanomoni_cli
from contract.conftest import Backend
from contract.factories import closure, opened_channel, state

from nanomoni.store import open_issuer_store, open_vendor_store
from nanomoni.store.backup import BackupError, backup, restore


async def fill(url: str) -> dict[str, object]:
    """A ledger with settled and open channels, and a vendor's accepted states and nodes."""
    issuer = await open_issuer_store(url)
    vendor = await open_vendor_store(url)
    try:
        client, vendor_key, settled = await opened_channel(issuer, 40, client_balance=100)
        await issuer.settle(settled.channel_id, closure(15))
        _, _, open_one = await opened_channel(issuer, 30, client_balance=50)
        await vendor.compare_and_set(open_one.channel_id, state(7), {9: b"n" * 32, 4: b"m" * 32})
        await vendor.compare_and_set(settled.channel_id, state(15), {})
        return {
            "client": await issuer.get_account(client),
            "vendor": await issuer.get_account(vendor_key),
            "settled": await issuer.get_channel(settled.channel_id),
            "open": await issuer.get_channel(open_one.channel_id),
            "view": await vendor.load(open_one.channel_id, [9, 4, 5]),
            "accounts": (client, vendor_key, settled.channel_id, open_one.channel_id),
        }
    finally:
        await issuer.close()
        await vendor.close()


async def read_back(url: str, names: tuple[str, str, str, str]) -> dict[str, object]:
    issuer = await open_issuer_store(url)
    vendor = await open_vendor_store(url)
    client, vendor_key, settled, open_id = names
    try:
        return {
            "client": await issuer.get_account(client),
            "vendor": await issuer.get_account(vendor_key),
            "settled": await issuer.get_channel(settled),
            "open": await issuer.get_channel(open_id),
            "view": await vendor.load(open_id, [9, 4, 5]),
            "accounts": names,
        }
    finally:
        await issuer.close()
        await vendor.close()


async def test_a_restored_store_holds_what_was_backed_up(backend: Backend, tmp_path: Path) -> None:
    source = backend.fresh_url()
    before = await fill(source)
    out = tmp_path / "backup.bin"
    taken = await backup(source, out)
    assert taken.keys > 0 and out.stat().st_size > 0
    target = (
        f"sqlite:{tmp_path / 'restored.sqlite3'}"
        if backend.name == "sqlite"
        else backend.fresh_url()
    )
    restored = await restore(out, target)
    assert restored.keys == taken.keys
    names = before["accounts"]
    assert isinstance(names, tuple)
    assert await read_back(target, names) == before


async def test_a_store_with_data_is_replaced_only_with_force(
    backend: Backend, tmp_path: Path
) -> None:
    source = backend.fresh_url()
    await fill(source)
    out = tmp_path / "backup.bin"
    await backup(source, out)
    with pytest.raises(BackupError, match="--force"):
        await restore(out, source)
    assert (await restore(out, source, force=True)).keys > 0


async def test_a_backup_restores_only_into_its_own_kind_of_store(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'a.sqlite3'}"
    await fill(url)
    out = tmp_path / "sqlite.bin"
    await backup(url, out)
    with pytest.raises(BackupError, match="SQLite backup"):
        await restore(out, "redis://127.0.0.1:1/0")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    with pytest.raises(BackupError, match="not a NanoMoni backup"):
        await restore(junk, url)


def test_the_commands_say_what_they_did_or_why_not_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'live.sqlite3'}"
    done = nanomoni_cli("backup", "--store", url, str(tmp_path / "b.bin"), cwd=tmp_path)
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"nanomoni backup: no SQLite database at {tmp_path / 'live.sqlite3'}"
    )
    missing = nanomoni_cli("restore", str(tmp_path / "nope.bin"), "--store", url, cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"nanomoni restore: cannot read {tmp_path / 'nope.bin'}: No such file or directory"
    )
    down = nanomoni_cli(
        "backup", "--store", "redis://:pw@127.0.0.1:1/0", str(tmp_path / "r.bin"), cwd=tmp_path
    )
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert (
        down.stderr.startswith("nanomoni backup: redis://:***@127.0.0.1:1/0: ")
        and "pw@" not in down.stderr
    )


async def test_backup_command_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'live.sqlite3'}"
    before = await fill(url)
    done = nanomoni_cli("backup", "--store", url, str(tmp_path / "b.bin"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backup: ") and "consistent group" in done.stdout
    target = f"sqlite:{tmp_path / 'copy.sqlite3'}"
    again = nanomoni_cli("restore", str(tmp_path / "b.bin"), "--store", target, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    names = before["accounts"]
    assert isinstance(names, tuple)
    assert await read_back(target, names) == before
