"""The package installs on its own: no Dagster, and CI runs exactly the README's test command."""

import functools
import operator
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).parent.parent


def test_dagster_is_never_a_dependency_nor_imported():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every_requirement = project["dependencies"] + functools.reduce(
        operator.iadd, project["optional-dependencies"].values(), []
    )
    assert not [r for r in every_requirement if "dagster" in r.lower()]
    code = "import sys, nb_backfill; print(sorted(m for m in sys.modules if 'dagster' in m))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) == 2
    test_command = commands[1]  # the "## Tests" section's command, e.g. `bash scripts/test.sh`
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in [line.strip() for line in ci.splitlines()], f"{test_command!r} is not a line of .ci/run"
    scripts = [word for word in test_command.split() if word.endswith(".sh")]
    assert all((ROOT / script).is_file() for script in scripts), scripts


def test_quickstart_command_names_real_things():
    quickstart = re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())[0]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = re.findall(r'-e "\.\[(\w+)\]"', quickstart)
    assert extras and all(extra in project["optional-dependencies"] for extra in extras)
    notebook = re.search(r"(notebooks/\S+\.ipynb)", quickstart).group(1)
    assert (ROOT / notebook).is_file()  # tests/test_notebooks.py executes it
