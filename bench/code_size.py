"""Sizes of the code: the largest modules, the largest functions, and who imports whom.

    python -m bench.code_size [--top N] [--json]

Reads the packages' source with ``ast`` (nothing is imported): lines per module,
lines per function or method (``def`` to its last line, decorators excluded, nested
functions counted inside their parent and on their own), and the imports between
the top-level packages (module level and inside functions alike), so that a layering
can be checked by eye before import-linter checks it for good.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The product's packages (whichever exist in this checkout).
PACKAGES = ("scorefleet", "lambda_enqueue", "workers", "tasks")


@dataclass(frozen=True)
class Size:
    name: str
    lines: int


def modules(repo: Path = REPO) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        root = repo / package
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(repo).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


def _functions(tree: ast.AST, module: str) -> list[Size]:
    out: list[Size] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = int(child.end_lineno or child.lineno) - child.lineno + 1
                out.append(Size(f"{module}:{prefix}{child.name}", lines))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
    return names


def measure(repo: Path = REPO) -> dict[str, object]:
    mods = modules(repo)
    module_sizes: list[Size] = []
    function_sizes: list[Size] = []
    edges: Counter[str] = Counter()
    for name, path in mods.items():
        text = path.read_text(encoding="utf-8")
        module_sizes.append(Size(name, len(text.splitlines())))
        tree = ast.parse(text, str(path))
        function_sizes += _functions(tree, name)
        top = name.split(".")[0]
        for imported in _imported(tree, name, path.name == "__init__.py"):
            other = imported.split(".")[0]
            if other in PACKAGES and other != top:
                edges[f"{top} -> {other}"] += 1
    module_sizes.sort(key=lambda s: (-s.lines, s.name))
    function_sizes.sort(key=lambda s: (-s.lines, s.name))
    return {
        "modules": module_sizes,
        "functions": function_sizes,
        "package_lines": {
            p: sum(s.lines for s in module_sizes if s.name.split(".")[0] == p)
            for p in PACKAGES
            if (repo / p).is_dir()
        },
        "imports_between_packages": dict(sorted(edges.items())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.code_size", description=__doc__)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repo", type=Path, default=REPO)
    args = ap.parse_args(argv)
    m = measure(args.repo)
    mods: list[Size] = m["modules"]  # type: ignore[assignment]
    funcs: list[Size] = m["functions"]  # type: ignore[assignment]
    if args.json:
        out = {
            **m,
            "modules": [asdict(s) for s in mods[: args.top]],
            "functions": [asdict(s) for s in funcs[: args.top]],
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(mods)} modules, {sum(s.lines for s in mods)} lines; {len(funcs)} functions")
    print(f"modules over 500 lines: {sum(s.lines > 500 for s in mods)}")
    print(f"functions over 60 lines: {sum(s.lines > 60 for s in funcs)}")
    print("\nlines per package:")
    for package, lines in m["package_lines"].items():  # type: ignore[attr-defined]
        print(f"  {package:16} {lines:6}")
    print(f"\nlargest modules (top {args.top}):")
    for s in mods[: args.top]:
        print(f"  {s.lines:6}  {s.name}")
    print(f"\nlargest functions (top {args.top}):")
    for s in funcs[: args.top]:
        print(f"  {s.lines:6}  {s.name}")
    print("\nimports between packages (import statements, anywhere in a module):")
    for edge, n in m["imports_between_packages"].items():  # type: ignore[attr-defined]
        print(f"  {edge:32} {n:4}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
