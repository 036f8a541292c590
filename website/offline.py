"""A small Sphinx extension that keeps the course website working offline.

* Mermaid: a notebook's ```` ```mermaid ```` block arrives as a literal block with language
  ``mermaid``. It becomes ``<pre class="mermaid">`` and the page loads the bundled
  ``mermaid.min.js`` (the classic-script build: sphinxcontrib-mermaid loads an ES module
  from a CDN, which a page opened from disk cannot import). Without JavaScript the page
  still shows the diagram's source, as a code block.
* The Colab badge: the notebooks show ``colab-badge.svg`` from Colab's site; the page shows
  a local copy instead (``website/static/colab-badge.svg``), still linking to Colab.
"""

from __future__ import annotations

import html
import posixpath

from docutils import nodes
from sphinx.application import Sphinx

COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "_static/colab-badge.svg"
MERMAID_JS = "mermaid/mermaid.min.js"
# Draw every <pre class="mermaid"> once the page has loaded; "strict" keeps labels from running scripts.
MERMAID_INIT = "mermaid.initialize({startOnLoad: true, securityLevel: 'strict', theme: 'neutral'});"


def _replace_nodes(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    for block in list(doctree.findall(nodes.literal_block)):
        if block.get("language") == "mermaid":
            source = html.escape(block.astext())
            block.replace_self(nodes.raw("", f'<pre class="mermaid">{source}</pre>\n', format="html"))
    for image in doctree.findall(nodes.image):
        if image.get("uri") == COLAB_BADGE_URL:
            # Relative to the page, which may sit in a subfolder (notebooks/...).
            image["uri"] = posixpath.relpath(LOCAL_BADGE, posixpath.dirname(docname) or ".")


def _add_mermaid_script(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Load mermaid only on pages that draw a diagram (it is 3.5 MB)."""
    if 'class="mermaid"' in context.get("body", ""):
        app.add_js_file(MERMAID_JS)
        app.add_js_file(None, body=MERMAID_INIT)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-resolved", _replace_nodes)
    app.connect("html-page-context", _add_mermaid_script)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
