"""Write docs/cli.md, every flag of every script, from the scripts' own argparse parsers.

Each script exposes build_parser(); this imports the script (which runs nothing) and renders its
parser, so the page cannot drift from the code. tests/test_cli_docs.py fails when docs/cli.md is
not what this script writes.

    python scripts/make_cli_docs.py            # rewrite docs/cli.md
    python scripts/make_cli_docs.py --check    # exit 1 when docs/cli.md is stale
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OUTPUT = Path("docs/cli.md")
COMMAND = "python scripts/make_cli_docs.py"
# The scripts documented, in the order of the page (paths relative to the repository root).
SCRIPTS = [
    "train.py",
    "finetune.py",
    "test.py",
    "predict.py",
    "add_good.py",
    "export.py",
    "serve.py",
    "benchmark.py",
    "demo.py",
    "scripts/make_demo_dataset.py",
    "scripts/make_digits_dataset.py",
    "scripts/make_highres_dataset.py",
    "scripts/make_color_dataset.py",
    "scripts/split.py",
]


def build_parser_of(script: str) -> argparse.ArgumentParser:
    """The parser of `script` (relative to the repository root), from its build_parser()."""
    path = REPO_ROOT / script
    name = "_cli_docs_" + script.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "build_parser"):
        raise SystemExit(f"error: {script} has no build_parser(): expose the ArgumentParser that parse_args uses")
    parser = module.build_parser()
    parser.prog = f"python {script}"
    return parser


def metavar(action: argparse.Action) -> str:
    """The value part of a flag, e.g. `PATH`, `[SIGMA ...]`, `K [K ...]` (empty for switches)."""
    if action.nargs == 0:
        return ""
    name = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    if isinstance(name, tuple):
        name = " ".join(name)
    if action.nargs == "?":
        return f"[{name}]"
    if action.nargs == "*":
        return f"[{name} ...]"
    if action.nargs == "+":
        return f"{name} [{name} ...]"
    if isinstance(action.nargs, int):
        return " ".join([name] * action.nargs)
    return name


def help_text(action: argparse.Action, prog: str) -> str:
    """The help string with argparse's %(...)s expanded, as `--help` prints it."""
    text = action.help or ""
    if "%" in text:
        params = {key: value for key, value in vars(action).items() if value is not argparse.SUPPRESS}
        params["prog"] = prog
        for key, value in list(params.items()):
            if hasattr(value, "__name__"):
                params[key] = value.__name__
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    return " ".join(text.split())


def value_text(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "switch"
    if action.choices is not None:
        values = " \\| ".join(f"`{choice}`" for choice in action.choices)
        return values if action.nargs in (None, "?") else f"some of {values}"
    kind = getattr(action.type, "__name__", None) if action.type is not None else "str"
    kind = {"Path": "path", "str": "text", "int": "integer", "float": "number"}.get(kind, kind or "text")
    return kind if action.nargs in (None, "?") else f"{kind}s"


def default_text(action: argparse.Action) -> str:
    if action.required:
        return "**required**"
    if action.nargs == 0:
        return "off" if action.default in (False, None) else f"`{action.default}`"
    default = action.default
    if default is None or default is argparse.SUPPRESS:
        return "—"
    if isinstance(default, (list, tuple)):
        return "`" + " ".join(str(value) for value in default) + "`" if default else "none"
    return f"`{default}`"


def cell(text: str) -> str:
    """Text for a table cell: `|` escaped, `<...>` placeholders kept visible (not taken for HTML)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def wrap_usage(prog: str, parts: list[str], width: int = 100) -> list[str]:
    """The usage line wrapped between flags (never inside one), continuation lines indented."""
    lines, line = [], prog
    for part in parts:
        if len(line) + 1 + len(part) > width and line.strip():
            lines.append(line)
            line = " " * 4 + part
        else:
            line += " " + part
    return lines + [line]


def render_parser(script: str, parser: argparse.ArgumentParser) -> str:
    actions = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    description = (parser.description or "").strip("\n")
    summary = description.strip().split("\n\n")[0].replace("\n", " ")
    usage_parts = []
    for action in actions:
        flag = action.option_strings[0] if action.option_strings else ""
        part = " ".join(piece for piece in (flag, metavar(action)) if piece)
        usage_parts.append(part if action.required or not action.option_strings else f"[{part}]")
    lines = [
        f"## `{script}`",
        "",
        summary,
        "",
        "```text",
        *wrap_usage(parser.prog, usage_parts),
        "```",
        "",
    ]
    rest = description.strip().split("\n\n")[1:]
    if rest:
        lines += ["```text", *"\n\n".join(rest).splitlines(), "```", ""]
    lines += ["| flag | value | default | meaning |", "|---|---|---|---|"]
    for action in actions:
        flags = ", ".join(f"`{option}`" for option in action.option_strings) or f"`{action.dest}`"
        shown = metavar(action)
        if shown:
            flags += f" `{shown}`"
        lines.append(
            f"| {flags} | {value_text(action)} | {default_text(action)} | {cell(help_text(action, parser.prog))} |"
        )
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole of docs/cli.md."""
    parts = [
        "# Command-line reference",
        "",
        f"Generated from the scripts' argparse parsers by `{COMMAND}`; do not edit by hand "
        "(tests/test_cli_docs.py fails when this page is stale). Every script also prints this with `--help`, "
        "and every script stops bad input with a one-line `error: ...` and exit code 2.",
        "",
        *[f"- [`{script}`](#{anchor(script)})" for script in SCRIPTS],
        "",
    ]
    for script in SCRIPTS:
        parts.append(render_parser(script, build_parser_of(script)))
    return "\n".join(parts).rstrip("\n") + "\n"


def anchor(script: str) -> str:
    """GitHub's anchor of a `## \\`script\\`` heading."""
    return "".join(char for char in script.lower() if char.isalnum() or char in "-_ ").replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when docs/cli.md is stale")
    parser.add_argument("-o", "--output", type=Path, default=REPO_ROOT / OUTPUT, help="where the page is written")
    args = parser.parse_args(argv)
    text = render()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: regenerate it with `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.output)
    shown = args.output.resolve().relative_to(REPO_ROOT) if args.output.resolve().is_relative_to(REPO_ROOT) else args.output
    print(f"{shown}: {len(SCRIPTS)} scripts" + (" (unchanged)" if current == text else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
