"""tests/browser.py itself: every kind of page error is reported, and pages can be inspected."""

from __future__ import annotations

import struct

import pytest

from tests.browser import Browser, JavaScriptError

pytestmark = pytest.mark.timeout(30)  # each takes about a second; a hang must not cost 10 minutes


def write_page(tmp_path, body: str, name: str = "page.html"):
    path = tmp_path / name
    path.write_text(
        f"<!doctype html><html><head><meta charset=utf-8></head><body>{body}</body></html>"
    )
    return path


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


DRAWING = """<h1>Hello harness</h1><canvas id="c" width="300" height="150"></canvas>
<script>
  document.title = "drawn";
  const g = document.getElementById("c").getContext("2d");
  g.fillStyle = "#c33";
  g.fillRect(10, 10, 200, 100);
</script>"""


def test_page_whose_script_runs_cleanly_has_no_errors_and_can_be_evaluated(browser, tmp_path):
    with browser.open(write_page(tmp_path, DRAWING)) as page:
        assert page.errors == []
        assert page.evaluate("document.title") == "drawn"
        assert page.evaluate("Promise.resolve({n: [1, 2]})") == {"n": [1, 2]}
        assert page.text() == "Hello harness"
        assert page.url.startswith("file://") and 0 < page.load_seconds < 30


def test_screenshot_is_a_png_of_the_requested_viewport(browser, tmp_path):
    with browser.open(write_page(tmp_path, DRAWING), width=640, height=480) as page:
        data = page.screenshot(tmp_path / "shot.png").read_bytes()
    assert png_size(data) == (640, 480)
    assert len(data) > 1024  # a blank PNG of this size is far smaller


def test_full_page_screenshot_covers_the_whole_document(browser, tmp_path):
    page_path = write_page(tmp_path, '<div style="height: 2000px">tall</div>')
    with browser.open(page_path, width=640, height=480) as page:
        width, height = png_size(
            page.screenshot(tmp_path / "full.png", full_page=True).read_bytes()
        )
    assert width == 640 and height >= 2000


def test_uncaught_exception_is_an_error_naming_the_page(browser, tmp_path):
    with browser.open(write_page(tmp_path, '<script>throw new Error("boom")</script>')) as page:
        assert any("Error: boom" in error and "page.html" in error for error in page.errors)


def test_missing_script_file_is_an_error_naming_the_file(browser, tmp_path):
    with browser.open(write_page(tmp_path, '<script src="missing.js"></script>')) as page:
        assert page.errors and all("missing.js" in error for error in page.errors)


def test_console_error_is_an_error(browser, tmp_path):
    with browser.open(write_page(tmp_path, '<script>console.error("bad")</script>')) as page:
        assert [error for error in page.errors if "console.error: bad" in error]


def test_evaluate_raises_the_javascript_exception(browser, tmp_path):
    with (
        browser.open(write_page(tmp_path, "<p>x</p>")) as page,
        pytest.raises(JavaScriptError, match="ReferenceError: nothing is not defined"),
    ):
        page.evaluate("nothing.here")


def test_wait_for_waits_for_a_page_that_renders_after_load(browser, tmp_path):
    body = "<script>setTimeout(() => { window.ready = true; }, 300)</script>"
    with browser.open(write_page(tmp_path, body), wait_for="window.ready", timeout=5) as page:
        assert page.evaluate("window.ready") is True
        assert page.load_seconds >= 0.3


def test_wait_for_that_never_holds_raises_assertion_naming_the_expression(browser, tmp_path):
    with pytest.raises(AssertionError, match=r"wait_for 'window\.never'"):
        browser.open(write_page(tmp_path, "<p>x</p>"), wait_for="window.never", timeout=0.5)


def test_leaving_the_browser_after_a_failure_stops_chromium_and_removes_its_profile(browser):
    # `browser` only brings its skip-or-fail rule: this test starts a Chromium of its own.
    with pytest.raises(ValueError), Browser() as chromium:
        process, profile = chromium._process, chromium._profile
        raise ValueError("the test body failed")
    assert process.poll() is not None
    assert not profile.exists()
