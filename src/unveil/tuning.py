"""Process-wide CPU tuning: keep glibc from handing large activation buffers back to the OS after each pass.

Under glibc's default thresholds, buffers above 128 KiB are ``mmap``-ed and unmapped after use, so every
forward pass of a convolutional net pays page faults for its activations again. Raising the mmap, trim and
top-pad thresholds keeps that memory in the heap for reuse. This changes the whole process, so the library
never does it on import: the CLI, the service and batch workers call :func:`tune_cpu`; a host program may too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

_state: dict[str, int] | None = None
_asked: dict[str, int] | None = None  # the thresholds the first call asked for


def tune_cpu(
    mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30, top_pad: int = 256 << 20
) -> dict[str, int]:
    """Raise glibc's malloc thresholds in this process; return what was set ({} where not glibc).

    Idempotent: once per process (a later call with other thresholds warns and keeps the first). Numerical
    results are unchanged: only where memory comes from changes, and how much freed memory the process keeps
    for reuse (up to about ``trim_threshold`` + ``top_pad``) instead of handing it back.
    """
    global _state, _asked
    asked = {"mmap_threshold": mmap_threshold, "trim_threshold": trim_threshold, "top_pad": top_pad}
    if _state is not None:
        if asked != _asked:
            import warnings

            warnings.warn(f"tune_cpu: already tuned with {_asked}; the thresholds {asked} are not applied (once "
                          "per process)", UserWarning, stacklevel=2)
        return dict(_state)
    _asked = asked
    if not sys.platform.startswith("linux"):
        _state = {}
        return {}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _state = {}
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: dict[str, int] = {}
    # glibc caps the mmap threshold (32 MiB on 64-bit); try the request, then the cap.
    for value in (mmap_threshold, 32 << 20):
        if mallopt(M_MMAP_THRESHOLD, value):
            done["mmap_threshold"] = value
            break
    if mallopt(M_TRIM_THRESHOLD, trim_threshold):
        done["trim_threshold"] = trim_threshold
    if mallopt(M_TOP_PAD, top_pad):
        done["top_pad"] = top_pad
    _state = done
    return dict(done)


def is_tuned() -> bool:
    return bool(_state)
