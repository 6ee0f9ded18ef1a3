"""The search playground (`/ui`) in headless Chromium against live servers the tests start.

Each server runs the binary of $VICINITY_BIN (default target/debug/vicinity) with the model of
$VICINITY_TEST_MODEL (default the tiny fixture, tests/fixtures/tiny-bert) on a free loopback
port and a temporary data directory. The tests create a collection through the API, then work
the page as a person would: pick the collection, search, read the hits and a passage in its
document, meet errors, enter an API key. Lexical queries make the expected hits independent
of the model.

With $PLAYGROUND_SCREENSHOT naming a file, one more test loads the repository's README, split
by sections, runs a hybrid query and saves the page there (with the real model, that is the
README's screenshot).

Needs pytest, selenium, and Debian's chromium and chromium-driver.
"""

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import local_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]
WAIT_S = 30
KEY = "playground-test-key-0123"
COLLECTION = "playground"

# Passages of at most 32 tokens, whichever model runs: the tiny one reads no more, and with
# the real one the journal still splits into several passages, so that "in context" has to
# place a passage that follows characters beyond the BMP (emoji are two UTF-16 units each).
CHUNKING = {"max_tokens": 32, "overlap": 4}

DOCUMENTS = [
    {
        "id": "bread",
        "text": "Sourdough bread rises slowly because wild yeast ferments the dough overnight. "
                "Bakers feed the starter with flour and water every day.",
        "metadata": {"topic": "food", "year": 2021},
    },
    {
        "id": "lighthouse",
        "text": "Lighthouses guide ships past dangerous coasts. Their rotating beams and "
                "foghorns warn sailors at night.",
        "metadata": {"topic": "sea", "year": 1890},
    },
    {
        "id": "volcano",
        "text": "Volcanoes erupt when pressure from molten rock builds beneath the crust, "
                "sending ash high into the sky.",
        "metadata": {"topic": "geology", "year": 2010},
    },
    {
        "id": "journal",
        "text": "Day one 🌊: we sailed north along the fjord 🚢 and counted seabirds 🐦 on the "
                "cliffs.\n\nDay two 🏔️: fog rolled in 🌫️, so we stayed ashore and mended the "
                "nets 🧵 by the stove.\n\nDay three 🐋: a whale surfaced beside the boat 🛶 "
                "twice before noon.\n\nDay four 🌙: late at night the aurora 🌌 lit the sky "
                "green above the harbour.\n\nDay five ☀️: calm seas again, and the long way "
                "home.",
        "metadata": {"topic": "travel", "year": 2023, "tags": ["boat", "north"]},
    },
]


def _path_from_env(name, default):
    value = os.environ.get(name) or default
    path = Path(value)
    # Relative paths are the repository's, whatever directory pytest runs in.
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    return str(path)


BINARY = _path_from_env("VICINITY_BIN", "target/debug/vicinity")
MODEL = _path_from_env("VICINITY_TEST_MODEL", "tests/fixtures/tiny-bert")


class LiveServer:
    """A `vicinity serve` on a free port with a client for its API."""

    def __init__(self, args=(), key=None):
        if not os.access(BINARY, os.X_OK):
            pytest.fail(f"no server binary at {BINARY}: run `cargo build`, or set VICINITY_BIN")
        # The tiny model reads 32 tokens: the default overlap of 32 would not fit.
        self.server = local_server.Server(BINARY, MODEL, ["--chunk-overlap", "4", *args],
                                          start_timeout=300)
        self.server.start()
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self.client = local_server.Client(self.server.port, headers=headers)
        self.url = f"http://127.0.0.1:{self.server.port}"

    def call(self, method, path, body=None, want=200):
        status, answer = self.client.call(method, path, body)
        assert status == want, f"{method} {path}: {status} {answer}"
        return answer

    def create(self, name, documents, chunking=None):
        self.call("PUT", f"/collections/{name}", {"chunking": chunking} if chunking else {},
                  want=201)
        self.call("POST", f"/collections/{name}/documents", {"documents": documents})

    def stop(self):
        self.server.remove()


