"""docs/limits.md is generated from the option definitions; it must match the code."""

import subprocess
import sys
from pathlib import Path


def test_limits_page_matches_the_code():
    script = Path(__file__).resolve().parent.parent / "scripts" / "limits_table.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
