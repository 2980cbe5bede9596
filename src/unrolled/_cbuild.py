"""Compile a small C source once per machine into a shared library, cached, loaded with ``ctypes``.

Used by the exact NNLS solver's Lawson–Hanson loop (``algorithms/_compiled.py``) and by
:func:`unrolled.fast` (``fused.py``). The library is cached under ``$UNROLLED_CACHE`` (default
``$XDG_CACHE_HOME/unrolled`` or ``~/.cache/unrolled``), named by a hash of the source, the flags
and the machine, so a changed source is rebuilt. ``UNROLLED_NO_COMPILE=1`` turns compiling off;
callers then fall back to their torch code.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("UNROLLED_CACHE") or os.path.join(base, "unrolled"))


def build(name: str, source: str, flags: list[str], *, libs: tuple[str, ...] = (), machine: str = "") -> ctypes.CDLL:
    """The library ``name`` built from ``source`` with ``flags`` (compiled on first use, then cached).

    ``machine`` adds to the cache key what the flags depend on (e.g. the CPU for ``-march=native``).
    Raises OSError when it cannot: compiling turned off, no C compiler, or the compiler failed.
    """
    if os.environ.get("UNROLLED_NO_COMPILE"):
        raise OSError("compiling is turned off (UNROLLED_NO_COMPILE)")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc or gcc) found")
    key = "\0".join([source, *flags, *libs, platform.machine(), platform.system(), machine])
    target = cache_dir() / f"{name}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, built = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            src.write_text(source)
            try:
                run = subprocess.run(
                    [compiler, *flags, str(src), "-o", str(built), *libs], capture_output=True, text=True, timeout=300
                )
            except subprocess.SubprocessError as exc:
                raise OSError(f"{compiler} failed: {exc}") from None
            if run.returncode != 0:
                errors = [line for line in run.stderr.splitlines() if "error" in line] or [run.stderr.strip()]
                raise OSError(f"{compiler} failed: {errors[0]}")
            os.replace(built, target)  # atomic: concurrent first uses never load a half-written file
    return ctypes.CDLL(str(target))