@pytest.fixture(scope="module")
def server():
    live = LiveServer()
    try:
        live.create(COLLECTION, DOCUMENTS, CHUNKING)
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def keyed_server():
    live = LiveServer(["--api-key", KEY], key=KEY)
    try:
        live.create(COLLECTION, DOCUMENTS, CHUNKING)
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser():
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            pytest.skip(f"{exe} is missing: install Debian's chromium and chromium-driver")
    profile = tempfile.mkdtemp(prefix="playground-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Working the page


def wait(driver, condition, timeout=WAIT_S, message=""):
    try:
        return WebDriverWait(driver, timeout).until(lambda d: condition(d))
    except TimeoutException:
        error = driver.find_element(By.ID, "error")
        shown = error.text if error.is_displayed() else "(no error shown)"
        raise AssertionError(f"timed out: {message}; the page's error box: {shown}") from None


def by_id(driver, element_id):
    return driver.find_element(By.ID, element_id)


def visible(driver, element_id):
    return by_id(driver, element_id).is_displayed()


def open_page(driver, live):
    driver.get(f"{live.url}/ui")
    assert driver.title.startswith("vicinity"), driver.title


def pick_collection(driver, name, documents):
    """Selects `name` and waits for its stats, which must count `documents`."""
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#collection option[value='{name}']"),
         message=f"collection {name} listed")
    Select(by_id(driver, "collection")).select_by_value(name)

    def stat(d, label):
        for dt in d.find_elements(By.CSS_SELECTOR, "#stats dt"):
            if dt.text == label:
                return dt.find_element(By.XPATH, "following-sibling::dd[1]").text
        return None

    wait(driver, lambda d: stat(d, "Documents") == str(documents), message="collection stats")
    return {label: stat(driver, label) for label in
            ("Documents", "Passages", "Dimension", "Distance", "Index", "Lexical", "Memory")}


def set_mode(driver, mode):
    driver.find_element(By.CSS_SELECTOR, f"label[for='mode-{mode}']").click()
    assert by_id(driver, f"mode-{mode}").is_selected()


def set_filter(driver, text):
    area = by_id(driver, "filter")
    area.clear()
    if text:
        area.send_keys(text)


def search(driver, query):
    """Types `query`, presses Enter and waits for the answer: hits, an error, or none."""
    box = by_id(driver, "query")
    box.clear()
    box.send_keys(query)
    box.send_keys(Keys.ENTER)
    wait(driver, lambda d: by_id(d, "search").is_enabled()
         and (visible(d, "error") or visible(d, "summary")),
         message=f"the answer to {query!r}")


def hits(driver):
    """The hits shown, best first: ids, scores, text and metadata as the page shows them."""
    out = []
    for li in driver.find_elements(By.CSS_SELECTOR, "#hits > li.hit"):
        out.append({
            "element": li,
            "document_id": li.find_element(By.CSS_SELECTOR, ".doc-id").text,
            "id": li.find_element(By.CSS_SELECTOR, ".passage-id").text,
            "score": li.find_element(By.CSS_SELECTOR, ".score").text,
            "text": li.find_element(By.CSS_SELECTOR, ".passage-text").get_attribute("textContent"),
            "marks": [m.get_attribute("textContent")
                      for m in li.find_elements(By.CSS_SELECTOR, ".passage-text mark")],
            "metadata": [m.text for m in li.find_elements(By.CSS_SELECTOR, ".metadata .meta")],
        })
    return out


def shown_error(driver):
    assert visible(driver, "error"), "no error shown"
    return {
        "code": driver.find_element(By.CSS_SELECTOR, "#error .error-code").text,
        "text": by_id(driver, "error").text,
    }


def assert_clean_console(driver):
    """No script error and no Content-Security-Policy violation in the browser's console.
    (Refused requests, 401s and 400s, are logged too: they are expected.)"""
    problems = [e["message"] for e in driver.get_log("browser")
                if e["level"] == "SEVERE"
                and ("Content Security Policy" in e["message"] or "Uncaught" in e["message"])]
    assert not problems, problems


def api_top_hit(live, query, mode="lexical"):
    answer = live.call("POST", f"/collections/{COLLECTION}/query",
                       {"query": query, "mode": mode, "k": 5})
    assert answer["results"], f"the API finds nothing for {query!r}"
    return answer["results"][0]


def maybe_screenshot(driver):
    path = os.environ.get("PLAYGROUND_SCREENSHOT")
    if path:
        driver.save_screenshot(path)


# ---------------------------------------------------------------------------------------------
# Tests


