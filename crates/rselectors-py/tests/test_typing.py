"""The typed example runs (mypy --strict checks it in scripts/test-python),
and the package ships its type information."""

import os
import subprocess
import sys

import rselectors

TYPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "typed")


def test_typed_example_runs():
    done = subprocess.run([sys.executable, os.path.join(TYPED, "typed_echo.py")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ping\n"


def test_type_information_is_installed():
    package = os.path.dirname(rselectors.__file__)
    for name in ("py.typed", "__init__.pyi", "_rselectors.pyi"):
        assert os.path.isfile(os.path.join(package, name)), name
