"""The feature dashboard (`python -m jobs.report` over sae_stats + eval_sae output), opened in
headless Chromium: no console errors, charts drawn, a known latent's contexts on its page."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from jobs.eval_sae import main as eval_main
from jobs.report import main as report_main
from jobs.sae_stats import main as stats_main
from pipeline import TopKSae
from pipeline.capture import capture
from pipeline.store.output_dir import OutputFolderError
from tests.helpers import capture_config

HOOK = "layer_2"
CHARTS_DRAWN = "document.querySelectorAll('.chart-drawn').length >= {n}"


@pytest.fixture(scope="module")
def report(tiny_gpt2_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    capture(capture_config(tiny_gpt2_path, root / "store", hooks=(HOOK,), max_tokens=1500))
    torch.manual_seed(0)
    TopKSae(n_latents=48, n_inputs=64, k=4).save(root / "sae")
    common = ["--store", str(root / "store"), "--hook", HOOK, "--sae", str(root / "sae")]
    assert stats_main([*common, "--out", str(root / "stats"), "--no-ray", "--quiet"]) == 0
    assert eval_main([*common, "--out", str(root / "eval"), "--no-ray", "--quiet"]) == 0
    assert report_main([str(root / "stats"), "--eval", str(root / "eval")]) == 0
    return root


def strongest(root: Path) -> pd.Series:
    """The top example of the most frequent latent."""
    features = pd.read_parquet(root / "stats" / "features.parquet")
    latent = int(features.sort_values("num_fired", ascending=False).latent.iloc[0])
    examples = pd.read_parquet(root / "stats" / "examples.parquet")
    return examples[(examples.latent == latent) & (examples.kind == "top")].iloc[0]


def test_report_writes_a_summary_and_a_page_per_latent(report):
    site = report / "stats-report"
    assert (site / "index.html").is_file()
    assert sorted(p.name for p in (site / "latents").glob("[0-9]*.html")) == sorted(
        f"{i}.html" for i in range(48)
    )
    assert {p.name for p in (site / "assets").iterdir()} >= {"bokeh.min.js", "report.js"}
    html = (site / "index.html").read_text()
    assert "http://" not in html and "https://" not in html, "a report never needs the network"


def test_summary_page_shows_the_metrics_and_draws_its_charts(report, browser, tmp_path):
    page = browser.open(report / "stats-report" / "index.html", wait_for=CHARTS_DRAWN.format(n=2))
    assert page.errors == []
    evaluation = json.loads((report / "eval" / "eval.json").read_text())
    text = page.text()
    assert "CE loss recovered" in text and f"{evaluation['ce_loss_recovered']:.4g}" in text
    assert f"{evaluation['fve']:.4g}" in text
    assert "Firing frequency" in text and "L0" in text
    assert (
        page.evaluate(
            "document.querySelectorAll('.chart-drawn canvas, .chart-drawn .bk-Canvas, .chart-drawn div').length"
        )
        > 0
    )
    shot = page.screenshot(tmp_path / "summary.png", full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_latent_page_shows_its_top_context_shaded(report, browser, tmp_path):
    top = strongest(report)
    path = report / "stats-report" / "latents" / f"{top.latent}.html"
    ready = CHARTS_DRAWN.format(n=1) + " && document.querySelectorAll('.context').length > 0"
    page = browser.open(path, wait_for=ready)
    assert page.errors == []
    first = page.evaluate("document.querySelector('#top .context').textContent")
    assert "".join(top.context_tokens) in first, "the strongest context, as decoded text"
    own = page.evaluate(
        "(() => { const s = document.querySelector('#top .context .tok.own');"
        " return [s.textContent, s.style.backgroundColor]; })()"
    )
    assert own[0] == top.token_text
    assert own[1] == "rgb(255, 140, 0)", "the strongest token is shaded at full strength"
    shaded = page.evaluate("document.querySelectorAll('#top .tok[style]').length")
    assert shaded >= 1
    assert "Output tokens" in page.text() and "promoted" in page.text()
    assert page.evaluate("document.querySelectorAll('[id^=samples-] .context').length") > 0
    page.screenshot(tmp_path / "latent.png", full_page=True)


def test_jump_box_goes_to_a_latent_and_refuses_an_unknown_one(report, browser):
    page = browser.open(report / "stats-report" / "index.html", wait_for="document.forms.length")
    page.evaluate(
        "document.querySelector('nav input').value = '99';"
        "document.querySelector('nav form').requestSubmit()"
    )
    assert "no latent 99 (0 to 47)" in page.evaluate(
        "document.querySelector('.jump-note').textContent"
    )
    page.evaluate(
        "document.querySelector('nav input').value = '7';"
        "document.querySelector('nav form').requestSubmit()"
    )
    deadline = time.monotonic() + 10
    while not str(page.evaluate("location.href")).endswith("/latents/7.html"):
        assert time.monotonic() < deadline, "the jump box did not open latents/7.html"
        time.sleep(0.05)


def test_report_refuses_what_it_cannot_draw_and_keeps_earlier_reports(report, tmp_path):
    from pipeline.report import write_report

    with pytest.raises(ValueError, match="none of what a report draws"):
        write_report(tmp_path, tmp_path / "site")
    with pytest.raises(OutputFolderError, match="already holds a report; pass --overwrite"):
        write_report(report / "stats", report / "stats-report")
    with pytest.raises(OutputFolderError, match="inside its input"):
        write_report(report / "stats", report / "stats" / "site")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputFolderError, match="notes.txt"):
        write_report(report / "stats", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
