"""benchmarks/gpu_suite.sh runs where device time is scarce and cannot be tried first: every command in it must
name a script that exists and only arguments that script accepts. Checked by handing each command's arguments
to the script's own parser (and stopping there), and by finding the CUDA-only tests its pytest step selects."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"

# Runs each command's script up to its parse_args, which parses strictly (an unknown argument is an error,
# as it is for the script) and then stops it; prints what became of each.
PARSE_ONLY = """
import argparse, json, runpy, sys

class Parsed(Exception):
    pass

def parse_args(self, args=None, namespace=None):
    namespace, extra = self.parse_known_args(args, namespace)
    if extra:
        self.error("unrecognized arguments: " + " ".join(extra))
    raise Parsed

argparse.ArgumentParser.parse_args = parse_args
outcomes = []
for argv in json.loads(sys.argv[1]):
    module = argv[0] == "-m"
    sys.argv = [argv[1], *argv[2:]] if module else list(argv)
    try:
        if module:
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
        outcomes.append("ran without parsing arguments")
    except Parsed:
        outcomes.append("parsed")
    except SystemExit as e:
        outcomes.append(f"refused (exit {e.code})")
print(json.dumps(outcomes))
"""


def suite_commands() -> list[list[str]]:
    """The command of every `step FILE NAME COMMAND...` line, continuation lines joined, `timeout N` dropped."""
    commands = []
    for line in SUITE.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("step "):
            words = shlex.split(line)[3:]
            if words[0] == "timeout":
                words = words[2:]
            commands.append(words)
    return commands


def test_every_script_the_gpu_suite_runs_accepts_the_arguments_it_is_given():
    commands = suite_commands()
    assert all(command[0] == "python3" for command in commands), commands
    scripts = [command[1:] for command in commands if command[1:3] != ["-m", "pytest"]]
    assert len(scripts) >= 10  # the suite's benchmarks and checkpoint builds
    for argv in scripts:
        assert argv[0] == "-m" or (ROOT / argv[0]).is_file(), argv
    done = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY, json.dumps(scripts)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    results = zip(scripts, outcomes, strict=True)
    refused = [(" ".join(argv), outcome) for argv, outcome in results if outcome != "parsed"]
    assert not refused, (refused, done.stderr[-3000:])


def test_the_gpu_suites_test_step_selects_cuda_only_tests_in_every_file_it_names():
    [pytest_step] = [command for command in suite_commands() if command[1:3] == ["-m", "pytest"]]
    keyword = pytest_step[pytest_step.index("-k") + 1]
    files = [word for word in pytest_step if word.endswith(".py")]
    assert keyword == "on_cuda" and len(files) >= 4
    for name in files:
        assert f"def test_{keyword}" in (ROOT / name).read_text(), name
