"""The package's layering, checked from the source with ``ast`` (nothing is imported).

* model code (``seq2seq/models/`` and the attention it uses) reaches only torch, itself,
  ``choices``, ``special``, ``errors`` and a few pure standard-library modules, not even
  indirectly: never training, the CLI, the vocabulary, data, run directories or config loading;
* ``seq2seq/config.py`` reaches no model code (and no torch);
* there is no import cycle inside ``seq2seq/``;
* no function is longer than 60 lines, except the Typer commands of ``cli.py`` (argument
  declarations, not logic).

Imports inside ``if TYPE_CHECKING:`` are for type annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "seq2seq"
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports_of(name: str) -> set[str]:
    """Modules (seq2seq.* and top-level third-party names) that module ``name`` imports at run
    time, anywhere in its body (function-level imports included)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return {m if m.startswith("seq2seq") else m.split(".")[0] for m in found}


def internal_edges(name: str) -> set[str]:
    return {m for m in imports_of(name) if m in MODULES and m != name}


def closure(name: str) -> set[str]:
    """Everything ``name`` reaches through imports (itself excluded), third-party included."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for m in imports_of(todo.pop()):
            if m not in seen:
                seen.add(m)
                if m in MODULES:
                    todo.append(m)
                    parent = m.rpartition(".")[0]  # importing a.b runs a/__init__.py
                    if parent in MODULES and parent not in seen:
                        seen.add(parent)
                        todo.append(parent)
    seen.discard(name)
    return seen


MODEL_MODULES = sorted(m for m in MODULES if m.startswith("seq2seq.models")) + [
    "seq2seq.attention", "seq2seq.dropout"]
# what model code may reach, directly or through others: torch, itself, and the small modules
# that name choices, special symbols and errors or hold a layer (dropout); the standard
# library's pure helpers
ALLOWED_FOR_MODELS = {"seq2seq", "seq2seq.attention", "seq2seq.choices", "seq2seq.dropout",
                      "seq2seq.special",
                      "seq2seq.errors", "torch", "__future__", "collections", "math", "typing",
                      "dataclasses", "contextlib", "functools", "itertools", "abc", "enum"}


def _allowed_for_models(module: str) -> bool:
    return (module in ALLOWED_FOR_MODELS or module.startswith(("seq2seq.models", "torch.")))


@pytest.mark.parametrize("name", MODEL_MODULES)
def test_models_reach_only_torch_and_each_other(name):
    bad = sorted(m for m in closure(name) if not _allowed_for_models(m))
    assert not bad, f"{name} imports (directly or through others) {bad}"


def test_config_imports_no_model_code():
    reached = closure("seq2seq.config")
    bad = {m for m in reached if m.startswith("seq2seq.models")} | (
        reached & {"seq2seq.attention", "seq2seq.search", "torch"})
    assert not bad, f"seq2seq.config reaches {sorted(bad)}"


def test_no_import_cycles():
    graph = {m: internal_edges(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _typer_command(node: ast.AST) -> bool:
    for d in getattr(node, "decorator_list", []):
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and target.attr == "command":
            return True
    return False


def test_functions_are_short():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if name == "seq2seq.cli" and _typer_command(node):
                continue
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n})")
    assert not long, "functions over 60 lines: " + ", ".join(long)


def test_the_checks_see_what_they_check(tmp_path, monkeypatch):
    """The import parser finds direct, relative, function-level and nested imports, and
    skips TYPE_CHECKING blocks (so the tests above cannot pass by reading nothing)."""
    src = tmp_path / "seq2seq" / "models" / "fake.py"
    src.parent.mkdir(parents=True)
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..vocab import Vocab\n"
        "from . import base\n"
        "import torch.nn\n"
        "if TYPE_CHECKING:\n    from seq2seq.run import RunDir\n"
        "def f():\n    from seq2seq import training\n"
    )
    monkeypatch.setitem(MODULES, "seq2seq.models.fake", src)
    found = imports_of("seq2seq.models.fake")
    assert {"seq2seq.vocab", "seq2seq.models.base", "torch", "seq2seq.training"} <= found
    assert "seq2seq.run" not in found
    assert "seq2seq.vocab" in closure("seq2seq.models.fake")


RUN_FILE_MARKERS = ("metrics.jsonl", "train_summary.json", "config.yaml", "eval_", "hyps_",
                    "nbest_", "ckpt_", "last.pt", "best.pt", "averaged.pt", "joint.model",
                    "src.model", "tgt.model")


def _code_strings(tree: ast.AST):
    """String constants that are code (f-string parts included), not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            yield node


def test_run_file_names_are_built_in_run_py_only():
    """metrics.jsonl, checkpoints and evaluation files are named (and so parsed and written)
    by seq2seq/run.py alone; messages and help texts may mention them."""
    sources = [p for p in MODULES.values() if p.name != "run.py"]
    sources += sorted((PKG.parent / "scripts").glob("*.py"))
    found = []
    for path in sources:
        for node in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
            text = node.value
            if " " in text.strip():  # a message or help text, not a file name
                continue
            if any(text.startswith(m) or text.endswith(m) for m in RUN_FILE_MARKERS):
                found.append(f"{path.name}:{node.lineno} {text!r}")
    assert not found, "run file names built outside run.py: " + ", ".join(found)
