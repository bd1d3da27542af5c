"""The chat page at `/` as a user drives it: headless Chromium against `gptlab serve`.

The served model is GPT-2 124M with random weights: its answers are noise, but slow enough on a
CPU to press Stop in the middle of one. What the page sends is read from Chrome's network log.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from e2e.servers import Server, start_server

KEY = "page-test-key"
MODEL_INFO = "random-gpt2 · float32 · 1,024-token context"
MARKDOWN = """### Steps
1. Install **gptlab**
2. Run `gptlab serve`, then *read* [the `docs`](https://example.com/a_b?x=1&y=2)
   - nested item
- plain item

---
```python
print("<b>hi</b>")
if a < b and c > d: pass
```
<img src=x onerror="window.pwned = 1"> <script>window.pwned = 2</script> [bad](javascript:window.pwned=3)"""


@pytest.fixture(scope="module")
def server(classifier_run, tmp_path_factory) -> Iterator[Server]:
    """Random GPT-2 behind a key, with default settings from the flags and a topic classifier."""
    flags = ("--name", "random-gpt2", "--dtype", "float32", "--api-key", KEY, "--temperature", "0.7", "--top-k", "40",
             "--max-tokens", "3", "--system", "You are terse.", "--classifier", str(classifier_run))
    running = start_server("gpt2", tmp_path_factory.mktemp("page") / "server.log", *flags)
    yield running
    assert running.stop() == 0


def chromium() -> webdriver.Chrome:
    """Headless Debian chromium with its own driver (no browser download; `scripts/browser.sh` installs it)."""
    browser, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (browser and driver):
        message = "chromium and chromedriver are not installed (bash scripts/browser.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    # the network events (what was sent and received) and the console (where the page's CSP reports)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=options, service=ChromeService(executable_path=driver))


@dataclass
class Page:
    """The chat page in one browser tab, with the steps a user takes."""

    driver: webdriver.Chrome
    url: str

    def open(self) -> None:
        """The page with an empty conversation (the API key stays in the tab from an earlier test)."""
        self.driver.get(self.url + "/")
        self.driver.execute_script("localStorage.clear()")
        self.reload()
        if not self.find("#api-key").get_attribute("value"):
            self.show_settings()
            self.find("#api-key").send_keys(KEY, Keys.TAB)
        self.wait(lambda: self.find("#model-info").text == MODEL_INFO)
        self.network()  # forget what loading sent

    def reload(self) -> None:
        self.driver.refresh()
        self.wait(lambda: self.find("#model-info").text != "connecting…")

    def show_settings(self) -> None:
        if not self.find("#settings").is_displayed():
            self.click("#settings-toggle")

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str]:
        return [element.text for element in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def click(self, css: str) -> None:
        self.find(css).click()

    def wait(self, condition: Callable[[], Any], seconds: float = 60) -> None:
        WebDriverWait(self.driver, seconds).until(lambda _: condition())

    def type(self, css: str, text: str) -> None:
        """Replace a field's text, as a user selects it all and types."""
        field = self.find(css)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE, *([text] if text else []))

    def idle(self) -> bool:
        return self.find("#send").is_enabled() and not self.find("#stop").is_enabled()

    def ask(self, *keys: str) -> str:
        """Type a message (Enter sends it) and wait for the whole answer."""
        self.find("#input").send_keys(*keys, Keys.ENTER)
        self.wait(self.idle)
        return self.last_answer()

    def last_answer(self) -> str:
        return (self.texts(".assistant") or [""])[-1]

    def network(self) -> list[dict[str, Any]]:
        """Chrome's network events since the last call."""
        return [json.loads(entry["message"])["message"] for entry in self.driver.get_log("performance")]


