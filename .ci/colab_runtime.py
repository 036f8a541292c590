"""`make test-colab`'s helper: the notebooks' setup cell as Colab runs it, and a check that Colab's versions stayed.

    python .ci/colab_runtime.py image      the requirements of Colab's image (constraints-colab.txt's names)
    python .ci/colab_runtime.py cell       runs the first cell's `%pip install` with this Python, llmimg from here
    python .ci/colab_runtime.py check      every package constraints-colab.txt pins is installed at that version

The cell is read from notebooks/00_welcome.ipynb (tests/test_environment.py keeps the ten cells identical); its
git URL becomes this checkout, so what is tested is the cell's own install, with its own extras and flags.
Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints-colab.txt"
NOTEBOOK = ROOT / "notebooks" / "00_welcome.ipynb"
GIT_REQUIREMENT = re.compile(r"^llmimg(\[[\w,\s-]*\])?\s*@\s*git\+\S+$")


def pins() -> dict[str, str]:
    """constraints-colab.txt as {name: version}."""
    found = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            found[name.strip()] = pinned.strip()
    return found


def cell_args() -> list[str]:
    """The arguments after `%pip install` in the setup cell, with llmimg's git URL replaced by this checkout."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    source = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    lines = [line.strip() for line in source.splitlines() if line.strip().startswith("%pip install")]
    if len(lines) != 1:
        sys.exit(f"{NOTEBOOK.name}: expected one '%pip install' line in the setup cell, found {len(lines)}")
    args = shlex.split(lines[0].removeprefix("%pip install"))
    local = [i for i, arg in enumerate(args) if GIT_REQUIREMENT.match(arg)]
    if len(local) != 1:
        sys.exit(f"{NOTEBOOK.name}: the setup cell should install llmimg from its git URL once: {lines[0]}")
    extras = GIT_REQUIREMENT.match(args[local[0]]).group(1) or ""
    args[local[0]] = f"{ROOT}{extras.replace(' ', '')}"
    return args


def check() -> int:
    """1 (and what moved) if the cell's install changed a package of Colab's image, else 0."""
    moved = []
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed.split("+")[0] != pinned:
            moved.append(f"{name} {pinned} -> {installed}")
    if moved:
        print("the setup cell changed Colab's own packages: " + "; ".join(moved))
        return 1
    print(f"Colab's image as it was: {len(pins())} pinned packages unchanged")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "image":
        print(" ".join(pins()))
    elif command == "cell":
        args = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *cell_args()]
        print("the setup cell:", shlex.join(args[1:]), flush=True)
        return subprocess.run(args, check=False).returncode
    elif command == "check":
        return check()
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
