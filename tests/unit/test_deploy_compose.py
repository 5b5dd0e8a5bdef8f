"""The compose files: valid Compose Specification, consistent ports, storage and wiring.

No Docker engine is needed: the files are parsed with pyyaml and validated with
the Compose Specification JSON schema, which ships inside the docker-compose
1.29.2 package on PyPI. The schema is third-party, so it is not committed: it is
downloaded once with pip into build/deploy-test-cache (git-ignored).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
MAIN_COMPOSE = REPO / "docker-compose.yml"
CLUSTER_COMPOSE = REPO / "docker-compose.cluster.yml"
COMPOSE_FILES = [MAIN_COMPOSE, CLUSTER_COMPOSE]
SCHEMA_PACKAGE = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"
SCHEMA_CACHE = REPO / "build" / "deploy-test-cache" / "compose_spec.json"

Compose = dict[str, Any]


def compose_spec_schema() -> dict[str, Any]:
    """The Compose Specification schema, fetched from PyPI on first use."""
    if not SCHEMA_CACHE.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "--dest", tmp, SCHEMA_PACKAGE],
                check=True,
                timeout=240,
            )
            (wheel,) = Path(tmp).glob("docker_compose-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                text = archive.read(SCHEMA_MEMBER)
        SCHEMA_CACHE.parent.mkdir(parents=True, exist_ok=True)
        partial = SCHEMA_CACHE.with_suffix(".part")
        partial.write_bytes(text)
        partial.replace(SCHEMA_CACHE)
    schema: dict[str, Any] = json.loads(SCHEMA_CACHE.read_text())
    return schema


def load(path: Path) -> Compose:
    data: Compose = yaml.safe_load(path.read_text())
    return data


def env_files(compose_dir: Path, service: Compose) -> list[Path]:
    files = service.get("env_file", [])
    return [compose_dir / f for f in ([files] if isinstance(files, str) else files)]


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def service_env(*layers: Compose) -> dict[str, str]:
    """A service's environment as compose builds it: env_file first, `environment` wins;
    later compose files (overrides) win over earlier ones."""
    env: dict[str, str] = {}
    for layer in layers:
        for path in env_files(REPO, layer):
            env.update(read_env_file(path))
        given = layer.get("environment", {})
        if isinstance(given, list):
            given = dict(item.split("=", 1) for item in given)
        env.update({k: str(v) for k, v in given.items()})
    return env


def published(service: Compose) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each `ports` entry."""
    out = []
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = str(entry).split(":")
        out.append((host_ip, int(host_port), int(container_port)))
    return out


def flag_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return compose_spec_schema()


@pytest.fixture(scope="module")
def main() -> Compose:
    return load(MAIN_COMPOSE)


@pytest.fixture(scope="module")
def cluster() -> Compose:
    return load(CLUSTER_COMPOSE)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_validates_against_the_compose_spec(
    path: Path, schema: dict[str, Any]
) -> None:
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(load(path))]
    assert errors == []


def test_the_schema_catches_a_misspelt_service_key(main: Compose, schema: dict[str, Any]) -> None:
    # Guards against a schema that accepts anything (e.g. a wrong draft or an empty file).
    broken = json.loads(json.dumps(main))
    broken["services"]["issuer"]["enviroment"] = {"X": "1"}
    validator = jsonschema.Draft201909Validator(schema)
    assert any("enviroment" in e.message for e in validator.iter_errors(broken))


def test_main_file_has_every_part(main: Compose) -> None:
    assert set(main["services"]) == {
        "issuer-redis", "vendor-redis", "issuer", "vendor", "bench", "prometheus", "grafana"}
    assert main["services"]["bench"]["profiles"] == ["bench"]
    # Only the load generator is optional; everything else starts with `up`.
    assert all("profiles" not in s for n, s in main["services"].items() if n != "bench")


@pytest.mark.parametrize("name", ["issuer-redis", "vendor-redis"])
def test_service_redis_fsyncs_every_write_and_persists_to_a_volume(
    main: Compose, name: str
) -> None:
    redis = main["services"][name]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert flag_value(command, "--appendonly") == "yes"
    assert flag_value(command, "--appendfsync") == "always"
    (volume,) = redis["volumes"]
    source, target = volume.split(":")
    assert target == "/data" and source in main["volumes"]


def test_services_use_their_own_redis(main: Compose) -> None:
    issuer_env = service_env(main["services"]["issuer"])
    vendor_env = service_env(main["services"]["vendor"])
    issuer_store = urlsplit(issuer_env["NANOMONI_ISSUER_STORE"])
    vendor_store = urlsplit(vendor_env["NANOMONI_VENDOR_STORE"])
    assert (issuer_store.scheme, issuer_store.hostname, issuer_store.port) == (
        "redis", "issuer-redis", 6379)
    assert (vendor_store.scheme, vendor_store.hostname, vendor_store.port) == (
        "redis", "vendor-redis", 6379)
    for name in ("issuer", "vendor"):
        needs = main["services"][name]["depends_on"]
        assert needs[f"{name}-redis"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name,port_var,default_port", [
    ("issuer", "NANOMONI_ISSUER_PORT", 8001),
    ("vendor", "NANOMONI_VENDOR_PORT", 8000),
])
def test_published_port_is_the_port_the_service_listens_on(
    main: Compose, name: str, port_var: str, default_port: int
) -> None:
    service = main["services"][name]
    env = service_env(service)
    assert int(env[port_var]) == default_port  # SPEC §8 defaults
    assert env[port_var.replace("_PORT", "_HOST")] == "0.0.0.0"  # reachable from other containers
    assert published(service) == [("127.0.0.1", default_port, default_port)]


