"""Sphinx configuration of the course website (``make site``; ``website/build.py`` drives it).

The pages come from a staging folder that ``build.py`` fills (README as ``index.md``, the
committed notebooks, the GPU validation record, the generated reference-numbers page);
this file only says how to render them. Notebooks are rendered with MyST-NB from their
committed outputs and never executed. Everything a page loads is bundled so the site
opens offline: MathJax (SVG output, no web fonts) and mermaid come from npm via
``website/package-lock.json``; the Colab badge is a local copy (``offline.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for the local extension `offline`

# build.py copies the two bundled scripts (mathjax/tex-svg-full.js, mermaid/mermaid.min.js) into this
# folder and names it here; they are served from _static/ beside website/static/.
ASSETS = os.environ.get("LLMIMG_SITE_ASSETS")
if not ASSETS:
    raise RuntimeError("build the site with `make site` (website/build.py), which prepares the bundled scripts")

project = "llmimg"
author = "the llmimg authors"
copyright = "the llmimg authors, MIT licence"
html_title = "llmimg: LLM-guided text-to-image generation"

extensions = ["myst_nb", "sphinx.ext.githubpages", "offline"]  # githubpages: .nojekyll, so _static/ is served
root_doc = "index"
exclude_patterns: list[str] = []

# --- Markdown and notebooks -------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3       # GitHub-style anchors, as the README's links (#pretrained-models-colab) expect
myst_dmath_double_inline = True  # `$$...$$` inside a paragraph, as Jupyter renders it, is display math
nb_execution_mode = "off"      # the committed outputs are the content: never re-run a notebook here
nb_merge_streams = True        # one block per cell for consecutive prints
suppress_warnings = [
    "myst.header",             # notebooks open with a badge before their `# NN · Title`
]

# --- Math: MathJax 3 from npm, SVG output (draws glyphs as paths, so no font files to load) --
mathjax_path = "mathjax/tex-svg-full.js"   # relative: served from _static/
mathjax3_config = {"svg": {"fontCache": "global"}}
mathjax4_config = None

# --- HTML -------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_theme_options = {
    "repository_url": "https://github.com/llmimg/llmimg",
    "use_repository_button": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path = [str(HERE / "static"), ASSETS]
html_css_files = ["site.css"]
html_copy_source = False        # the notebooks are in the repository; do not ship them twice
html_show_sourcelink = False
html_last_updated_fmt = None
