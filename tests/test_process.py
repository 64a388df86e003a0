"""The processes unveil owns set up OpenMP before torch loads; a host program that imports the library keeps its
own settings (and importing unveil loads no torch until a name is used)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          timeout=300)


def spin_count(stderr: str) -> str:
    """libgomp's GOMP_SPINCOUNT as it reports it at start-up (OMP_DISPLAY_ENV=VERBOSE)."""
    lines = [ln for ln in stderr.splitlines() if "GOMP_SPINCOUNT" in ln]
    if not lines:
        pytest.skip("torch's OpenMP runtime here is not libgomp (no GOMP_SPINCOUNT report)")
    return lines[0].split("=")[1].strip().strip("'")


def test_importing_unveil_loads_no_torch_until_a_name_is_used():
    r = run("import sys, unveil; a = 'torch' in sys.modules; unveil.Explanation; b = 'torch' in sys.modules; "
            "unveil.load_model; print(a, b, 'torch' in sys.modules, sorted(unveil.__all__) == sorted(set(dir("
            "unveil)) & set(unveil.__all__)))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "True", "True"]


def test_the_commands_help_and_version_load_no_torch():
    """``unveil --help``, a subcommand's help and ``--version`` only build the parser: no torch, numpy or scipy
    (loading them took 2-4 s here before the first line of help)."""
    code = ("import sys\nfrom unveil.process import cli_main\ntry:\n    cli_main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\nprint([m for m in ('torch', 'numpy', 'scipy') if m in sys.modules])")
    for argv in (["--help"], ["explain", "--help"], ["explain-table", "--help"], ["compare", "--help"],
                 ["--version"]):
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "[]", (argv, r.stdout)
    import tomllib
    from pathlib import Path

    version = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    r = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines()[0] == f"unveil {version}"


def test_the_command_lets_idle_openmp_threads_sleep_and_the_library_does_not():
    cmd = run("import sys; from unveil.process import cli_main; sys.exit(cli_main(['methods']))",
              OMP_DISPLAY_ENV="VERBOSE")
    assert cmd.returncode == 0 and "lime" in cmd.stdout, cmd.stderr
    assert spin_count(cmd.stderr) == "0"  # OMP_WAIT_POLICY=PASSIVE: no spinning
    lib = run("import unveil; unveil.load_model", OMP_DISPLAY_ENV="VERBOSE")
    assert lib.returncode == 0, lib.stderr
    assert spin_count(lib.stderr) != "0"  # libgomp's default (spin, then sleep) untouched
    user = run("import sys; from unveil.process import cli_main; sys.exit(cli_main(['methods']))",
               OMP_DISPLAY_ENV="VERBOSE", OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in user.stderr  # the user's setting wins


def test_configure_openmp_is_a_no_op_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401  (loaded: too late to change OpenMP)

    from unveil.process import configure_openmp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert configure_openmp() == {} and "OMP_WAIT_POLICY" not in os.environ


def test_unveil_methods_lists_the_names_and_reaches_the_method_modules():
    """``unveil.methods()`` gives the registry's names; ``unveil.methods.<module>`` is that module (the README's
    ``unveil.methods.meaningful.explain_batch``), also after the subpackage was imported the usual way."""
    import importlib

    import unveil
    from unveil.methods.registry import method_names

    assert unveil.methods() == method_names() and "streak" in unveil.methods()
    assert unveil.methods.meaningful.explain_batch is importlib.import_module("unveil.methods.meaningful").explain_batch
    import unveil.methods.learned  # noqa: F401  (binds nothing over the callable)

    assert callable(unveil.methods) and unveil.methods.learned.explain_batch.__module__ == "unveil.methods.learned"
    assert {"lime", "streak", "modified_rules"} <= set(dir(unveil.methods))
    with pytest.raises(AttributeError, match="no module 'nope'"):
        unveil.methods.nope


@pytest.mark.parametrize("first", ["from unveil.compare import Comparison", "import unveil.compare",
                                   "unveil.compare; from unveil.compare import Comparison",
                                   "import unveil.compare as uc; uc.Comparison"])
def test_unveil_compare_is_the_module_and_calls_as_the_function(first):
    """``unveil.compare`` is the module (``import unveil.compare as uc; uc.Comparison``) and calls as the
    function: importing the submodule bound it to the package's name, and ``unveil.compare(...)`` failed as
    "'module' object is not callable"."""
    r = run(f"import sys, unveil; {first}; m = sys.modules['unveil.compare']; "
            "print(callable(unveil.compare), unveil.compare is m, hasattr(unveil.compare, 'Comparison'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True"]
