"""The supervisor's restart back-off and the connection-limit flags."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from commands import PACKAGE_ROOT

from nanomoni.serve import MAX_RESTART_DELAY, STABLE_SECONDS, RestartBackoff


def test_quick_deaths_double_the_restart_delay_up_to_a_cap() -> None:
    backoff = RestartBackoff()
    delays = [backoff.after_death(lived_seconds=0.1) for _ in range(8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, MAX_RESTART_DELAY, MAX_RESTART_DELAY]


def test_a_worker_that_ran_stably_is_replaced_at_once_and_resets_the_delay() -> None:
    backoff = RestartBackoff()
    assert backoff.after_death(lived_seconds=STABLE_SECONDS + 60) == 0.0
    for _ in range(4):
        backoff.after_death(lived_seconds=1.0)
    assert backoff.after_death(lived_seconds=STABLE_SECONDS) == 0.0
    assert backoff.after_death(lived_seconds=1.0) == 0.25


def nanomoni_command(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "nanomoni", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
        timeout=60,
    )


@pytest.mark.parametrize("service", ["issuer", "vendor"])
def test_help_names_the_limit_flags_and_their_variables(service: str) -> None:
    shown = nanomoni_command(service, "--help")
    assert shown.returncode == 0
    words = shown.stdout.split()
    prefix = f"NANOMONI_{service.upper()}_"
    for flag in ("--header-timeout", "--max-connections"):
        assert flag in words
    for variable in ("HEADER_TIMEOUT]", "MAX_CONNECTIONS]"):
        assert prefix + variable in words


@pytest.mark.parametrize(
    ("args", "env", "complaint"),
    [
        (["--header-timeout", "0"], {}, "must be positive"),
        (["--header-timeout", "-1"], {}, "must be positive"),
        (["--max-connections", "0"], {}, "at least 1"),
        ([], {"NANOMONI_ISSUER_HEADER_TIMEOUT": "nan"}, "must be positive"),
        ([], {"NANOMONI_ISSUER_MAX_CONNECTIONS": "lots"}, "expected a whole number"),
    ],
)
def test_bad_limits_are_refused_before_starting(
    args: list[str], env: dict[str, str], complaint: str
) -> None:
    refused = nanomoni_command("issuer", "--data-dir", "/nonexistent/never-created", *args, env=env)
    assert refused.returncode == 2
    assert complaint in refused.stderr


FREEZE_CHECK = """
import gc, weakref
from nanomoni.serve import freeze_startup_heap

class Node:
    pass

freeze_startup_heap()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
new = Node()
new.self = new  # garbage made after start-up is still collected
gone = weakref.ref(new)
del new
gc.collect()
assert gone() is None
print("ok")
"""


def test_a_worker_freezes_its_startup_heap_and_still_collects_later_garbage() -> None:
    done = subprocess.run(
        [sys.executable, "-P", "-c", FREEZE_CHECK],  # -P: the package under test, not the cwd
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
