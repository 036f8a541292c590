"""Build the course website into build/site/: ``python website/build.py [--out DIR]`` (``make site`` runs it).

The pages are rendered from what is committed, never by running a notebook:

1. A staging folder gets the README as the home page (``index.md``, with the navigation
   appended), every ``notebooks/NN_*.ipynb`` in course order, ``docs/gpu-validation.md``
   and the reference-numbers page (``reference_page.py``). Notebook copies lose their
   widget outputs, which only live in a running kernel: progress bars are dropped, other
   widgets (the demo) become a note, and the saved widget state goes, so MyST-NB does not
   add the ipywidgets scripts from a CDN.
2. MathJax's ``tex-svg-full.js`` and mermaid's ``mermaid.min.js`` are copied from the npm
   install (``make site`` runs ``npm ci`` on ``website/package-lock.json`` into
   ``build/site-js``) so that pages typeset math and draw diagrams offline.
3. Sphinx (config: ``website/conf.py``) writes the HTML with warnings as errors, so a broken
   cross-reference or a missing image fails the build. The result replaces ``DIR`` only
   when the build succeeded; the staging files are removed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import reference_page  # noqa: E402  (beside this file)

NOTEBOOK = re.compile(r"\d\d_\w+\.ipynb")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("*An interactive widget is shown here when the notebook runs in Jupyter or on Colab "
               "(the badge at the top of the page opens it there).*")
# (the npm package's file, where the page loads it from under _static/)
BUNDLED = [("mathjax/es5/tex-svg-full.js", "mathjax/tex-svg-full.js"),
           ("mermaid/dist/mermaid.min.js", "mermaid/mermaid.min.js")]


def notebooks(root: Path = ROOT) -> list[Path]:
    """The course's notebooks, in course order (their NN_ prefix)."""
    return sorted(p for p in (root / "notebooks").glob("*.ipynb") if NOTEBOOK.fullmatch(p.name))


def strip_widgets(nb: dict) -> dict:
    """A copy of notebook JSON ``nb`` without widget outputs (see the module docstring)."""
    nb = copy.deepcopy(nb)
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                kept.append(out)
            elif "%|" not in "".join(data.get("text/plain", "")):  # a tqdm bar's text reads "name: 0%|...|"
                kept.append({"output_type": "display_data", "metadata": {},
                             "data": {"text/markdown": WIDGET_NOTE}})
        if "outputs" in cell:
            cell["outputs"] = kept
    return nb


def home_page(root: Path, pages: list[str]) -> str:
    """The README, then the (hidden) navigation: the notebooks, then the reference pages."""
    course = "\n".join(pages)
    return (root / "README.md").read_text(encoding="utf-8").rstrip() + f"""

```{{toctree}}
:hidden:
:caption: The course

{course}
```

```{{toctree}}
:hidden:
:caption: Records

reference
docs/gpu-validation
```
"""


def stage(src: Path, assets: Path, node_modules: Path, root: Path = ROOT) -> None:
    """Fill ``src`` with the pages and ``assets`` with the bundled scripts."""
    (src / "notebooks").mkdir(parents=True)
    (src / "docs").mkdir()
    pages = []
    for path in notebooks(root):
        nb = json.loads(path.read_text(encoding="utf-8"))
        (src / "notebooks" / path.name).write_text(json.dumps(strip_widgets(nb)), encoding="utf-8")
        pages.append(f"notebooks/{path.stem}")
    (src / "index.md").write_text(home_page(root, pages), encoding="utf-8")
    shutil.copy(root / "docs" / "gpu-validation.md", src / "docs" / "gpu-validation.md")
    (src / "reference.md").write_text(reference_page.render(root), encoding="utf-8")
    for package_file, served_as in BUNDLED:
        source = node_modules / package_file
        if not source.is_file():
            raise SystemExit(f"{source} is missing: `make site` installs it (npm ci in build/site-js)")
        (assets / served_as).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, assets / served_as)


def build(out: Path, node_modules: Path, root: Path = ROOT) -> None:
    """Build the site into ``out`` (replaced only on success)."""
    from sphinx.cmd.build import build_main

    work = out.parent / f"{out.name}-work"
    shutil.rmtree(work, ignore_errors=True)
    src, assets, html = work / "src", work / "assets", work / "html"
    assets.mkdir(parents=True)
    stage(src, assets, node_modules, root)
    os.environ["LLMIMG_SITE_ASSETS"] = str(assets)  # read by conf.py
    # -W --keep-going: every warning is reported, and any makes the build fail; -E: no stale state.
    code = build_main(["-b", "html", "-c", str(HERE), "-d", str(work / "doctrees"), "-E", "-q",
                       "-W", "--keep-going", str(src), str(html)])
    if code:
        raise SystemExit(f"the site did not build (Sphinx exited {code}; its warnings are above)")
    shutil.rmtree(out, ignore_errors=True)
    html.rename(out)
    shutil.rmtree(work)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="where the site goes")
    parser.add_argument("--node-modules", type=Path, default=ROOT / "build" / "site-js" / "node_modules",
                        help="where npm installed website/package.json's packages")
    args = parser.parse_args(argv)
    start = time.monotonic()
    build(args.out.resolve(), args.node_modules.resolve())
    shown = args.out.resolve()
    shown = shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown
    print(f"site built in {time.monotonic() - start:.0f} s: open {shown}/index.html")


if __name__ == "__main__":
    main()