def sent(events: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """The requests the page posted to `path`: {"id", "headers", "body"} each."""
    requests = [e["params"] for e in events if e["method"] == "Network.requestWillBeSent"
                and e["params"]["request"]["url"].endswith(path) and e["params"]["request"]["method"] == "POST"]
    return [{"id": r["requestId"], "headers": r["request"]["headers"], "body": json.loads(r["request"]["postData"])}
            for r in requests]


@pytest.fixture(scope="module")
def page(server) -> Iterator[Page]:
    driver = chromium()
    try:
        yield Page(driver, server.url)
    finally:
        driver.quit()


def test_a_key_unlocks_the_page_and_the_settings_start_from_the_servers_flags(page):
    page.driver.get(page.url + "/")
    page.driver.execute_script("localStorage.clear(); sessionStorage.clear()")
    page.reload()  # the page is public; what it asks the server for needs the key: 401
    page.wait(lambda: page.find("#key-hint").is_displayed())
    assert "API key" in page.find("#key-hint").text and page.find("#settings").is_displayed()
    assert page.driver.switch_to.active_element == page.find("#api-key")
    assert page.find("#model-info").text.startswith("not connected: missing or wrong API key")
    assert not page.find("#send").is_enabled()
    page.find("#api-key").send_keys(KEY, Keys.TAB)
    page.wait(lambda: page.find("#model-info").text == MODEL_INFO)
    assert not page.find("#key-hint").is_displayed()
    settings = {field: page.find(f"#{field}").get_attribute("value")
                for field in ("temperature", "top-k", "top-p", "max-tokens", "system")}
    assert settings == {"temperature": "0.7", "top-k": "40", "top-p": "", "max-tokens": "",
                        "system": "You are terse."}
    assert page.find("#max-tokens").get_attribute("placeholder") == "server default: 3"
    assert page.find("#tab-classify").is_displayed()  # the server has a classifier


def test_settings_shape_the_request_regenerate_asks_again_and_a_reload_keeps_the_chat(page):
    page.open()
    first = page.ask("Hello")
    [request] = sent(page.network(), "/v1/chat/completions")
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["body"] == {"model": "random-gpt2", "stream": True, "temperature": 0.7, "top_k": 40,
                               "messages": [{"role": "system", "content": "You are terse."},
                                                             {"role": "user", "content": "Hello"}]}
    page.show_settings()
    for field, value in (("#temperature", "0"), ("#top-k", ""), ("#top-p", "0.5"), ("#max-tokens", "4"),
                         ("#system", "Answer in French.")):
        page.type(field, value)
    page.click("#regenerate")
    page.wait(page.idle)
    [request] = sent(page.network(), "/v1/chat/completions")
    assert request["body"] == {"model": "random-gpt2", "stream": True, "temperature": 0, "top_p": 0.5,
                               "max_tokens": 4, "messages": [{"role": "system", "content": "Answer in French."},
                                                             {"role": "user", "content": "Hello"}]}
    assert page.texts(".user") == ["Hello"] and len(page.texts(".assistant")) == 1  # the answer was replaced
    regenerated = page.texts(".assistant")[0]
    page.click("#reset-settings")
    assert page.find("#temperature").get_attribute("value") == "0.7"
    assert page.find("#system").get_attribute("value") == "You are terse."
    assert regenerated and first  # both answers arrived (noise, so not compared)
    page.ask("line one", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "line two")  # Shift+Enter: a new line, not sent
    [request] = sent(page.network(), "/v1/chat/completions")
    assert request["body"]["messages"][1:] == [{"role": "user", "content": "Hello"},
                                               {"role": "assistant", "content": regenerated},
                                               {"role": "user", "content": "line one\nline two"}]
    conversation = page.texts(".message")
    page.reload()
    assert page.texts(".message") == conversation and len(conversation) == 4
    page.click("#new-chat")
    page.reload()
    assert page.texts(".message") == []


def test_an_answer_over_the_context_is_refused_with_the_servers_reason(page):
    page.open()
    page.show_settings()
    page.type("#max-tokens", "1025")  # over the context: the field says so, nothing is sent
    page.find("#input").send_keys("Hello", Keys.ENTER)
    assert page.find("#max-tokens").get_attribute("validationMessage")
    assert page.texts(".message") == [] and sent(page.network(), "/v1/chat/completions") == []
    assert page.find("#input").get_attribute("value") == "Hello"  # kept for the next try
    page.type("#max-tokens", "1024")  # fits the field, but not beside the prompt: the server refuses
    assert page.ask() == ""
    assert "this model's context is 1024 tokens" in page.find(".error").text
    assert page.texts(".user") == ["Hello"] and page.find("#regenerate").is_enabled()  # the question waits


def test_stop_aborts_the_stream_and_keeps_what_came(page):
    page.open()
    page.show_settings()
    page.type("#max-tokens", "900")  # a minute or more of noise on a CPU
    page.find("#input").send_keys("Tell me a long story.", Keys.ENTER)
    page.wait(page.last_answer)  # the first words have come
    page.click("#stop")
    page.wait(page.idle)
    events = page.network()
    [request] = sent(events, "/v1/chat/completions")
    assert [e["params"]["canceled"] for e in events if e["method"] == "Network.loadingFailed"
            and e["params"]["requestId"] == request["id"]] == [True]  # the page closed the stream
    stopped = page.last_answer()
    assert stopped.endswith("stopped") and len(stopped) > len("stopped")
    page.find("#input").send_keys("Another one.", Keys.ENTER)
    page.wait(lambda: len(page.texts(".assistant")) == 2 and page.last_answer())
    page.find("#input").send_keys(Keys.ESCAPE)  # Esc stops too
    page.wait(page.idle)
    assert page.last_answer().endswith("stopped")
    page.type("#max-tokens", "2")
    page.ask("Thanks.")  # and the next question is answered
    assert page.texts(".assistant")[0] == stopped and len(page.texts(".assistant")) == 3


def test_markdown_answers_render_and_their_html_stays_text(page, tmp_path):
    page.open()
    stored = [{"role": "user", "content": "How do I start?"}, {"role": "assistant", "content": MARKDOWN}]
    page.driver.execute_script("localStorage.setItem('gptlab.conversation', arguments[0])", json.dumps(stored))
    page.reload()
    assert page.find(".assistant h3").text == "Steps"
    assert page.texts(".assistant ol > li > strong") == ["gptlab"]
    assert page.texts(".assistant ol > li > ul > li") == ["nested item"]
    assert page.texts(".assistant ol + ul > li") == ["plain item"]
    assert len(page.driver.find_elements(By.CSS_SELECTOR, ".assistant ul + hr + .code")) == 1
    assert page.texts(".assistant li code") == ["gptlab serve", "docs"] and page.texts(".assistant li em") == ["read"]
    link = page.find(".assistant li a")
    assert (link.text, link.get_attribute("href")) == ("the docs", "https://example.com/a_b?x=1&y=2")
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert page.find(".assistant pre code.language-python").text == 'print("<b>hi</b>")\nif a < b and c > d: pass'
    assert page.driver.find_elements(By.CSS_SELECTOR, ".assistant img, .assistant script, .assistant b") == []
    assert '<img src=x onerror="window.pwned = 1">' in page.find(".assistant p").text
    assert page.texts(".assistant a") == ["the docs"]  # the javascript: link stays text
    assert page.driver.execute_script("return window.pwned") is None
    page.driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": page.url, "permissions": [
        "clipboardReadWrite", "clipboardSanitizedWrite"]})
    page.click(".assistant .copy")
    page.wait(lambda: page.find(".assistant .copy").text == "Copied")
    clipboard = page.driver.execute_async_script("navigator.clipboard.readText().then(arguments[0])")
    assert clipboard == 'print("<b>hi</b>")\nif a < b and c > d: pass'
    page.driver.save_screenshot(str(tmp_path / "chat-page.png"))
    assert (tmp_path / "chat-page.png").read_bytes()[:4] == b"\x89PNG"


