"""Building the C demo programs of tests/c against the installed package: its public header
(minicpmo.h) and libminicpmo, strict C11 with warnings as errors, the library found at run time
through an rpath. Shared by the tests that run a demo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

C_DIR = Path(__file__).parent / "c"


def build_c_demo(name: str, out_dir: Path, extra_libs: tuple[str, ...] = ()) -> Path:
    """Compiles tests/c/<name>.c into out_dir/<name> and returns the executable's path."""
    import minicpmo_cpp

    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, f"a C compiler is needed to build tests/c/{name}.c"
    pkg = Path(minicpmo_cpp.__file__).parent
    exe = Path(out_dir) / name
    cmd = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{pkg / 'include'}", str(C_DIR / f"{name}.c"),
           "-o", str(exe), f"-L{pkg}", "-lminicpmo", f"-Wl,-rpath,{pkg}", *extra_libs]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return exe