def test_vendor_reaches_the_issuer_by_service_name_and_port(main: Compose) -> None:
    issuer_port = int(service_env(main["services"]["issuer"])["NANOMONI_ISSUER_PORT"])
    url = urlsplit(service_env(main["services"]["vendor"])["NANOMONI_VENDOR_ISSUER_URL"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", "issuer", issuer_port, "")
    assert main["services"]["vendor"]["depends_on"]["issuer"] == {"condition": "service_healthy"}


def test_issuer_secrets_come_from_the_deployers_environment(main: Compose) -> None:
    env = main["services"]["issuer"]["environment"]
    # `${VAR:?...}` makes compose refuse to start without an admin token.
    assert env["NANOMONI_ISSUER_ADMIN_TOKEN"].startswith("${NANOMONI_ADMIN_TOKEN:?")
    for path in env_files(REPO, main["services"]["issuer"]):
        assert "NANOMONI_ISSUER_ADMIN_TOKEN" not in read_env_file(path)


def test_every_file_a_service_mounts_or_reads_exists(main: Compose, cluster: Compose) -> None:
    for compose in (main, cluster):
        for service in compose["services"].values():
            for path in env_files(REPO, service):
                assert path.is_file(), path
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("./"):
                    assert (REPO / source).exists(), source
                else:
                    assert source in compose["volumes"], source


def test_built_services_name_a_stage_of_the_shared_container_file(main: Compose) -> None:
    for name, target in (("issuer", "issuer"), ("vendor", "vendor"), ("bench", "client")):
        build = main["services"][name]["build"]
        dockerfile = REPO / build["context"] / build["dockerfile"]
        stages = [line.split()[-1] for line in dockerfile.read_text().splitlines()
                  if line.startswith("FROM ") and " AS " in line]
        assert build["target"] == target and target in stages


def test_prometheus_scrapes_both_services_on_their_ports(main: Compose) -> None:
    config = yaml.safe_load((REPO / "services/prometheus/prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in config["scrape_configs"]}
    issuer_port = service_env(main["services"]["issuer"])["NANOMONI_ISSUER_PORT"]
    vendor_port = service_env(main["services"]["vendor"])["NANOMONI_VENDOR_PORT"]
    assert targets == {"issuer": [f"issuer:{issuer_port}"], "vendor": [f"vendor:{vendor_port}"]}
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])
    # The rule files Prometheus loads are the ones mounted from services/prometheus.
    mount = next(v for v in main["services"]["prometheus"]["volumes"] if v.startswith("./"))
    source, target = mount.split(":")[:2]
    for rule_file in config["rule_files"]:
        assert rule_file.startswith(target + "/")
        assert (REPO / source / rule_file.removeprefix(target + "/")).is_file()
    assert f"--config.file={target}/prometheus.yml" in main["services"]["prometheus"]["command"]


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_uses(main: Compose) -> None:
    grafana = REPO / "services/grafana"
    (datasource,) = yaml.safe_load(
        (grafana / "provisioning/datasources/prometheus.yml").read_text())["datasources"]
    prometheus_port = published(main["services"]["prometheus"])[0][2]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load(
        (grafana / "provisioning/dashboards/nanomoni.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in main["services"]["grafana"]["volumes"])
    assert mounts["./services/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./services/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard = json.loads((grafana / "dashboards/nanomoni.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]


def test_cluster_variant_puts_the_vendor_on_the_cluster_nodes(cluster: Compose) -> None:
    nodes = {n: s for n, s in cluster["services"].items() if n.startswith("redis-node-")}
    assert len(nodes) == 3
    for name, node in nodes.items():
        command = node["command"]
        assert flag_value(command, "--cluster-enabled") == "yes"
        assert flag_value(command, "--cluster-announce-hostname") == name
        assert flag_value(command, "--appendfsync") == "always"
    store = urlsplit(cluster["services"]["vendor"]["environment"]["NANOMONI_VENDOR_STORE"])
    assert store.scheme == "redis+cluster" and store.hostname in nodes
    assert store.port == int(flag_value(nodes[store.hostname]["command"], "--port"))
    init = cluster["services"]["redis-cluster-init"]
    script = init["command"][0]
    assert "redis-cli --cluster create" in script
    for name in nodes:
        assert name in script
        assert init["depends_on"][name] == {"condition": "service_healthy"}
    assert cluster["services"]["vendor"]["depends_on"] == {
        "redis-cluster-init": {"condition": "service_completed_successfully"}}


def test_cluster_override_only_adds_to_services_of_the_main_file(
    main: Compose, cluster: Compose
) -> None:
    # An override that names a service the main file lacks would start a half-defined container.
    for name, service in cluster["services"].items():
        assert name in main["services"] or "image" in service, name


@pytest.mark.parametrize("name", ["issuer", "vendor"])
def test_service_keeps_its_key_and_files_in_its_data_volume(main: Compose, name: str) -> None:
    service = main["services"][name]
    data_dir = service_env(service)[f"NANOMONI_{name.upper()}_DATA_DIR"]
    mounts = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    assert mounts[data_dir] == f"{name}-data" and f"{name}-data" in main["volumes"]
    # The container file declares the same directory as its volume and working directory.
    dockerfile = (REPO / "services" / "Dockerfile").read_text()
    assert f'VOLUME ["{data_dir}"]' in dockerfile and f"WORKDIR {data_dir}" in dockerfile
