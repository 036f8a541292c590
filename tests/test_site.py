"""The course website (``make site``): built from the committed notebooks; its links, figures and math checked.

The site is built once, into a temporary folder, by ``website/build.py`` (seconds: it renders
the committed outputs and never runs a notebook). The checks read the HTML it wrote: every
internal link and resource resolves, nothing is loaded from the network (the site must
open offline), every figure of every notebook is on its page, math was parsed into math
elements rather than left as ``$$``/``\\frac`` in the text, the mermaid diagram is handed
to the bundled mermaid, and no machine path leaked in. The browser test at the end opens
pages from disk in Chromium and checks what a reader sees: a figure shown, math typeset,
the diagram drawn; screenshots land in ``build/site-notebook.png`` and ``build/site-diagram.png``.

Skipped, with the reason, where the site's tools are not installed (``make site`` installs
them; ``make site-test`` runs this file and test_site_sources.py); the browser test also without Chromium or
Playwright (``make browser-deps``), as ``tests/test_demo_browser.py`` is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEBSITE = ROOT / "website"
NODE_MODULES = ROOT / "build" / "site-js" / "node_modules"
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if re.fullmatch(r"\d\d_\w+\.ipynb", p.name))
COLAB = "https://colab.research.google.com/github/llmimg/llmimg/blob/main/notebooks/{}"
# What a reader must never see as text: TeX that was not turned into math ($, $$, \frac, \times, ...).
# (One letter after a backslash is allowed: notebook 09 prints a random model's garbage, which has "\o".)
RAW_MATH = re.compile(r"\$|\\[a-zA-Z]{2,}")
# A machine path, as tests/test_notebooks_committed.py and the commit hook look for them.
MACHINE_PATH = re.compile(r"/(?:work|root|home|tmp)/[A-Za-z0-9_.-]+/")
BUILD_TIMEOUT_S = 600  # a few seconds here; generous for a loaded 2-core machine


def _why_no_site_tools() -> str:
    missing = [m for m in ("sphinx", "myst_nb", "sphinx_book_theme", "bs4") if importlib.util.find_spec(m) is None]
    if missing:
        return f"the site's tools are not installed ({', '.join(missing)} missing): run `make site`"
    for js in ("mathjax/es5/tex-svg-full.js", "mermaid/dist/mermaid.min.js"):
        if not (NODE_MODULES / js).is_file():
            return f"build/site-js/node_modules/{js} is missing (npm packages of website/package.json): run `make site`"
    return ""


WHY_NO_SITE = _why_no_site_tools()
if WHY_NO_SITE:
    pytest.skip(WHY_NO_SITE, allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built from this checkout into a temporary folder."""
    out = tmp_path_factory.mktemp("website") / "site"
    done = subprocess.run([sys.executable, str(WEBSITE / "build.py"), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if done.returncode:
        pytest.fail(f"website/build.py failed ({done.returncode}):\n{(done.stdout + done.stderr)[-6000:]}")
    return out


def _soup(path: Path):
    from bs4 import BeautifulSoup

    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _pages(site: Path) -> list[Path]:
    """The site's pages (the themes also copy Jinja template fragments, *.html, into _static/)."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)


def _image_outputs(notebook: Path) -> int:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return sum(1 for cell in nb["cells"] for out in cell.get("outputs", [])
               if any(mime.startswith("image/") for mime in out.get("data", {})))


# --- the built site ----------------------------------------------------------------------------------


def test_every_page_is_built_and_the_pages_follow_the_course_order(site):
    """Home (the README) → 00 … 09 → reference numbers → GPU validation, by the pages' own "next" links."""
    order = ["index.html", *[f"notebooks/{nb.stem}.html" for nb in NOTEBOOKS], "reference.html",
             "docs/gpu-validation.html"]
    for name in order:
        assert (site / name).is_file(), f"{name} was not built"
    for here, following in zip(order, order[1:]):
        link = _soup(site / here).find("link", rel="next")
        assert link is not None, f"{here} has no next page"
        assert (site / here).parent.joinpath(link["href"]).resolve() == (site / following).resolve(), \
            f"after {here} comes {link['href']}, not {following}"
    readme_title = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("# "))
    assert _soup(site / "index.html").find("h1").get_text(strip=True).rstrip("#") == readme_title[2:].strip()


def test_internal_links_resolve_and_nothing_is_loaded_from_the_network(site):
    """Every relative href/src (and CSS url()) names a file of the site, and an anchor an id on that page;
    scripts, styles, images and fonts are all local, so the site works offline."""
    ids: dict[Path, set[str]] = {}

    def ids_of(page: Path) -> set[str]:
        if page not in ids:
            soup = _soup(page)
            ids[page] = ({t["id"] for t in soup.find_all(id=True)}
                         | {t["name"] for t in soup.find_all("a", attrs={"name": True})})
        return ids[page]

    broken, online = [], []
    for page in _pages(site):
        for tag in _soup(page).find_all(["a", "link", "img", "script", "source", "iframe"]):
            attr = "href" if tag.name in ("a", "link") else "src"
            url = tag.get(attr)
            if not url or url.startswith(("mailto:", "data:", "javascript:")):
                continue
            parts = urlsplit(url)
            where = f"{page.relative_to(site)}: <{tag.name} {attr}={url!r}>"
            if parts.scheme or url.startswith("//"):
                if tag.name != "a" and not (tag.name == "link" and "canonical" in tag.get("rel", [])):
                    online.append(where)
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.is_relative_to(site.resolve()) or not target.exists():
                broken.append(where)
            elif target.is_dir():
                if not (target / "index.html").is_file():
                    broken.append(where)
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in ids_of(target):
                broken.append(f"{where} (no such anchor)")
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", text):
            if url.startswith(("data:", "#")):
                continue
            if urlsplit(url).scheme or url.startswith("//"):
                online.append(f"{css.relative_to(site)}: url({url})")
            elif not (css.parent / unquote(urlsplit(url).path)).exists():
                broken.append(f"{css.relative_to(site)}: url({url})")
    assert not broken, f"{len(broken)} broken internal links or resources:\n" + "\n".join(broken[:30])
    assert not online, f"{len(online)} resources loaded from the network (the site must work offline):\n" + \
        "\n".join(online[:30])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_and_the_colab_badge_are_on_the_notebooks_page(site, notebook):
    page = site / "notebooks" / f"{notebook.stem}.html"
    soup = _soup(page)
    figures = [img for img in soup.select("div.cell_output img") if "_images/" in img.get("src", "")]
    wanted = _image_outputs(notebook)
    assert len(figures) == wanted, f"{page.name} shows {len(figures)} figures; the notebook has {wanted}"
    for img in figures:
        file = page.parent / unquote(img["src"])
        assert file.is_file() and file.stat().st_size > 100, f"{img['src']} is missing or empty"
    badge = soup.find("a", href=COLAB.format(notebook.name))
    assert badge is not None and badge.find("img") is not None, f"{page.name} has no Colab badge linking to itself"
    assert (page.parent / badge.find("img")["src"]).resolve() == (site / "_static" / "colab-badge.svg").resolve()


def test_math_is_math_elements_and_no_raw_tex_is_left_in_the_text(site):
    """TeX must end up in the elements MathJax typesets (``.math``), never as text a reader sees."""
    for page in _pages(site):
        soup = _soup(page)
        for tag in soup.select("script, style, pre, code, .math"):
            tag.decompose()
        body = soup.body.get_text(" ") if soup.body else ""
        raw = RAW_MATH.search(body)
        assert raw is None, \
            f"{page.relative_to(site)} shows raw TeX: ...{body[max(0, raw.start() - 80):raw.end() + 40]}..."
    for notebook in NOTEBOOKS:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        display = sum("".join(c["source"]).count("$$") // 2 for c in nb["cells"] if c["cell_type"] == "markdown")
        soup = _soup(site / "notebooks" / f"{notebook.stem}.html")
        assert len(soup.select("div.math")) >= display, f"{notebook.name}: fewer display equations than its $$ blocks"
        if display:
            assert soup.find("script", src=re.compile(r"_static/mathjax/tex-svg-full\.js(\?|$)")), \
                f"{notebook.name}'s page does not load the bundled MathJax"
    assert len(_soup(site / "notebooks" / "01_math.html").select("span.math")) > 50  # the math notebook's inline math


def test_the_mermaid_diagram_goes_to_the_bundled_mermaid(site):
    soup = _soup(site / "notebooks" / "00_welcome.html")
    diagrams = soup.select("pre.mermaid")
    assert len(diagrams) == 1 and diagrams[0].get_text().lstrip().startswith("flowchart")
    assert soup.find("script", src=re.compile(r"_static/mermaid/mermaid\.min\.js(\?|$)"))
    assert not soup.select("div.highlight-mermaid"), "the diagram is shown as highlighted source"
    assert not _soup(site / "notebooks" / "01_math.html").find("script", src=re.compile("mermaid")), \
        "pages without a diagram should not load mermaid (3.5 MB)"


def test_widget_outputs_become_a_note_and_progress_bars_go(site):
    text = _soup(site / "notebooks" / "06_pipeline.html").get_text(" ")
    assert "An interactive widget is shown here" in text  # the demo
    for page in _pages(site):
        soup = _soup(page)
        assert not soup.find("script", type="application/vnd.jupyter.widget-state+json"), page.name
        assert not re.search(r"\d+%\|", soup.get_text(" ")), f"{page.name} shows a progress bar"


def test_no_machine_paths_in_the_site(site):
    leaks = []
    for file in site.rglob("*"):
        if file.suffix in (".html", ".js", ".css", ".json", ".txt", ".inv", ".svg") and file.is_file():
            text = file.read_text(encoding="utf-8", errors="replace")
            if str(ROOT) in text or str(site.parent) in text or MACHINE_PATH.search(text):
                leaks.append(str(file.relative_to(site)))
    assert not leaks, f"machine paths in: {leaks}"


def test_the_reference_page_lists_every_reference_number(site):
    reference = json.loads((ROOT / "data" / "reference" / "default.json").read_text())
    soup = _soup(site / "reference.html")
    names = [row.find("code").get_text() for row in soup.select("table tbody tr") if row.find("code")]
    assert sorted(names) == sorted(n["name"] for n in reference["numbers"])


# --- in a browser --------------------------------------------------------------------------------------

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
INSTALL_HINT = "run `make browser-deps`"
PAGE_READY_S = 60  # MathJax typesetting a long page of math on a loaded 2-core machine


def find_chromium() -> tuple[str | None, str]:
    """The Chromium to drive and "", or None and why there is none ($LLMIMG_CHROMIUM first, then PATH).

    The same search as tests/test_demo_browser.py (copied, so neither test imports the other)."""
    explicit = os.environ.get("LLMIMG_CHROMIUM")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"LLMIMG_CHROMIUM={explicit} is not an executable file: fix it, unset it, or {INSTALL_HINT}"
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path, ""
    return None, f"no Chromium found ({', '.join(CHROMIUM_NAMES)} on PATH, or $LLMIMG_CHROMIUM): {INSTALL_HINT}"


def _why_no_browser() -> str:
    if importlib.util.find_spec("playwright") is None:
        return f"playwright is not installed (pip install -e '.[browser]'): {INSTALL_HINT}"
    return find_chromium()[1]


WHY_NO_BROWSER = _why_no_browser()

# After MathJax's first typesetting: how much math the page has, how much was typeset, and any TeX error.
MATH_STATE_JS = """() => {
    const math = [...document.querySelectorAll('article .math')];
    const article = document.querySelector('article').cloneNode(true);
    article.querySelectorAll('pre, code, script, style').forEach(e => e.remove());
    return {math: math.length,
            typeset: math.filter(e => e.querySelector('mjx-container svg')).length,
            errors: document.querySelectorAll('mjx-merror').length,
            rawFrac: article.textContent.includes('\\\\frac') || article.textContent.includes('$$')};
}"""
FIGURE_SHOWN_JS = """(img) => img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 50"""


@pytest.mark.browser
@pytest.mark.skipif(bool(WHY_NO_BROWSER), reason=WHY_NO_BROWSER or "-")
def test_a_notebook_page_opened_from_disk_shows_figures_typeset_math_and_the_diagram(site):
    from playwright.sync_api import sync_playwright

    shots = ROOT / "build"
    shots.mkdir(exist_ok=True)
    chromium, _ = find_chromium()
    requested_online: list[str] = []
    page_errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                                     chromium_sandbox=False, timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            # Offline means offline: any request leaving file:// is recorded and refused.
            context.route(re.compile(r"^(https?|wss?)://"),
                          lambda route: (requested_online.append(route.request.url), route.abort()))
            page = context.new_page()
            page.on("pageerror", lambda err: page_errors.append(str(err)))

            page.goto((site / "notebooks" / "01_math.html").as_uri(), wait_until="load")
            try:
                page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                       timeout=PAGE_READY_S * 1000)
                page.evaluate("() => MathJax.startup.promise.then(() => true)")
                math = page.evaluate(MATH_STATE_JS)
                figure = page.locator("div.cell_output img").first
                figure.scroll_into_view_if_needed()
                figure_shown = figure.evaluate(FIGURE_SHOWN_JS)
                badge_shown = page.locator("img[src$='colab-badge.svg']").first.evaluate(
                    "(img) => img.complete && img.naturalWidth > 0")
            finally:
                page.screenshot(path=str(shots / "site-notebook.png"))
            assert math["math"] > 50 and math["typeset"] == math["math"], f"math not all typeset: {math}"
            assert math["errors"] == 0 and not math["rawFrac"], math
            assert figure_shown, "the notebook's first figure is not shown"
            assert badge_shown, "the Colab badge image did not load"

            page.goto((site / "notebooks" / "00_welcome.html").as_uri(), wait_until="load")
            try:
                diagram = page.locator("pre.mermaid svg")
                diagram.wait_for(state="visible", timeout=PAGE_READY_S * 1000)
                diagram.scroll_into_view_if_needed()
                labels = diagram.text_content()
            finally:
                page.screenshot(path=str(shots / "site-diagram.png"))
            assert "CLIP text encoder" in labels and "language model" in labels, labels
        finally:
            browser.close()
    assert not requested_online, f"the pages asked the network for: {requested_online}"
    assert not page_errors, f"JavaScript errors on the pages: {page_errors}"
