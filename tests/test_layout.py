"""The rooms hold (docs/architecture.md): no import cycles among the project's modules, the
product never imports the lab (studies/), reports/ imports neither impls/ nor benchmarks/,
tracking/ imports none of benchmarks/, reports/ and studies/, and only tracking/ imports
mlflow, lazy imports included. Read from the source with ast."""
import ast
from pathlib import Path

from tests.helpers import ROOT

PRODUCT = ("impls", "benchmarks", "tracking", "reports")
LAB = ("studies",)
PACKAGES = PRODUCT + LAB


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[dotted.removesuffix(".__init__")] = path
    return out


def imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_import_cycles():
    mods = modules()
    graph = {m: {t for t in imports(p) if t in mods and t != m} for m, p in mods.items()}
    cycles = []

    def visit(start, node, path):
        for nxt in graph[node]:
            if nxt == start:
                cycles.append(" -> ".join(path + [start]))
            elif nxt not in path and nxt > start:
                visit(start, nxt, path + [nxt])
    for m in graph:
        visit(m, m, [m])
    assert cycles == []


def test_the_product_never_imports_the_lab():
    leaks = sorted(f"{m} imports {t}" for m, p in modules().items() if m.startswith(PRODUCT)
                   for t in imports(p) if t.split(".")[0] in LAB)
    assert leaks == []


def test_reports_import_neither_the_implementations_nor_the_harness():
    leaks = sorted(f"{m} imports {t}" for m, p in modules().items() if m.startswith("reports")
                   for t in imports(p) if t.split(".")[0] in ("impls", "benchmarks"))
    assert leaks == []


def test_tracking_imports_neither_the_harness_nor_the_reports_nor_the_lab():
    leaks = sorted(f"{m} imports {t}" for m, p in modules().items() if m.startswith("tracking")
                   for t in imports(p) if t.split(".")[0] in ("benchmarks", "reports", "studies"))
    assert leaks == []


def test_only_tracking_imports_mlflow():
    importers = sorted(m for m, p in modules().items()
                       if any(t == "mlflow" or t.startswith("mlflow.") for t in imports(p)))
    assert importers and all(m.startswith("tracking.") for m in importers), importers


def test_no_module_is_a_corridor():
    """300 lines at most per module of the product, the lab and the tests (docs/architecture.md)."""
    long = {str(p.relative_to(ROOT)): n for pkg in (*PACKAGES, "tests") for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
