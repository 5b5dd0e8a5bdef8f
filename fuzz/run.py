"""Runs every fuzz target (fuzz/targets/*.py) for its share of a time budget.

    python fuzz/run.py --seconds 180 --max-share 8      # what `make fuzz-ci` runs
    python fuzz/run.py --seconds 600 --keep-corpus      # `make fuzz`
    python fuzz/run.py --targets digest,sign --seconds 60
    python fuzz/run.py --targets sign --replay build/fuzz-work/sign/crash-...

Each target runs in its own process under atheris (libFuzzer), importing the
package from --package: the `make fuzz-build` copy whose native core is built
by clang with ASan + UBSan + libFuzzer coverage. Inputs start from the seeds in
fuzz/corpus/<target>/; what the fuzzer adds goes to build/fuzz-work/<target>/.
Prints, per target, the inputs executed, and exits non-zero if any target
crashed, failed an assertion or raised: the input is kept as
build/fuzz-work/<target>/crash-* and the last lines of its log are printed.

A target is one module in fuzz/targets/ with `test_one_input(data: bytes)`,
which returns normally for every input unless it found a bug; optionally
MAX_LEN (longest input to try, default 4096) and seeds() -> {name: bytes}
(written to the corpus by fuzz/seeds.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
CORPUS = FUZZ / "corpus"


def target_names() -> list[str]:
    return sorted(p.stem for p in (FUZZ / "targets").glob("*.py") if not p.stem.startswith("_"))


@dataclass
class Outcome:
    target: str
    ok: bool
    runs: int
    seconds: float
    corpus: int
    log: Path
    note: str = ""


def run_target(name: str, share: float, args: argparse.Namespace) -> Outcome:
    work = Path(args.work) / name
    found = work / "corpus"
    if not args.keep_corpus:
        shutil.rmtree(work, ignore_errors=True)
    found.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / name
    seeds.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        str(found),
        str(seeds),
        f"-max_total_time={max(int(share), 1)}",
        "-timeout=20",  # one input taking longer is a finding too
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        f"-artifact_prefix={work}/",
    ]
    started = time.monotonic()
    with log.open("w") as out:
        try:
            # Past its share plus start-up, a target is hung beyond libFuzzer's own timeout.
            done = subprocess.run(
                command,
                env=child_env(args),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=share + 120,
            )
            code, note = done.returncode, ""
        except subprocess.TimeoutExpired:
            code, note = -1, "hung: killed after its share + 120 s"
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    if code != 0 and not note:
        crashes = sorted(str(p) for p in work.glob("crash-*")) + sorted(
            str(p) for p in work.glob("timeout-*")
        )
        note = ", ".join(crashes) or f"exit code {code}"
    return Outcome(
        name,
        code == 0,
        int(runs.group(1)) if runs else 0,
        seconds,
        sum(1 for _ in found.iterdir()),
        log,
        note,
    )


FINDING = re.compile(
    r"ERROR: AddressSanitizer|runtime error:|=== Uncaught Python exception|ERROR: libFuzzer"
)


def report(log: Path) -> str:
    """The finding's own lines: from the first sanitizer or Python report on."""
    lines = log.read_text(errors="replace").splitlines()
    start = next((n for n, line in enumerate(lines) if FINDING.search(line)), len(lines) - 40)
    return "\n".join("    " + line for line in lines[max(start, 0) : start + 40])


def child_env(args: argparse.Namespace) -> dict[str, str]:
    import atheris  # the parent needs it only to find its sanitizer runtime

    preload = Path(atheris.path()) / "asan_with_fuzzer.so"
    if not preload.is_file():
        sys.exit(f"atheris has no {preload.name} (needed to fuzz a sanitized core)")
    return {
        **os.environ,
        "PYTHONPATH": str(Path(args.package).resolve()),
        "LD_PRELOAD": str(preload),
        # Python's own small-object allocator would hide its buffers from ASan.
        "PYTHONMALLOC": "malloc",
        "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1:quarantine_size_mb=64",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }


def child(name: str, libfuzzer_args: list[str]) -> None:
    """Inside the target's process: import it with coverage on nanomoni's Python, then fuzz."""
    import atheris

    with atheris.instrument_imports(include=["nanomoni"]):
        module = importlib.import_module(f"targets.{name}")
    from nanomoni import _core

    package = os.environ.get("PYTHONPATH", "")
    if not package or not _core.__file__ or not _core.__file__.startswith(package):
        sys.exit(f"fuzzing the wrong core: {_core.__file__} is not under {package!r}")
    max_len = getattr(module, "MAX_LEN", 4096)
    atheris.Setup([sys.argv[0], f"-max_len={max_len}", *libfuzzer_args], module.test_one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="total budget")
    parser.add_argument("--max-share", type=float, default=None, help="at most this per target")
    parser.add_argument("--targets", default="", help="comma-separated (default: all)")
    parser.add_argument("--package", default=str(REPO / "build" / "fuzz-pkg"))
    parser.add_argument("--work", default=str(REPO / "build" / "fuzz-work"))
    parser.add_argument(
        "--keep-corpus", action="store_true", help="keep what earlier runs found (local runs)"
    )
    parser.add_argument("--replay", help="run the one target on this input file and stop")
    args = parser.parse_args()
    if args.replay:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", args.targets]
        return subprocess.run([*command, args.replay], env=child_env(args)).returncode

    names = args.targets.split(",") if args.targets else target_names()
    unknown = set(names) - set(target_names())
    if unknown:
        parser.error(f"no such targets: {', '.join(sorted(unknown))}")
    share = args.seconds / len(names)
    if args.max_share is not None:
        share = min(share, args.max_share)
    print(f"fuzzing {len(names)} targets, {share:.0f} s each", flush=True)

    outcomes = []
    for name in names:
        outcome = run_target(name, share, args)
        outcomes.append(outcome)
        status = "ok" if outcome.ok else "FOUND A BUG"
        print(
            f"{name:22} {outcome.runs:>9} runs  {outcome.seconds:5.1f} s  "
            f"corpus +{outcome.corpus:<5} {status} {outcome.note}",
            flush=True,
        )
        if not outcome.ok:
            print(report(outcome.log), flush=True)
    failed = [o.target for o in outcomes if not o.ok]
    total = sum(o.seconds for o in outcomes)
    print(f"{sum(o.runs for o in outcomes)} runs in {total:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(main())