def test_a_lexical_query_shows_the_expected_passage_first(server, browser):
    want = api_top_hit(server, "sourdough yeast")
    assert want["document_id"] == "bread", want

    open_page(browser, server)
    stats = pick_collection(browser, COLLECTION, len(DOCUMENTS))
    assert stats["Distance"] == "cosine", stats
    assert stats["Lexical"].startswith("ready"), stats
    assert int(stats["Passages"]) >= len(DOCUMENTS), stats
    set_mode(browser, "lexical")
    search(browser, "sourdough yeast")

    assert not visible(browser, "error"), shown_error(browser)
    shown = hits(browser)
    assert shown, "no hits shown"
    top = shown[0]
    assert top["document_id"] == "bread", top
    assert top["id"] == want["id"], (top, want)
    assert top["text"] == want["text"], (top, want)
    assert top["score"].endswith(f"{want['score']:.4f}"), (top, want)
    # The query's words are highlighted in the passage, whatever their case, and nothing else.
    assert "Sourdough" in top["marks"], (top["marks"], top["text"])
    assert {m.lower() for m in top["marks"]} <= {"sourdough", "yeast"}, top["marks"]
    assert any("topic" in m and "food" in m for m in top["metadata"]), top["metadata"]
    summary = by_id(browser, "summary").text
    assert "plan lexical" in summary and " ms" in summary, summary
    # The request the page sent, shown for copying.
    request = by_id(browser, "request-json").get_attribute("textContent")
    assert '"mode": "lexical"' in request, request
    assert_clean_console(browser)


def test_a_passage_is_shown_in_its_document(server, browser):
    want = api_top_hit(server, "aurora")
    assert want["document_id"] == "journal", want
    # The passage follows emoji: its character offsets differ from UTF-16 offsets, which a
    # page that sliced the JavaScript string directly would get wrong.
    doc_text = next(d["text"] for d in DOCUMENTS if d["id"] == "journal")
    start = want["passage"]["start"]
    assert len(doc_text[:start].encode("utf-16-le")) // 2 != start, \
        "the passage should follow characters beyond the BMP"

    open_page(browser, server)
    pick_collection(browser, COLLECTION, len(DOCUMENTS))
    set_mode(browser, "lexical")
    search(browser, "aurora")
    top = hits(browser)[0]
    assert top["document_id"] == "journal", top
    top["element"].find_element(By.CSS_SELECTOR, ".context-toggle").click()
    wait(browser, lambda d: top["element"].find_elements(By.CSS_SELECTOR, ".context mark.passage"),
         message="the passage in context")
    context = top["element"].find_element(By.CSS_SELECTOR, ".context")
    passage = context.find_element(By.CSS_SELECTOR, "mark.passage").get_attribute("textContent")
    assert passage == want["text"], (passage, want["text"])
    whole = context.find_element(By.CSS_SELECTOR, ".context-text").get_attribute("textContent")
    before = doc_text[:start]
    # The context around the passage is the document's own text on either side.
    assert before.rstrip()[-20:] in whole, (before[-20:], whole)
    assert "aurora" in [m.text for m in context.find_elements(By.CSS_SELECTOR, "mark.term")]
    assert "journal" in context.find_element(By.CSS_SELECTOR, ".context-head").text
    assert_clean_console(browser)


def test_hybrid_shows_both_legs_and_rerank_is_disabled_without_a_reranker(server, browser):
    open_page(browser, server)
    pick_collection(browser, COLLECTION, len(DOCUMENTS))
    # The server has no reranker: the page says so and does not offer it.
    wait(browser, lambda d: visible(d, "rerank-note"), message="the reranker note")
    assert not by_id(browser, "rerank").is_enabled()
    assert "--reranker" in by_id(browser, "rerank-note").text

    set_mode(browser, "hybrid")
    Select(by_id(browser, "fusion")).select_by_value("rrf")
    search(browser, "lighthouse ships")
    assert not visible(browser, "error"), shown_error(browser)
    summary = by_id(browser, "summary").text
    assert "plan hybrid" in summary, summary
    legs = [leg.text for leg in browser.find_elements(By.CSS_SELECTOR, "#summary .leg")]
    assert len(legs) == 2 and legs[0].startswith("dense") and legs[1].startswith("lexical"), legs
    assert all(leg.endswith(" ms") for leg in legs), legs
    request = by_id(browser, "request-json").get_attribute("textContent")
    assert '"fusion": "rrf"' in request and '"alpha": 0.5' in request, request
    assert hits(browser), "no hits"

    # Grouping by document and MMR exclude each other: choosing one disables the other.
    by_id(browser, "group").click()
    assert not by_id(browser, "mmr").is_enabled()
    search(browser, "lighthouse ships")
    documents = [h["document_id"] for h in hits(browser)]
    assert len(documents) == len(set(documents)), documents
    by_id(browser, "group").click()
    assert by_id(browser, "mmr").is_enabled()
    assert_clean_console(browser)


