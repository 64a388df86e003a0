"""Set-up of the processes unveil runs itself: the ``unveil`` command, ``python -m unveil`` and the demo.

PyTorch's CPU kernels run on an OpenMP thread pool whose idle threads spin-wait by default. On a machine where
other processes also want the cores, the spinning threads take CPU time from the ones doing the work, and a
forward pass can get several times slower (here LIME with 1000 samples on the default model took 188 s instead
of 29 s with two other busy processes on the two cores). With ``OMP_WAIT_POLICY=PASSIVE`` idle threads sleep
instead. OpenMP reads the variable once, when torch loads it, so it must be set before torch is imported, and it
changes the whole process: the library never sets it on import; :func:`cli_main` does, for the processes unveil
owns, unless the user has set it (their value wins). ``bench/contention.py`` measures the effect.
"""

from __future__ import annotations

import os
import sys

__all__ = ["OPENMP_DEFAULTS", "configure_openmp", "cli_main"]

#: environment defaults for the OpenMP runtime of the processes unveil owns.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_openmp() -> dict[str, str]:
    """Set :data:`OPENMP_DEFAULTS` in this process's environment where the user has not set them and torch is
    not loaded yet (afterwards they would have no effect); return what was set."""
    if "torch" in sys.modules:
        return {}
    done = {}
    for key, value in OPENMP_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            done[key] = value
    return done


def cli_main(argv=None) -> int:
    """The ``unveil`` command: OpenMP set up for a process of its own, then :func:`unveil.cli.main`."""
    configure_openmp()
    from .cli import main

    return main(argv)
