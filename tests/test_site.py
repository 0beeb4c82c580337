"""The built HTML, checked the way a reader meets it: Jupyter Book with warnings as errors, then
headless Chromium over a local server that records every request the pages make."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
from bs4 import BeautifulSoup
from conftest import REPO_ROOT

from sftbook import book, notebooks

pytestmark = pytest.mark.slow  # builds the whole book and drives a browser

CHAPTER_PAGES = [f"book/{p.stem}.html" for p in notebooks.chapters()]
PAGES = ["book/index.html", *CHAPTER_PAGES, "book/status.html", "book/bibliography.html"]


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), "build", str(REPO_ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "build finished with problems" not in log, log[-4000:]
    return out / "_build" / "html"


class _Recorder(http.server.SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]] = []

    def log_request(self, code="-", size="-"):
        self.requests.append((self.path.split("?")[0], int(code)))

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="session")
def server(site):
    handler = type("Handler", (_Recorder,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(site), **k))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/", handler.requests
    httpd.shutdown()


def render(url: str, tmp_path: Path) -> BeautifulSoup:
    """The DOM after scripts ran (MathJax included), as headless Chromium sees it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: `make browser` installs Debian's chromium (as root)."
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return BeautifulSoup(result.stdout, "html.parser")


def test_every_chapter_has_a_page(site):
    for page in PAGES:
        assert (site / page).is_file(), page
    with_math = [p for p in PAGES if "math notranslate" in (site / p).read_text(encoding="utf-8")]
    assert {"book/index.html", "book/05_attention.html", "book/06_loss_functions.html"} <= set(with_math)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_math_figures_and_no_failed_resource(page, site, server, tmp_path):
    base, requests = server
    requests.clear()
    dom = render(base + page, tmp_path)
    if "math notranslate" in (site / page).read_text(encoding="utf-8"):  # the page has math
        assert dom.find("mjx-container") is not None, "MathJax did not typeset the page's math"
    assert not dom.select("mjx-merror"), "MathJax reported a TeX error"
    served = {path: code for path, code in requests}
    images = [urlparse(urljoin(base + page, img["src"])).path for img in dom.find_all("img") if img.get("src")]
    for path in images:
        assert served.get(path) == 200, f"figure {path} did not load"
    failed = [(p, c) for p, c in requests if c >= 400 and not p.endswith("favicon.ico")]
    assert failed == []
    if page in CHAPTER_PAGES:
        assert len(images) >= 2, "a chapter without figures?"


@pytest.mark.parametrize("chapter", notebooks.chapters(), ids=lambda p: p.name)
def test_launch_and_download_buttons_point_at_the_notebook(chapter, site, server):
    base, _ = server
    owner_repo = urlparse(book.repository_url()).path.strip("/")
    html = BeautifulSoup((site / "book" / f"{chapter.stem}.html").read_text(encoding="utf-8"), "html.parser")
    links = {a["href"] for a in html.find_all("a", href=True)}
    notebook = f"book/{chapter.name}"
    assert f"https://colab.research.google.com/github/{owner_repo}/blob/main/{notebook}" in links
    assert f"https://mybinder.org/v2/gh/{owner_repo}/main?urlpath=lab/tree/{notebook}" in links
    download = f"../_sources/{notebook}"
    assert download in links
    stored = json.loads((site / "_sources" / notebook).read_text(encoding="utf-8"))
    assert stored["metadata"]["sftbook"]["inputs_sha256"]  # the executed notebook, with provenance


@pytest.mark.parametrize("page", PAGES)
def test_page_needs_no_network(page, site):
    html = BeautifulSoup((site / page).read_text(encoding="utf-8"), "html.parser")
    external = [
        tag.get("src") or tag.get("href")
        for tag in html.find_all(["script", "img", "link"])
        if (tag.get("src") or "").startswith("http")
        or (tag.name == "link" and "stylesheet" in (tag.get("rel") or []) and tag.get("href", "").startswith("http"))
    ]
    assert external == []


@pytest.mark.parametrize("page", PAGES)
def test_no_broken_internal_link(page, site):
    """Every relative link resolves to a built file, and every #anchor to an element with that id."""
    html = BeautifulSoup((site / page).read_text(encoding="utf-8"), "html.parser")
    broken = []
    for anchor in html.find_all("a", href=True):
        href = anchor["href"]
        if urlparse(href).scheme or href.startswith(("mailto:", "javascript:")):
            continue
        target_path, _, fragment = href.partition("#")
        target = (site / page).parent / target_path if target_path else site / page
        if not target.resolve().is_file():
            broken.append(href)
            continue
        if fragment and target.suffix == ".html" and fragment not in element_ids(target.resolve()):
            broken.append(href)
    assert broken == []


@functools.cache
def element_ids(page: Path) -> frozenset[str]:
    """The ids in a built page, parsed once per session: a chapter links to the same pages hundreds of times."""
    return frozenset(tag["id"] for tag in BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser").find_all(id=True))


def test_search_finds_attention(server, tmp_path):
    base, _ = server
    dom = render(base + "search.html?q=attention", tmp_path)
    hits = [a["href"] for a in dom.select("ul.search li a[href]")]
    assert hits, "the search page returned no result for 'attention'"
    assert any("05_attention" in href for href in hits), hits
