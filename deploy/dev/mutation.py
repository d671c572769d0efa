"""Mutation testing of the trust-critical modules (mutmut), with a kill-rate report per module.

    .venv/bin/python deploy/dev/mutation.py                 # every module in [tool.mutmut] only_mutate
    .venv/bin/python deploy/dev/mutation.py --changed       # only those the last commit touched (CI)
    .venv/bin/python deploy/dev/mutation.py --modules edge_sdk/protocol/codec.py

mutmut copies the sources into `mutants/`, makes every small change it knows (operators, numbers,
names, arguments, string literals) one at a time and runs the tests that reach the changed
function; a change no test notices "survives". Survivors that only alter the text of an error
or log message are counted apart ("message text": the behaviour a peer sees is the reason code,
not the sentence); every other survivor is a missing test or an equivalent mutant, and is listed
with its diff in `out/mutation/survivors.md`. A survivor reviewed as equivalent (it cannot change
behaviour) is listed in `deploy/dev/equivalent_mutants/<module>.toml` with its changed lines and the
reason; it counts as equivalent only while both its name and its change still match.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import json
import re
import subprocess
import sys
import time
import tokenize
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MESSAGE_LINE = re.compile(r"Error\(|raise |event\(|log\.|warn|print\(|help=")
DONE = {"killed", "timeout", "caught by type check", "segfault"}
EQUIVALENTS = ROOT / "deploy" / "dev" / "equivalent_mutants"


def equivalents() -> dict[str, tuple[list[str], str]]:
    """Reviewed equivalent mutants: name -> (changed lines, why)."""
    found = {}
    for path in sorted(EQUIVALENTS.glob("*.toml")):
        for entry in tomllib.loads(path.read_text()).get("equivalent", []):
            found[entry["mutant"]] = (entry["change"], entry["why"])
    return found


def configured_modules() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]


def changed_functions(base: str, modules: list[str]) -> dict[str, list[str]]:
    """For each configured module the diff against `base` touches: mutmut name patterns of the
    functions and methods whose lines changed (the whole module if a change is outside them)."""
    out = {}
    for module in modules:
        diff = subprocess.run(["git", "diff", "-U0", base, "--", module], cwd=ROOT, capture_output=True, text=True)
        if diff.returncode != 0:
            print(f"mutation: cannot diff against {base} ({diff.stderr.strip()[:200]}); nothing to do")
            return {}
        lines = set()
        for start, count in re.findall(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", diff.stdout, re.M):
            lines.update(range(int(start), int(start) + max(1, int(count or 1))))
        if lines and (ROOT / module).exists():
            out[module] = _patterns(module, lines)
    return out


def _patterns(module: str, lines: set[int]) -> list[str]:
    prefix = module.removesuffix(".py").replace("/", ".")
    tree = ast.parse((ROOT / module).read_text())
    found, covered = [], set()
    for node in tree.body:
        members = [(None, node)] if isinstance(node, ast.FunctionDef) else []
        if isinstance(node, ast.ClassDef):
            members = [(node.name, m) for m in node.body if isinstance(m, ast.FunctionDef)]
        for owner, fn in members:
            span = set(range(fn.lineno, fn.end_lineno + 1))
            covered |= span
            if span & lines:
                name = f"x_{fn.name}" if owner is None else f"xǁ{owner}ǁ{fn.name}"
                found.append(f"{prefix}.{name}__mutmut_*")
    return [f"{prefix}.*"] if lines - covered else found


def run_mutmut(modules: list[str], children: int, names: list[str] | None = None) -> float:
    names = names or [m.removesuffix(".py").replace("/", ".") + ".*" for m in modules]
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *names], cwd=ROOT,
                   stdout=subprocess.DEVNULL, check=True)  # fmt: skip
    return time.monotonic() - start


def _status(code) -> str:
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[code]


def _functions(path: Path) -> dict[str, str]:
    """Source of each top-level function or method in a mutmut output file, by name (parsed, so a
    signature spread over several lines is part of its function)."""
    text = path.read_text()
    lines, out = text.splitlines(keepends=True), {}
    for node in ast.parse(text).body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        for fn in members:
            if isinstance(fn, ast.FunctionDef) and fn.name.startswith("x"):
                out[fn.name] = "".join(lines[fn.lineno - 1 : fn.end_lineno])
    return out


def _without_strings(source: str) -> list[str]:
    try:
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        return [("S" if t.type == tokenize.STRING else t.string) for t in tokens if t.type != tokenize.COMMENT]
    except (tokenize.TokenError, IndentationError):
        return [source]


def classify(module: str, key: str, functions: dict[str, str]) -> tuple[bool, str, list[str]]:
    """(message text only?, diff, changed lines) of a surviving mutant against the original function."""
    name = key.rsplit(".", 1)[1]
    base = name.split("__mutmut_")[0]
    original = functions.get(base + "__mutmut_orig", "")
    mutant = functions.get(name, "")
    original = original.replace(base + "__mutmut_orig", base)
    mutant = mutant.replace(name, base)
    diff = "\n".join(difflib.unified_diff(original.splitlines(), mutant.splitlines(), module, module, lineterm="", n=1))
    changed = [line[1:] for line in diff.splitlines()[2:] if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    strings_only = _without_strings(original) == _without_strings(mutant)
    marked = [line for line in diff.splitlines()[2:] if line[:1] in "+-"]
    return strings_only and all(MESSAGE_LINE.search(line) for line in changed), diff, marked


def report(modules: list[str], out: Path, seconds: float) -> dict:
    rows, survivors, reviewed = {}, [], equivalents()
    for module in modules:
        meta = ROOT / "mutants" / (module + ".meta")
        if not meta.exists():
            rows[module] = None
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        functions = _functions(ROOT / "mutants" / module)
        counts = Counter()
        for key, code in sorted(codes.items()):
            status = _status(code)
            if status in DONE or status == "not checked":
                counts["killed" if status in DONE else status] += 1
                continue
            message, diff, change = classify(module, key, functions)
            equivalent = key in reviewed and reviewed[key][0] == change
            counts["message text" if message else "equivalent" if equivalent else status] += 1
            if not message and not equivalent:
                survivors.append((module, key, status, diff))
        counts["total"] = len(codes)
        rows[module] = counts
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "| module | mutants | killed | message text | equivalent | survived | no tests | not run | kill rate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    totals = Counter()
    for module, c in rows.items():
        if c is None:
            lines.append(f"| {module} | (not run) | | | | | | | |")
            continue
        totals.update(c)
        lines.append(_row(module, c))
    lines.append(_row("**all**", totals))
    table = "\n".join(lines)
    (out / "report.md").write_text(f"# Mutation testing ({seconds:.0f} s)\n\n{table}\n")
    with (out / "survivors.md").open("w") as f:
        for _module, key, status, diff in survivors:
            f.write(f"## {key} ({status})\n\n```diff\n{diff}\n```\n\n")
    with (out / "survivors.toml").open("w") as f:  # entries to copy into equivalent_mutants/ once reviewed
        for _module, key, _, diff in survivors:
            change = [line for line in diff.splitlines()[2:] if line[:1] in "+-"]
            f.write(f"[[equivalent]]\nmutant = {json.dumps(key, ensure_ascii=False)}\n")
            f.write(f'change = {json.dumps(change, ensure_ascii=False)}\nwhy = ""\n\n')
    print(table)
    print(f"mutation: {seconds:.0f} s; survivors with diffs in {out / 'survivors.md'}")
    return {"totals": totals, "rows": rows}


def kill_rate(c: Counter) -> float:
    """Killed over the mutants that were run and could change behaviour (message text and reviewed
    equivalents left out); survivors and mutants no test reaches count against it."""
    judged = c["total"] - c["message text"] - c["equivalent"] - c["not checked"]
    return 100.0 * c["killed"] / judged if judged else 100.0


def _row(name: str, c: Counter) -> str:
    return (f"| {name} | {c['total']} | {c['killed']} | {c['message text']} | {c['equivalent']} | "
            f"{c['survived']} | {c['no tests']} | {c['not checked']} | {_rate(c)} |")  # fmt: skip


def _rate(c: Counter) -> str:
    return f"{kill_rate(c):.1f}%" if c["total"] > c["not checked"] else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="*", help="files to mutate (default: pyproject's only_mutate)")
    parser.add_argument("--changed", nargs="?", const="HEAD~1", metavar="BASE",
                        help="only functions of configured modules changed since BASE (default HEAD~1)")  # fmt: skip
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--min-rate", type=float, default=0.0, help="exit 1 if the overall kill rate is lower")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "mutation")
    parser.add_argument("--report-only", action="store_true", help="report on the results in mutants/ (no run)")
    args = parser.parse_args()
    modules, names = args.modules or configured_modules(), None
    if args.changed:
        patterns = changed_functions(args.changed, modules)
        modules, names = list(patterns), [p for found in patterns.values() for p in found]
    if not modules or names == []:
        print("mutation: the change touches no function of a trust-critical module")
        return 0
    print(f"mutation: {len(modules)} module(s): {' '.join(names or modules)}", flush=True)
    seconds = 0.0 if args.report_only else run_mutmut(modules, args.max_children, names)
    totals = report(modules, args.out, seconds)["totals"]
    return 1 if kill_rate(totals) < args.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())
