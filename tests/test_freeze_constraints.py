"""scripts/freeze_constraints.py: the project's requirements from pyproject.toml, every extra
included, and their installed closure."""

import importlib.util
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("freeze_constraints", ROOT / "scripts" / "freeze_constraints.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_requirements_come_from_pyproject_with_every_extra(tmp_path):
    fc = _script()
    py = tmp_path / "pyproject.toml"
    py.write_text('[project]\nname = "x"\ndependencies = ["numpy>=1"]\n'
                  '[project.optional-dependencies]\na = ["pytest>=7"]\nb = ["not-a-package-genrec>=1"]\n')
    assert fc.project_requirements(py) == ["numpy>=1", "pytest>=7", "not-a-package-genrec>=1"]


def test_closure_pins_installed_versions_and_names_the_missing():
    fc = _script()
    pins, missing = fc.closure(["pytest>=7", "not-a-package-genrec>=1", "numpy; python_version < '3'"])
    assert pins["pytest"] == metadata.version("pytest")
    assert pins["pluggy"] == metadata.version("pluggy")      # what pytest requires in turn
    assert "numpy" not in pins                                # its marker does not hold
    assert missing == ["not-a-package-genrec"]
