"""The commands shown in README.md (and in docs/*.md) keep working.

Every ```bash block is read as a shell user would type it: `\\` continuations joined, `# ...`
comments dropped, `&&` chains split into commands. The rule for a command:

1. `pip ...` and `python -m pytest ...` are not run (they change the environment, or are this
   suite itself); the README must keep its two commands at the top and CI (.ci/run) must run the
   README's test command.
2. `python <file>.py ARGS`: the file must exist, and ARGS must parse with the script's own parser
   (`build_parser()`, or `parse_args(argv)` for benchmarks/*.py) -- nothing runs, so this holds for
   every command, also the ones that train for minutes or read `../shared/` datasets. The runner
   export.py writes beside an export (`exports/<stem>_runner.py`, `<folder>/runner.py`) does not
   exist before an export is made: its ARGS must parse with processing/workflow/export_runner.py's parser.
3. README commands are also *run*, in the order shown and in one temporary working folder, when
   they are cheap: `--help`, the dataset generators (`scripts/make_demo_dataset.py`,
   `scripts/make_digits_dataset.py`) and `benchmark.py --quick` (a 32 px, 2-epoch smoke run on a
   dataset an earlier command generated). A command is never run when it mentions `../shared/`
   (datasets outside the repository) or a `<placeholder>` (a folder only an earlier training creates,
   such as `<timestamp>`); train.py, finetune.py, test.py, demo.py, benchmark.py without `--quick`
   and scripts/split.py (needs your class folders) are parse-only.
4. `curl ...`: a request to serve.py (docs/predict.md); never run (it needs a running service), but its
   URL must be one of serve.py's endpoints on 127.0.0.1 (`SERVE_ENDPOINTS`).
5. Any other kind of command fails this test until a rule for it is added here.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
TOP_COMMANDS = ["pip install -r requirements.txt && python demo.py", "python -m pytest -n 2 -q"]
CHEAP_SCRIPTS = {"scripts/make_demo_dataset.py", "scripts/make_digits_dataset.py"}
RUN_TIMEOUT_S = 300
SERVE_ENDPOINTS = ("/predict", "/health", "/model")  # processing/workflow/serve/app.py


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.M | re.S)


def commands(path: Path) -> list[list[str]]:
    """Every command of the file's bash blocks, as argument lists."""
    found = []
    for block in bash_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens:
                cut = tokens.index("&&") if "&&" in tokens else len(tokens)
                found.append(tokens[:cut])
                tokens = tokens[cut + 1:]
    return [command for command in found if command]


def kind(command: list[str]) -> str:
    if command[0] == "pip":
        return "environment"
    if command[:3] == ["python", "-m", "pytest"]:
        return "suite"
    if command[0] == "python" and len(command) > 1 and command[1].endswith(".py"):
        return "script"
    if command[0] == "curl":
        return "http"
    return "unknown"


def cheap(command: list[str]) -> bool:
    """Rule 3: run for real (README commands only)."""
    if kind(command) != "script" or any("../shared" in token or re.search(r"<[^>]+>", token) for token in command):
        return False
    script, args = command[1], command[2:]
    return bool({"-h", "--help"} & set(args)) or script in CHEAP_SCRIPTS or (script == "benchmark.py" and "--quick" in args)


def load(script: str):
    name = "_readme_" + re.sub(r"\W", "_", script)
    spec = importlib.util.spec_from_file_location(name, ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ALL = [(path.relative_to(ROOT).as_posix(), command) for path in [README, *DOCS] for command in commands(path)]


def test_readme_starts_with_the_two_commands_and_ci_runs_its_test_command():
    first = [line.split("#")[0].strip() for line in bash_blocks(README)[0].splitlines() if line.strip()]
    assert first == TOP_COMMANDS
    assert TOP_COMMANDS[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_command_has_a_rule():
    unknown = [f"{where}: {shlex.join(command)}" for where, command in ALL if kind(command) == "unknown"]
    assert not unknown, "no rule in tests/test_readme.py for:\n" + "\n".join(unknown)
    assert any(cheap(command) for command in commands(README)), "the README should show at least one command this test runs"


@pytest.mark.parametrize(
    "where, command",
    [(where, command) for where, command in ALL if kind(command) == "script"],
    ids=[f"{where}:{shlex.join(command[1:])[:60]}" for where, command in ALL if kind(command) == "script"],
)
def test_script_command_parses(where, command):
    script, args = command[1], command[2:]
    if script.startswith("exports/") and (script.endswith("_runner.py") or script.endswith("/runner.py")):
        script = "processing/workflow/export_runner.py"  # written by export.py beside the export
    assert (ROOT / script).is_file(), f"{where}: {script} does not exist"
    if {"-h", "--help"} & set(args):
        return  # --help exits; it is run for real in test_cheap_readme_commands_run
    module = load(script)
    if hasattr(module, "build_parser"):
        parse = module.build_parser().parse_args
    elif hasattr(module, "parse_args"):
        parse = module.parse_args
    else:
        return  # benchmarks/bench_*.py build their parser inside main(): existence only
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed = parse(args)
    except SystemExit:
        pytest.fail(f"{where}: `{shlex.join(command)}` does not parse: {errors.getvalue().strip()}")
    assert isinstance(parsed, argparse.Namespace)


def test_curl_commands_call_serve_py_endpoints():
    """Rule 4: every curl command requests an endpoint of serve.py on 127.0.0.1."""
    calls = [(where, command) for where, command in ALL if kind(command) == "http"]
    for where, command in calls:
        urls = [token for token in command if token.startswith("http://")]
        assert len(urls) == 1, f"{where}: `{shlex.join(command)}` should name one URL"
        match = re.match(r"http://127\.0\.0\.1:\d+(/[a-z]*)(\?.*)?$", urls[0])
        assert match and match.group(1) in SERVE_ENDPOINTS, f"{where}: {urls[0]} is not an endpoint of serve.py"


def test_cheap_readme_commands_run(tmp_path):
    """Rule 3, in README order, in one working folder (generated datasets feed later commands)."""
    ran = []
    for command in commands(README):
        if not cheap(command):
            continue
        argv = [sys.executable, str(ROOT / command[1]), *command[2:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"`{shlex.join(command)}` failed ({done.returncode}):\n{output[-3000:]}"
        if {"-h", "--help"} & set(command):
            assert done.stdout.startswith("usage:"), done.stdout[:200]
        if command[1] == "benchmark.py":
            last = done.stdout.strip().splitlines()[-1]
            assert last.startswith("image_auroc=") and not re.search(r"\bnan\b", done.stdout), done.stdout[-2000:]
        ran.append(shlex.join(command))
    assert any("--help" in command for command in ran) and any("benchmark.py" in command for command in ran), ran


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = heading.strip().lower()
    return "".join(char for char in text if char.isalnum() or char in "-_ ").replace(" ", "-")


def test_links_between_the_pages_resolve():
    broken = []
    for page in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
                continue
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", linked.read_text(), flags=re.M | re.S), flags=re.M)
                if anchor not in {github_anchor(heading) for heading in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
