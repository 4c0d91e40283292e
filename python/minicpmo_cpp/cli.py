"""Console entry point `minicpmo-cli`: runs the native CLI shipped inside this package."""

from __future__ import annotations

import os
import sys


def binary_path() -> str:
    exe = "minicpmo-cli.exe" if os.name == "nt" else "minicpmo-cli"
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), exe)


def main() -> None:
    path = binary_path()
    if not os.path.exists(path):
        sys.stderr.write(f"minicpmo-cli: the native program is missing from the installation ({path})\n")
        raise SystemExit(1)
    if os.name == "nt":
        import subprocess

        raise SystemExit(subprocess.call([path, *sys.argv[1:]]))
    os.execv(path, [path, *sys.argv[1:]])


if __name__ == "__main__":
    main()
