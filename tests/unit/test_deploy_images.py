"""The shared container file agrees with the package build and with Debian.

Without a Docker engine the image cannot be built here, so each part of it is
checked on its own: the apt packages it installs exist, the files it copies
are enough to build the wheel with exactly its build command, the runtime
packages cover every shared library the built core links against, and each
service stage runs as a non-root user with a data volume and a health check
on the port it listens on.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "services" / "Dockerfile"
# A fixed place (git-ignored) so CMake's cache from the previous run is reused.
CONTEXT_COPY = REPO / "build" / "deploy-context"

# Provided by the base image or by every Debian system; the image need not install them.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libzstd1", "zlib1g"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name) of a Dockerfile."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), base.strip())
        elif current is None:
            assert keyword == "ARG", line
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            current.instructions.append((keyword, rest.strip()))
    return args, stages


def apt_installs(stage: Stage) -> list[str]:
    """Package names of every `apt-get install` in the stage's RUN lines."""
    packages: list[str] = []
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if "apt-get" in words and "install" in words:
                after = words[words.index("install") + 1:]
                packages += [w for w in after if not w.startswith("-")]
    return packages


def copy_sources(stage: Stage) -> list[str]:
    sources: list[str] = []
    for copy in stage.all("COPY"):
        words = [w for w in shlex.split(copy) if not w.startswith("--")]
        sources += words[:-1]
    return sources


def wheel_command(stage: Stage) -> list[str]:
    (command,) = [shlex.split(r) for r in stage.all("RUN") if "wheel" in shlex.split(r)]
    return command


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def debian_package_of(library: str) -> str:
    """The package that ships a library; dpkg knows it under /lib or /usr/lib (merged /usr)."""
    alias = library.removeprefix("/usr") if library.startswith("/usr/") else "/usr" + library
    for path in (library, alias):
        found = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.split(":")[0]
    raise AssertionError(f"no Debian package ships {library}")


def healthcheck_code(stage: Stage) -> str:
    """The Python source the stage's HEALTHCHECK runs."""
    check = stage.last("HEALTHCHECK")
    exec_form = json.loads(check[check.index("CMD") + 3:])
    assert exec_form[:2] == ["python", "-c"]
    code: str = exec_form[2]
    return code


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def built_wheel(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The wheel built by the builder stage's own command from only the files it copies."""
    _, stages = dockerfile
    builder = stages["builder"]
    if CONTEXT_COPY.exists():
        # Keep only the CMake build cache; sources are copied afresh every time.
        for entry in CONTEXT_COPY.iterdir():
            if entry.name != "build":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    CONTEXT_COPY.mkdir(parents=True, exist_ok=True)
    for source in copy_sources(builder):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, CONTEXT_COPY / source)
        else:
            shutil.copy2(origin, CONTEXT_COPY / source)
    for pattern in dockerignore_patterns():
        for ignored in CONTEXT_COPY.glob(pattern):
            if CONTEXT_COPY / "build" not in (ignored, *ignored.parents):
                shutil.rmtree(ignored) if ignored.is_dir() else ignored.unlink()
    out = tmp_path_factory.mktemp("wheels")
    command = wheel_command(builder)
    assert command[:3] == ["python", "-m", "pip"]
    dest = command.index("-w") + 1
    command = [sys.executable, *command[1:dest], str(out), *command[dest + 1:]]
    subprocess.run(command, cwd=CONTEXT_COPY, check=True, timeout=540,
                   stdout=subprocess.DEVNULL)
    (wheel,) = out.glob("nanomoni-*.whl")
    return wheel


