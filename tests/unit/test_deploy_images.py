"""The shared container file agrees with the package build and with Debian.

Without a Docker engine the image cannot be built here, so each part of it is
checked on its own: the apt packages the builder installs exist, the files it
copies are enough to build the wheel with exactly its build command, the
runtime stage installs that wheel and no system package, and the built core
links nothing beyond the wheel's own libraries and glibc; each service stage
runs as a non-root user with a data volume and a health check on the port it
listens on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "services" / "Dockerfile"
# A fixed place (git-ignored) so the build tools' venv from the previous run is reused.
CONTEXT_COPY = REPO / "build" / "deploy-context"

# glibc: in every Debian image, and the one system library a manylinux wheel may assume here.
BASE_PACKAGES = {"libc6"}
# The core's C libraries, which the wheel must carry itself.
VENDORED = ("libcrypto", "libsodium", "libsecp256k1")


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


def runtime_wheel_install(stage: Stage) -> tuple[PurePosixPath, PurePosixPath, str]:
    """(builder folder mounted, where it is mounted, file pattern pip installs from it)."""
    (run,) = [r for r in stage.all("RUN") if "pip install" in r]
    words = shlex.split(run)
    mount = dict(pair.split("=", 1) for pair in words[0].removeprefix("--mount=").split(","))
    assert mount["type"] == "bind" and mount["from"] == "builder", run
    target = PurePosixPath(mount["target"])
    (pattern,) = [w for w in words if w.startswith(f"{target}/")]
    return PurePosixPath(mount["source"]), target, str(PurePosixPath(pattern).relative_to(target))


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
def built_wheel(dockerfile: tuple[dict[str, str], dict[str, Stage]]) -> Path:
    """The wheel the runtime stage installs, built by the builder stage's own
    command from only the files it copies."""
    _, stages = dockerfile
    builder = stages["builder"]
    if CONTEXT_COPY.exists():
        # Keep only build/ (the build tools' venv); sources are copied afresh every time.
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
    # The builder's last step builds the wheel; CONTEXT_COPY stands for its WORKDIR.
    command = builder.last("RUN")
    assert "apt-get" not in command
    # A make above this test (make test) must not hand its jobserver to this one.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    subprocess.run(command, shell=True, cwd=CONTEXT_COPY, env=env, check=True, timeout=540,
                   stdout=subprocess.DEVNULL)
    mounted, _, pattern = runtime_wheel_install(stages["runtime"])
    workdir = PurePosixPath(builder.last("WORKDIR"))
    (wheel,) = (CONTEXT_COPY / mounted.relative_to(workdir)).glob(pattern)
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


def test_every_apt_package_the_builder_installs_exists(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    # The image is Debian bookworm, like this machine, so its apt catalogue answers.
    packages = apt_installs(dockerfile[1]["builder"])
    assert packages
    shown = subprocess.run(["apt-cache", "show", *packages], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    listed = set(re.findall(r"^Package: (\S+)$", shown.stdout, re.MULTILINE))
    assert set(packages) <= listed, set(packages) - listed


def test_builder_installs_the_build_dependencies_the_project_declares(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    makefile = (REPO / "Makefile").read_text()
    declared = re.search(r"^BUILD_APT_PACKAGES\s*:=(.*)$", makefile, re.MULTILINE)
    assert declared is not None
    # Then the builder's `make wheel` finds them all installed and runs no apt itself.
    needed = set(declared.group(1).split())
    assert needed and needed <= set(apt_installs(dockerfile[1]["builder"]))


def test_runtime_stage_installs_no_system_package(
    dockerfile: tuple[dict[str, str], dict[str, Stage]],
) -> None:
    runtime = dockerfile[1]["runtime"]
    assert not any("apt-get" in run or "dpkg" in run for run in runtime.all("RUN"))
    assert apt_installs(runtime) == []


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
    assert re.fullmatch(r"nanomoni-[^-]+-cp311-cp311-manylinux_\d+_\d+_x86_64\.whl",
                        built_wheel.name)
    with zipfile.ZipFile(built_wheel) as wheel:
        names = wheel.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode()
    assert any(re.fullmatch(r"nanomoni/_core\.cpython-311-[^/]+\.so", n) for n in names)
    assert "nanomoni = nanomoni.cli:main" in scripts
    assert not any(n.endswith((".pyx", ".pxd", ".c")) for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_core_links_nothing_the_runtime_image_lacks(
    built_wheel: Path, tmp_path: Path
) -> None:
    # Unpacked as pip lays it out: the core finds nanomoni.libs/ beside it by its RPATH.
    with zipfile.ZipFile(built_wheel) as wheel:
        wheel.extractall(tmp_path)
    (core,) = tmp_path.glob("nanomoni/_core.*.so")
    linked = subprocess.run(["ldd", str(core)], capture_output=True, text=True,
                            check=True).stdout
    assert "not found" not in linked, linked
    libraries = re.findall(r"^\s*(\S+) => (/\S+)", linked, re.MULTILINE)
    assert libraries, linked
    carried = [name for name, path in libraries
               if Path(path).resolve().parent == (tmp_path / "nanomoni.libs").resolve()]
    for library in VENDORED:
        assert any(name.startswith(library + "-") for name in carried), (library, linked)
    # The runtime stage adds no package, so whatever the wheel lacks must come with the base.
    owners = {debian_package_of(path) for name, path in libraries if name not in carried}
    assert owners <= BASE_PACKAGES, linked
