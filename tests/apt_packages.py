"""Debian packages a test needs (SLURM, Chromium), installed with apt-get when they are missing.

`install()` raises `Unavailable` when that cannot be done here (not root, no apt-get, the packages not
installable): the tests that need them skip with that reason, they do not fail and do not pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Unavailable(Exception):
    """The packages cannot be had on this machine (the reason is the message)."""


def which(command: str) -> str | None:
    """`command` on PATH or in the system's sbin folders (root's PATH may lack them)."""
    return shutil.which(command) or shutil.which(command, path=SYSTEM_PATH)


def install(packages: tuple[str, ...], commands: tuple[str, ...], timeout: float = 600) -> float:
    """Install `packages` with apt-get unless all of `commands` are there; the seconds it took.

    (Debian's policy-rc.d, where present, keeps the packages from starting daemons of their own.)
    """
    if all(which(command) for command in commands):
        return 0.0
    names = " ".join(packages)
    if os.geteuid() != 0:
        raise Unavailable(f"{names} not installed, and installing needs root")
    apt = which("apt-get")
    if apt is None:
        raise Unavailable(f"{names} not installed, and there is no apt-get to install it")
    start = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    get = [apt, "install", "-y", "-q", "--no-install-recommends", *packages]
    result = subprocess.run(get, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:  # perhaps stale package lists: refresh them once
        subprocess.run([apt, "update", "-q"], capture_output=True, env=env, timeout=timeout)
        result = subprocess.run(get, capture_output=True, text=True, env=env, timeout=timeout)
    missing = [command for command in commands if not which(command)]
    if result.returncode != 0 or missing:
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise Unavailable(f"apt-get could not install {names} (missing: {missing}): {' | '.join(tail)}")
    return time.monotonic() - start
