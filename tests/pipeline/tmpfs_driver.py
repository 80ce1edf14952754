"""Run a command twice with its output on a small tmpfs: first full, then with room to spare.

Started by test_disk_full.py inside a private user + mount namespace (``unshare -rm``), so the
tmpfs needs no root on the host and vanishes with the namespace. Usage::

    python tmpfs_driver.py MOUNTPOINT SIZE COPY_DIR -- COMMAND...

Mounts a tmpfs of SIZE (e.g. "3m") on MOUNTPOINT, runs COMMAND, copies MOUNTPOINT to COPY_DIR/first,
remounts with 512m, runs COMMAND again, copies to COPY_DIR/second, and writes
COPY_DIR/results.json: ``[{"returncode": int, "stderr": str, "stdout": str}, ...]``. Exits 3 when
the tmpfs cannot be mounted (the test then skips).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Parse ``argv`` (see the module docstring), do the two runs; returns the exit status."""
    mountpoint, size, copies = Path(argv[0]), argv[1], Path(argv[2])
    command = argv[argv.index("--") + 1:]
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)]).returncode:
        return 3
    results = []
    for name, remount in (("first", None), ("second", "remount,size=512m")):
        if remount and subprocess.run(["mount", "-o", remount, str(mountpoint)]).returncode:
            return 3
        done = subprocess.run(command, capture_output=True, text=True)
        results.append({"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr})
        shutil.copytree(mountpoint, copies / name, symlinks=True)
    (copies / "results.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
