"""What CI and a newcomer meet: the learning tests' pass rate over seeds, and the README's commands on a fresh clone.

    python benchmarks/ci.py learning [--seeds 0 1 2 3 4] [-k EXPR]   # each learning test once per seed
    python benchmarks/ci.py fresh-clone                     # the README's two commands in a fresh clone of HEAD

`learning` runs `pytest -m learning --learning-seed S` once per seed, each in its own process with
CI's settings, and counts per test how many runs passed: a learning test that fails in some runs
blocks whoever draws them. `fresh-clone` clones the committed HEAD into a new directory, takes the
README's first two bash blocks (the main job, then the tests) and runs each verbatim with bash,
outside any virtual environment, timing both. Both save their figures into benchmarks/results/ci.json
(`learning_tests`: test -> "passes/runs"; `test_seconds`, `fresh_clone_passed`), keeping the other's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ci.json"


def save(figures: dict) -> dict:
    """Merge `figures` into ci.json, one level deep (a dict's entries replace those of the same name, the
    others stay); returns the whole file's contents."""
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key, value in figures.items():
        merged = isinstance(value, dict) and isinstance(current.get(key), dict)
        current[key] = {**current[key], **value} if merged else value
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(current, indent=2) + "\n")
    return current


def outcomes(junit: Path) -> dict[str, tuple[bool, str, dict[str, str]]]:
    """test id -> (passed, first line of the failure, figures it recorded) from a pytest JUnit XML report."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        if any(child.tag == "skipped" for child in case):
            continue
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        problem = next((child for child in case if child.tag in ("failure", "error")), None)
        message = "" if problem is None else ((problem.get("message") or "").splitlines() or [""])[0][:300]
        figures = {p.get("name"): p.get("value") for p in case.iter("property")}
        result[name] = (problem is None, message, figures)
    return result


def learning(seeds: list[int], select: str | None) -> dict:
    """Run the learning tests (those `select` names, as pytest -k) once per seed; passes per test.

    Tests run here replace their earlier entries in ci.json; the others keep theirs."""
    runs: dict[str, dict[int, dict]] = defaultdict(dict)  # test -> seed -> passed, failure message, figures
    seconds = []
    work = Path(tempfile.mkdtemp(prefix="ript-learning-tests-"))
    command = [sys.executable, "-m", "pytest", "-m", "learning", "-p", "no:cacheprovider", "-q"]
    command += ["-o", "junit_family=xunit1", *(["-k", select] if select else [])]  # xunit1 keeps the figures
    for seed in seeds:
        junit = work / f"seed{seed}.xml"
        start = time.monotonic()
        subprocess.run([*command, f"--learning-seed={seed}", f"--junitxml={junit}"], cwd=ROOT, check=False)
        seconds.append(round(time.monotonic() - start, 1))
        for test, (passed, message, recorded) in outcomes(junit).items():
            runs[test][seed] = {"passed": passed, "message": message, **recorded}
        tally = {test.split("::")[-1]: sum(r["passed"] for r in per.values()) for test, per in runs.items()}
        print(f"seed {seed}: {seconds[-1]:.0f} s; passes so far {tally}", flush=True)
    counts = {test: f"{sum(r['passed'] for r in per.values())}/{len(per)}" for test, per in runs.items()}
    return save(
        {
            "learning_tests": counts,
            "learning_test_runs": dict(runs),
            "learning_test_seconds": {select or "all": seconds},
        }
    )


def readme_commands(readme: str) -> tuple[str, str]:
    """The README's first two bash blocks: the main job's command and the test command."""
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    if len(blocks) < 2:
        raise SystemExit("the README shows fewer than two bash blocks: where are its two commands?")
    return blocks[0].strip(), blocks[1].strip()


def fresh_clone() -> dict:
    """Clone HEAD into a new directory and run the README's two commands there, verbatim; time them."""
    if subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip():
        print("note: uncommitted changes are not in the clone; it tests the committed HEAD", file=sys.stderr)
    clone = Path(tempfile.mkdtemp(prefix="ript-fresh-clone-")) / "ript-robot"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    main_job, tests = readme_commands((clone / "README.md").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    figures: dict = {"fresh_clone_commit": head}
    for key, command in (("main_job", main_job), ("test", tests)):
        print(f"$ {command}", flush=True)
        start = time.monotonic()
        code = subprocess.run(["bash", "-c", command], cwd=clone, env=env, check=False).returncode
        figures[f"{key}_seconds"] = round(time.monotonic() - start, 1)
        figures[f"{key}_exit_code"] = code
        print(f"exit {code} after {figures[f'{key}_seconds']:.0f} s", flush=True)
    figures["fresh_clone_passed"] = figures["main_job_exit_code"] == 0 and figures["test_exit_code"] == 0
    return save(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    learning_parser = sub.add_parser("learning", help="each learning test once per seed")
    learning_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    learning_parser.add_argument("-k", dest="select", help="only the learning tests this pytest -k expression names")
    sub.add_parser("fresh-clone", help="the README's two commands in a fresh clone of HEAD")
    args = parser.parse_args()
    figures = learning(args.seeds, args.select) if args.what == "learning" else fresh_clone()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
