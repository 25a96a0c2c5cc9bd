"""The widget's ES module under node's test runner (happy-dom as the DOM), run as part of pytest."""

import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).parent.parent / "js"


def test_widget_module_unit_tests():
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the front-end unit tests")
    if not (JS / "node_modules" / "happy-dom").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=JS, check=True, timeout=300)
    result = subprocess.run([node, "--test", "test/"], cwd=JS, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout and "# pass " in result.stdout