HOSTILE = [  # model text that tries to run script in the page: each must stay text or a harmless tag
    '<img src=x onerror="window.pwned = 1">',
    "<script>window.pwned = 2</script>",
    '<svg onload="window.pwned = 3"></svg>',
    '<iframe src="javascript:parent.pwned = 4"></iframe>',
    "[a](javascript:window.pwned=5)",
    "[a](JaVaScRiPt:window.pwned=6)",
    "[a](data:text/html,<script>parent.pwned=7</script>)",
    "[a](vbscript:msgbox)",
    '[a](https://example.com"onmouseover="window.pwned=9)',
    "[a](/x'onmouseover='window.pwned=10')",
    '![a](x"onerror="window.pwned=11)',
    "`<img src=x onerror=window.pwned=12>`",
    "```html\n<script>window.pwned = 13</script>\n```",
    '```x" onmouseover="window.pwned=14\ncode\n```',
    '<a href="javascript:window.pwned = 15">a</a>',
    "**<img src=x onerror=window.pwned=16>** _<b onclick=window.pwned=16>b</b>_",
    '<details open ontoggle="window.pwned = 17"><summary>x</summary></details>',
    '<math><mtext><table><mglyph><style><img src=x onerror="window.pwned = 18">',
    "&lt;img src=x onerror=window.pwned=19&gt; &#60;script&#62;window.pwned=19&#60;/script&#62;",
    '<input autofocus onfocus="window.pwned = 20">',
    "[<img src=x onerror=window.pwned=21>](https://example.com)",
    "# <svg/onload=window.pwned=22>\n- <img src=x onerror=window.pwned=22>\n1. [x](javascript:window.pwned=22)",
    '<meta http-equiv="refresh" content="0;url=javascript:window.pwned=23">',
    "\u0000<script>window.pwned = 24</script><base href=\"javascript:window.pwned=24//\">[a](/b)",
]
MADE_BY_THE_PAGE = ["p", "br", "strong", "em", "code", "a", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "hr",
                    "div", "span", "pre", "button"]


