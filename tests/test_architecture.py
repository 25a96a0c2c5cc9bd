"""docs/architecture.md stays true to the code: its lifecycle tables are the ones statuses.py
enforces, and its module table names every module with the imports it really has."""

import ast
import re
from pathlib import Path

from nb_backfill.statuses import (
    BackfillStatus,
    RunStatus,
    StepStatus,
    backfill_change_allowed,
    run_change_allowed,
    step_change_allowed,
)

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
PACKAGE = ROOT / "nb_backfill"


def table(first_header: str) -> list[list[str]]:
    """The rows of the markdown table whose first header cell is `first_header`."""
    lines = DOC[DOC.index(f"| {first_header} |") :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def names(cell: str) -> set[str]:
    return set(re.findall(r"\b[A-Z_]{4,}\b", cell))


def test_the_run_table_is_the_enforced_lifecycle():
    rows = {row[0]: names(row[1]) for row in table("run status")}
    assert set(rows) == {s.value for s in RunStatus}
    for status in RunStatus:
        allowed = {new.value for new in RunStatus if run_change_allowed(status, 1, new, 1)}
        assert rows[status.value] == allowed, status


def test_the_step_and_backfill_tables_are_the_enforced_lifecycle():
    steps = {row[0]: names(row[1]) for row in table("step status")}
    assert set(steps) == {s.value for s in StepStatus}
    for status in StepStatus:
        assert steps[status.value] == {n.value for n in StepStatus if step_change_allowed(status, n)}, status
    backfills = {row[0]: names(row[1]) for row in table("backfill status")}
    assert set(backfills) == {s.value for s in BackfillStatus}
    for status in BackfillStatus:
        assert backfills[status.value] == {n.value for n in BackfillStatus if backfill_change_allowed(status, n)}, (
            status
        )


def _imports(path: Path) -> set[str]:
    """The package modules a file imports (executors/* counted as `executors`)."""
    found = set()
    inside_executors = path.parent.name == "executors"
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        if inside_executors and node.level == 1:
            found.add("executors")
            continue
        if node.module:
            found.add(node.module.split(".")[0])
        else:
            found.update(alias.name for alias in node.names)
    return found - {"errors"}


def test_the_module_table_names_every_module_and_its_imports():
    rows = [(set(re.findall(r"`([\w.]+)`", row[0])), set(re.findall(r"`(\w+)`", row[2]))) for row in table("module")]
    documented = set().union(*(modules for modules, _ in rows))
    files = {p.stem for p in PACKAGE.glob("*.py")} | {"executors"}
    assert files <= documented, files - documented
    for modules, allowed in rows:
        for module in modules & files:
            paths = list((PACKAGE / "executors").glob("*.py")) if module == "executors" else [PACKAGE / f"{module}.py"]
            actual = set().union(*(_imports(p) for p in paths)) - modules
            assert actual <= allowed, f"{module} imports {sorted(actual - allowed)}, which the table does not say"
