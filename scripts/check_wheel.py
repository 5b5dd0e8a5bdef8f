"""Check the built wheel the way a user meets it (`make wheel-check`).

Usage: python scripts/check_wheel.py DIST_DIR PYTHON, run with the venv that
has auditwheel. The one manylinux wheel in DIST_DIR is installed, with its
`test` extra, in a fresh venv made by PYTHON; from there `nanomoni demo` runs and the core
tests run with the source tree off sys.path. Its native core must link only
libraries that the wheel carries or that its manylinux policy allows
(`auditwheel show` and `ldd` must both agree). Any failure exits non-zero.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The C libraries the core uses; each must come from inside the wheel.
VENDORED = ("libcrypto", "libsodium", "libsecp256k1")


def fail(message: str) -> None:
    sys.exit(f"wheel-check: FAIL: {message}")


def run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    start = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    print(f"wheel-check: {time.monotonic() - start:5.1f} s $", " ".join(command), flush=True)
    if done.returncode != 0:
        fail(f"{command[0]} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def the_wheel(dist: Path) -> tuple[Path, str]:
    """The manylinux wheel in dist and its platform tag, e.g. manylinux_2_34_x86_64."""
    wheels = sorted(dist.glob("nanomoni-*.whl"))
    if len(wheels) != 1:
        fail(f"expected one wheel in {dist}, found {[w.name for w in wheels]}")
    tag = wheels[0].name.removesuffix(".whl").split("-")[-1]
    if not tag.startswith("manylinux_"):
        fail(f"{wheels[0].name} is not tagged manylinux")
    return wheels[0], tag


def policy_libraries(tag: str) -> set[str]:
    """The system libraries a wheel of this manylinux tag may link (auditwheel's policy)."""
    policies = json.loads(
        resources.files("auditwheel.policy").joinpath("manylinux-policy.json").read_text())
    # manylinux_2_34_x86_64 -> policy manylinux_2_34
    name = "_".join(tag.split("_")[:3])
    for policy in policies:
        if policy["name"] == name:
            return set(policy["lib_whitelist"])
    fail(f"auditwheel knows no policy {name}")
    raise AssertionError  # unreachable: fail exits


def check_auditwheel_show(wheel: Path, tag: str) -> None:
    shown = " ".join(run([sys.executable, "-m", "auditwheel", "show", str(wheel)]).split())
    found = re.search(r'consistent with the following platform tag: "([^"]+)"', shown)
    if not found or found.group(1) != tag:
        fail(f"auditwheel show does not find {wheel.name} consistent with {tag}:\n{shown}")


def check_links(core: Path, site: Path, allowed: set[str]) -> None:
    """Every library the core loads is in the wheel (nanomoni.libs) or in the policy."""
    linked = run(["ldd", str(core)])
    if "not found" in linked:
        fail(f"the core has unresolved libraries:\n{linked}")
    vendored: list[str] = []
    for name, path in re.findall(r"^\s*(\S+) => (\S+)", linked, re.MULTILINE):
        resolved = Path(path).resolve()
        if resolved.parent == (site / "nanomoni.libs").resolve():
            vendored.append(name)
        elif name not in allowed:
            fail(f"the core links {name} ({path}), neither in the wheel nor in the policy")
    for library in VENDORED:
        if not any(v.startswith(library + "-") for v in vendored):
            fail(f"{library} is not loaded from the wheel's nanomoni.libs:\n{linked}")
    print(f"wheel-check: core links {sorted(vendored)} from the wheel, the rest from the policy")


def main() -> None:
    dist, base_python = Path(sys.argv[1]), sys.argv[2]
    wheel, tag = the_wheel(dist)
    check_auditwheel_show(wheel, tag)
    with tempfile.TemporaryDirectory(prefix="nanomoni-wheel-check-") as scratch_dir:
        scratch = Path(scratch_dir)
        venv = scratch / "venv"
        # This venv's pip installs there, which spares the new venv its own pip;
        # no byte-compiling of every installed file: the check imports few of them.
        run([base_python, "-m", "venv", "--without-pip", str(venv)])
        python = str(venv / "bin" / "python")
        run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
             f"{wheel}[test]"])
        (core,) = venv.glob("lib/python3*/site-packages/nanomoni/_core.*.so")
        check_links(core, core.parents[1], policy_libraries(tag))

        env = {**os.environ, "NANOMONI_REQUIRE_INSTALLED": "1"}
        env.pop("PYTHONPATH", None)
        # A scratch working directory: the demo's embedded store lands there.
        run([str(venv / "bin" / "nanomoni"), "demo", "--payments", "50"], cwd=scratch, env=env)
        # -P keeps the working directory (the repository) off sys.path; the
        # tests' conftest also refuses a nanomoni imported from the source tree.
        core_tests = sorted(str(t) for t in (REPO / "tests" / "unit").glob("test_core_*.py"))
        if not core_tests:
            fail("no core tests found")
        output = run([python, "-P", "-m", "pytest", "-q", *core_tests], cwd=REPO, env=env)
        summary = output.strip().splitlines()[-1]
        if "skipped" in summary:
            fail(f"core tests were skipped: {summary}")
        print("wheel-check: core tests:", summary)
    print(f"wheel-check: OK {wheel.name}")


if __name__ == "__main__":
    main()