def test_hostile_markdown_in_answers_runs_nothing(page):
    """24 answers built to run script: none adds an element the renderer does not make, an event
    handler or a script URL, whatever the page's Content-Security-Policy would also block."""
    page.open()
    stored = [message for payload in HOSTILE for message in ({"role": "user", "content": "Say something."},
                                                            {"role": "assistant", "content": payload})]
    page.driver.execute_script("localStorage.setItem('gptlab.conversation', arguments[0])", json.dumps(stored))
    page.reload()
    assert len(page.texts(".assistant")) == len(HOSTILE)
    found = page.driver.execute_script("""
        const made = new Set(arguments[0]), found = [];
        for (const element of document.querySelectorAll(".assistant *")) {
          if (!made.has(element.localName)) found.push(element.outerHTML);
          for (const attribute of element.attributes)
            if (/^on/i.test(attribute.name) || /^\\s*(javascript|data|vbscript):/i.test(attribute.value))
              found.push(element.outerHTML);
        }
        return found;""", MADE_BY_THE_PAGE)
    assert found == []
    assert page.driver.execute_script("return window.pwned") is None
    assert "<script>window.pwned = 2</script>" in page.texts(".assistant")[1]  # shown as text


def test_the_page_comes_with_security_headers_and_breaks_none_of_its_policy(page):
    """The page's headers as the browser received them; a chat answered under them; and no CSP report
    in the console over every test of this module (a blocked script or style of the page's own)."""
    page.open()
    page.reload()
    [document] = [e["params"]["response"] for e in page.network() if e["method"] == "Network.responseReceived"
                  and e["params"]["type"] == "Document"]
    headers = {name.lower(): value for name, value in document["headers"].items()}
    assert headers["content-security-policy"].startswith("default-src 'none'; script-src 'sha256-")
    assert (headers["x-frame-options"], headers["x-content-type-options"], headers["referrer-policy"]) == (
        "DENY", "nosniff", "no-referrer")
    assert page.ask("Hello")  # the page's script runs, calls the API and renders the answer
    console = [entry["message"] for entry in page.driver.get_log("browser")]
    assert [line for line in console if "Content Security Policy" in line] == []


def test_the_classify_tab_labels_a_text(page, tmp_path):
    page.open()
    page.click("#tab-classify")
    assert page.find("#classify-panel").is_displayed() and not page.find("#chat-panel").is_displayed()
    page.find("#classify-input").send_keys("pizza soup bread salad today", Keys.ENTER)
    page.wait(lambda: page.find("#classify-label").text)
    assert page.find("#classify-label").text == "food"
    assert sent(page.network(), "/v1/classify")[0]["body"] == {"input": "pizza soup bread salad today"}
    rows = [row.text.split() for row in page.driver.find_elements(By.CSS_SELECTOR, "#classify-probabilities tr")]
    assert [row[0] for row in rows][0] == "food" and sorted(row[0] for row in rows) == ["food", "sport", "weather"]
    assert sum(float(row[-1].rstrip("%")) for row in rows) == pytest.approx(100, abs=0.2)
    page.driver.save_screenshot(str(tmp_path / "classify-tab.png"))
    assert (tmp_path / "classify-tab.png").read_bytes()[:4] == b"\x89PNG"
    page.find("#tab-classify").send_keys(Keys.ARROW_LEFT)  # the keyboard way back
    assert page.find("#chat-panel").is_displayed() and not page.find("#classify-panel").is_displayed()
    assert page.driver.switch_to.active_element == page.find("#tab-chat")


RENDERED = {  # what the page's renderer makes of the corner cases of streamed model text
    "2 * 3 * 4 and snake_case_name": "<p>2 * 3 * 4 and snake_case_name</p>",
    "**bold** _it_ ***both***": "<p><strong>bold</strong> <em>it</em> <strong><em>both</em></strong></p>",
    "```js\nlet a = 1 && b": '<div class="code"><div class="code-bar"><span class="language">js</span><button '
                           'type="button" class="copy secondary">Copy</button></div><pre><code class="language-js">'
                           "let a = 1 &amp;&amp; b</code></pre></div>",  # a fence still streaming in
    "3. three\n4. four\n   * sub\n     more": '<ol start="3"><li>three</li><li>four<ul><li>sub<br>more</li></ul></li>'
                                             "</ol>",
    "## Title ##\nline one\nline two\n\n***": "<h2>Title</h2><p>line one<br>line two</p><hr>",
    "[a](data:text/html,x) [b](/here) `<i>`": '<p>[a](data:text/html,x) <a href="/here" target="_blank" '
                                              'rel="noopener noreferrer">b</a> <code>&lt;i&gt;</code></p>',
    "\u0000 \" ' &": "<p> &quot; &#39; &amp;</p>",
}


def test_the_markdown_renderer_on_the_corner_cases_of_streamed_text(page):
    page.open()
    rendered = page.driver.execute_script("return arguments[0].map(renderMarkdown)", list(RENDERED))
    assert dict(zip(RENDERED, rendered)) == RENDERED