def test_bad_filters_are_reported(server, browser):
    open_page(browser, server)
    pick_collection(browser, COLLECTION, len(DOCUMENTS))
    set_mode(browser, "lexical")

    # Not JSON: the page says so as it is typed, and sends nothing.
    set_filter(browser, '{"topic": ')
    assert "not valid JSON" in by_id(browser, "filter-status").text
    search(browser, "sourdough")
    error = shown_error(browser)
    assert error["code"] == "invalid_filter", error
    assert "not sent" in error["text"], error
    assert not browser.find_elements(By.CSS_SELECTOR, "#hits > li"), "hits of an unsent query"

    # JSON the server refuses: its code and message are shown.
    set_filter(browser, '{"topic": {"$regex": "fo"}}')
    assert "Valid JSON" in by_id(browser, "filter-status").text
    search(browser, "sourdough")
    error = shown_error(browser)
    assert error["code"] == "bad_filter", error
    assert "HTTP 400" in error["text"], error

    # A filter that works narrows the hits.
    set_filter(browser, '{"topic": "sea"}')
    search(browser, "ships dough")
    assert not visible(browser, "error"), shown_error(browser)
    assert {h["document_id"] for h in hits(browser)} == {"lighthouse"}
    assert_clean_console(browser)


def test_the_page_asks_for_the_api_key(keyed_server, browser):
    want = api_top_hit(keyed_server, "sourdough yeast")
    open_page(browser, keyed_server)

    # The page loads without a key; its first call is refused, and it asks.
    wait(browser, lambda d: visible(d, "key-panel"), message="the key prompt")
    assert "API key" in by_id(browser, "key-reason").text

    # A wrong key: asked again, saying why.
    by_id(browser, "key-input").send_keys("not-the-key")
    by_id(browser, "key-submit").click()
    wait(browser, lambda d: visible(d, "key-panel") and "not valid" in by_id(d, "key-reason").text,
         message="the prompt again after a wrong key")
    assert by_id(browser, "key-button").text == "API key: refused"

    by_id(browser, "key-input").send_keys(KEY)
    by_id(browser, "key-submit").click()
    wait(browser, lambda d: not visible(d, "key-panel"), message="the prompt closed")
    pick_collection(browser, COLLECTION, len(DOCUMENTS))
    assert by_id(browser, "key-button").text == "API key: set"
    set_mode(browser, "lexical")
    search(browser, "sourdough yeast")
    assert not visible(browser, "error"), shown_error(browser)
    top = hits(browser)[0]
    assert (top["document_id"], top["id"]) == ("bread", want["id"]), top

    # The key lives in the page's memory only.
    stored = browser.execute_script(
        "return [localStorage.length, sessionStorage.length, document.cookie];")
    assert stored == [0, 0, ""], stored
    browser.refresh()
    wait(browser, lambda d: visible(d, "key-panel"), message="the prompt after a reload")

    # Cancelled, the page shows the refusal rather than nothing.
    by_id(browser, "key-cancel").click()
    error = shown_error(browser)
    assert error["code"] == "unauthorized" and "HTTP 401" in error["text"], error
    assert_clean_console(browser)


# ---------------------------------------------------------------------------------------------
# The README's screenshot


def readme_sections():
    """The README as documents, one per `##`/`###` section (headings inside code blocks are
    code), each with its title in the metadata."""
    sections, title, lines, fenced = [], "Introduction", [], False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = re.match(r"^(##+) (.+)", line) if not fenced else None
        if heading:
            sections.append((title, lines))
            title, lines = heading.group(2).strip(), []
        else:
            lines.append(line)
    sections.append((title, lines))
    documents = []
    for title, body in sections:
        text = "\n".join(body).strip()
        if not text:
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        documents.append({"id": slug, "text": f"{title}\n\n{text}",
                          "metadata": {"source": "README.md", "section": title}})
    return documents


@pytest.mark.skipif(not os.environ.get("PLAYGROUND_SCREENSHOT"),
                    reason="set PLAYGROUND_SCREENSHOT to a file to take the README's screenshot")
def test_screenshot_of_a_hybrid_search(browser):
    query = os.environ.get("PLAYGROUND_QUERY", "How do I require an API key?")
    documents = readme_sections()
    live = LiveServer()
    try:
        live.create("readme", documents)
        open_page(browser, live)
        # The window's size includes what the browser draws around the page: make the page
        # itself 1280×900.
        extra_w, extra_h = browser.execute_script(
            "return [window.outerWidth - window.innerWidth,"
            " window.outerHeight - window.innerHeight];")
        browser.set_window_size(1280 + extra_w, 900 + extra_h)
        pick_collection(browser, "readme", len(documents))
        set_mode(browser, "hybrid")
        search(browser, query)
        assert not visible(browser, "error"), shown_error(browser)
        shown = hits(browser)
        assert shown, "no hits"
        print(f"top hit for {query!r}: {shown[0]['document_id']} {shown[0]['score']}")
        # No text caret in the picture.
        browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
        maybe_screenshot(browser)
        assert_clean_console(browser)
    finally:
        live.stop()
