"""docs/cli.md is generated from the scripts' argparse parsers (scripts/make_cli_docs.py) and must
not go stale: this fails, naming the command that regenerates it, when a flag changes."""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("_make_cli_docs", ROOT / "scripts" / "make_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_md_is_up_to_date():
    generator = load_generator()
    expected = generator.render()
    path = ROOT / generator.OUTPUT
    current = path.read_text() if path.exists() else ""
    if current != expected:
        diff = list(difflib.unified_diff(current.splitlines(), expected.splitlines(), "docs/cli.md", "generated", lineterm="", n=1))
        pytest.fail(
            f"docs/cli.md is stale: regenerate it with `{generator.COMMAND}` and commit it.\n" + "\n".join(diff[:40]),
            pytrace=False,
        )


def test_every_script_with_a_command_line_is_documented():
    generator = load_generator()
    candidates = [*ROOT.glob("*.py"), *(ROOT / "scripts").glob("*.py")]
    with_parser = sorted(
        str(path.relative_to(ROOT)) for path in candidates if re.search(r"^def parse_args\(", path.read_text(), flags=re.M)
    )
    assert with_parser and set(with_parser) <= set(generator.SCRIPTS), "add the script to SCRIPTS in scripts/make_cli_docs.py"
    for script in generator.SCRIPTS:
        assert re.search(r"^def build_parser\(", (ROOT / script).read_text(), flags=re.M), f"{script}: expose build_parser()"


def test_every_flag_is_in_the_page():
    generator = load_generator()
    text = (ROOT / generator.OUTPUT).read_text()
    for script in generator.SCRIPTS:
        parser = generator.build_parser_of(script)
        section = text.split(f"## `{script}`", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in section, (script, option)


def test_check_mode_reports_a_stale_page(tmp_path, capsys):
    generator = load_generator()
    stale = tmp_path / "cli.md"
    stale.write_text("# old\n")
    assert generator.main(["--check", "-o", str(stale)]) == 1
    assert "python scripts/make_cli_docs.py" in capsys.readouterr().err
    assert generator.main(["-o", str(stale)]) == 0
    assert generator.main(["--check", "-o", str(stale)]) == 0
