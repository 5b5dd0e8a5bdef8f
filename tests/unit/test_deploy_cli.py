"""Everything the deployment passes to `nanomoni` is an option the command has.

The compose files and the container file configure the services through
NANOMONI_<SERVICE>_<FLAG> variables and command lines; the command's own
`--help` lists its flags and the variable each one reads, and with the
deployment's variables set the command must still start its parser cleanly
(every value converts to the flag's type).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]

import nanomoni

REPO = Path(__file__).resolve().parents[2]
# Stand-ins for what a deployer exports before `docker compose up`.
DEPLOYER_ENV = {"NANOMONI_ADMIN_TOKEN": "deploy-test-token"}


def compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / name).read_text())
    return data


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` substitution."""

    def one(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        assert operator != ":?", f"{name} must be set: {word}"
        assert operator == ":-", f"{name} has no default"
        return word

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", one, value)


def env_file(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {name: value for name, value in pairs}


def service_env(name: str, *files: str) -> dict[str, str]:
    """The NANOMONI_* environment a service container gets: the container file's ENV,
    then its env_file, then `environment`, later compose files overriding earlier ones."""
    env = stage_env(name)
    for file in files:
        service = compose(file)["services"].get(name, {})
        if "env_file" in service:
            env.update(env_file(REPO / service["env_file"]))
        env.update({k: str(v) for k, v in service.get("environment", {}).items()})
    return {k: interpolate(v, DEPLOYER_ENV) for k, v in env.items() if k.startswith("NANOMONI_")}


def stage_env(stage: str) -> dict[str, str]:
    """ENV lines of one stage of the shared container file."""
    env: dict[str, str] = {}
    current = None
    for line in (REPO / "services" / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            current = line.split()[-1]
        elif line.startswith("ENV ") and current == stage:
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def run_help(argv: list[str], env: dict[str, str] | None = None) -> str:
    """`nanomoni ARGV --help` of the package these tests import (wheel or source tree)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NANOMONI_")}
    # `python -m` looks in the working directory first: run it from the package's parent.
    package_root = str(Path(nanomoni.__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-m", "nanomoni", *argv, "--help"],
                          env={**clean, **(env or {})}, cwd=package_root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@functools.cache
def help_of(command: str) -> str:
    """`--help` without any deployment variables, run once per command."""
    return run_help([command] if command else [])


def flags(help_text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


@pytest.mark.parametrize("service", ["issuer", "vendor"])
def test_every_variable_the_deployment_sets_is_read_by_the_command(service: str) -> None:
    documented = set(re.findall(r"NANOMONI_[A-Z0-9_]+", help_of(service)))
    for files in (["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cluster.yml"]):
        env = service_env(service, *files)
        assert env, "the deployment configures nothing"
        assert set(env) <= documented, set(env) - documented
        # Each variable names the flag of the same name (SPEC §8).
        prefix = f"NANOMONI_{service.upper()}_"
        for name in env:
            flag = "--" + name.removeprefix(prefix).lower().replace("_", "-")
            assert flag in flags(help_of(service)), flag


@pytest.mark.parametrize("service", ["issuer", "vendor"])
@pytest.mark.parametrize("files", [["docker-compose.yml"],
                                   ["docker-compose.yml", "docker-compose.cluster.yml"]],
                         ids=["main", "cluster"])
def test_the_command_accepts_the_deployments_values(service: str, files: list[str]) -> None:
    # The parser converts every variable it reads; a bad value fails here.
    run_help([service], service_env(service, *files))


def test_container_commands_are_subcommands_of_nanomoni() -> None:
    text = help_of("")
    for stage in ("issuer", "vendor", "client"):
        cmd = re.search(rf"FROM runtime AS {stage}\n(?:.*\n)*?CMD (\[.*\])",
                        (REPO / "services" / "Dockerfile").read_text())
        assert cmd is not None, stage
        subcommand = json.loads(cmd.group(1))[0]
        assert re.search(rf"\b{subcommand}\b", text), subcommand


def test_bench_job_passes_only_options_of_nanomoni_bench() -> None:
    services = compose("docker-compose.yml")["services"]
    command = [interpolate(arg, DEPLOYER_ENV) for arg in services["bench"]["command"]]
    assert command[0] == "bench"
    known = flags(help_of("bench"))
    given = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in command[1:]}
    assert set(given) <= known, set(given) - known
    # The load generator reaches the services through the ports they publish on the host.
    published = {name: services[name]["ports"][0].split(":") for name in ("issuer", "vendor")}
    for name, (host, host_port, _) in published.items():
        url = urlsplit(given[f"--{name}-url"])
        assert (url.hostname, str(url.port)) == (host, host_port)
    assert services["bench"]["network_mode"] == "host"
    assert given["--admin-token"] == DEPLOYER_ENV["NANOMONI_ADMIN_TOKEN"]
    mount = services["bench"]["volumes"][0].split(":")[1]
    assert given["--out"].startswith(mount + "/")