def test_stages_build_on_the_slim_bookworm_python(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    args, stages = dockerfile
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert list(stages) == ["builder", "runtime", "issuer", "vendor", "client"]
    assert stages["builder"].base == stages["runtime"].base == "${PYTHON_IMAGE}"
    for name in ("issuer", "vendor", "client"):
        assert stages[name].base == "runtime"


@pytest.mark.parametrize("stage", ["builder", "runtime"])
def test_every_apt_package_the_image_installs_exists(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], stage: str
) -> None:
    # The image is Debian bookworm, like this machine, so its apt catalogue answers.
    packages = apt_installs(dockerfile[1][stage])
    assert packages
    shown = subprocess.run(["apt-cache", "show", *packages], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    listed = set(re.findall(r"^Package: (\S+)$", shown.stdout, re.MULTILINE))
    assert set(packages) <= listed, set(packages) - listed


def test_builder_installs_the_build_dependencies_the_project_declares(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    makefile = (REPO / "Makefile").read_text()
    declared = re.search(r"^APT_PACKAGES\s*:=(.*)$", makefile, re.MULTILINE)
    assert declared is not None
    # Everything the Makefile installs to build the core, minus the Redis server and tools.
    needed = {p for p in declared.group(1).split() if not p.startswith("redis")}
    assert needed <= set(apt_installs(dockerfile[1]["builder"]))


def test_runtime_stage_runs_the_installed_command_as_a_non_root_user(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    runtime = dockerfile[1]["runtime"]
    user = runtime.last("USER")
    assert user not in ("root", "0")
    assert any("useradd" in run and run.endswith(f" {user}") for run in runtime.all("RUN"))
    workdir = runtime.last("WORKDIR")
    assert json.loads(runtime.last("VOLUME")) == [workdir]
    assert json.loads(runtime.last("ENTRYPOINT")) == ["nanomoni"]
    # The runtime image only receives the built wheel, never the build tools.
    assert not runtime.all("COPY")
    assert any("from=builder" in run and "pip install" in run for run in runtime.all("RUN"))


@pytest.mark.parametrize("service,port", [("issuer", 8001), ("vendor", 8000)])
def test_service_stage_listens_exposes_and_checks_health_on_one_port(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], service: str, port: int
) -> None:
    stage = dockerfile[1][service]
    prefix = f"NANOMONI_{service.upper()}_"
    env = dict(pair.split("=", 1) for env in stage.all("ENV") for pair in env.split())
    assert env[prefix + "HOST"] == "0.0.0.0" and env[prefix + "PORT"] == str(port)
    assert stage.all("EXPOSE") == [str(port)]
    assert json.loads(stage.last("CMD")) == [service]
    code = healthcheck_code(stage)
    assert f"os.environ['{prefix}PORT']" in code and "/health" in code


def test_client_stage_is_the_load_generator(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    client = dockerfile[1]["client"]
    assert json.loads(client.last("CMD"))[0] == "bench"
    assert client.last("HEALTHCHECK") == "NONE"


def test_builder_copies_exist_and_are_not_ignored(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    ignored_tops = {p.rstrip("/") for p in dockerignore_patterns() if "/" not in p and "*" not in p}
    for source in copy_sources(dockerfile[1]["builder"]):
        assert (REPO / source).exists(), source
        assert source.split("/")[0] not in ignored_tops, source


def test_wheel_builds_with_the_container_files_command(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as wheel:
        names = wheel.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode()
    assert any(re.fullmatch(r"nanomoni/_core\.cpython-311-[^/]+\.so", n) for n in names)
    assert "nanomoni = nanomoni.cli:main" in scripts
    assert not any(n.endswith((".pyx", ".pxd", ".c")) for n in names)


def test_runtime_packages_provide_every_library_the_core_links(
    dockerfile: tuple[dict[str, str], dict[str, Stage]], built_wheel: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(built_wheel) as wheel:
        (core,) = [n for n in wheel.namelist()
                   if n.startswith("nanomoni/_core.") and n.endswith(".so")]
        wheel.extract(core, tmp_path)
    linked = subprocess.run(["ldd", str(tmp_path / core)], capture_output=True, text=True,
                            check=True).stdout
    libraries = re.findall(r"=> (/\S+)", linked)
    assert libraries, linked
    owners = {debian_package_of(library) for library in libraries}
    runtime = set(apt_installs(dockerfile[1]["runtime"]))
    assert {"libssl3", "libsodium23", "libsecp256k1-1"} <= owners
    assert owners - BASE_PACKAGES <= runtime
