"""Report pages of a store and of an intervention output, built from a real tiny capture.

The numbers inline in each page (`const DATA = ...`) are checked against the source files
and a direct numpy/pandas computation; the browser tests open the pages from file:// in
headless Chromium and check that every chart was drawn (the report's chart helpers mark a
drawn chart's box `chart-drawn`) without a JavaScript error.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.capture import capture
from pipeline.interventions import run_interventions, spec_from_dict
from pipeline.report.interventions import is_intervention_output, write_intervention_report
from pipeline.report.site import write_assets
from pipeline.report.store_pages import (
    is_store,
    norm_histogram,
    sample_units,
    write_store_report,
)
from pipeline.sae import TopKSae
from pipeline.store.reader import ActivationStore, UnfinishedStoreError
from tests.helpers import capture_config

HOOKS = ("layer_1", "layer_3")


@pytest.fixture(scope="module")
def outputs(tiny_gpt2_path, tmp_path_factory):
    """A 1,500-row store (3 units of 512) and a two-stage cascade over it with a tracker."""
    root = tmp_path_factory.mktemp("report-pages")
    capture(
        capture_config(tiny_gpt2_path, root / "store", hooks=HOOKS, max_tokens=1500),
        progress=False,
    )
    torch.manual_seed(3)
    TopKSae(n_latents=64, n_inputs=64, k=8).save(root / "sae_layer_3")
    spec = spec_from_dict(
        {
            "store": str(root / "store"),
            "out": str(root / "effects"),
            "steps": [
                {"name": "half", "layer": "layer_1", "scale": 0.5},
                {"name": "zero", "layer": "layer_3", "ablate": "zero", "positions": [1, 2]},
            ],
            "measure": ["layer_1", "layer_2", "layer_3"],
            "track": [
                {
                    "name": "t3",
                    "layer": "layer_3",
                    "sae": str(root / "sae_layer_3"),
                    "latents": [0, 5],
                }
            ],
        }
    )
    run_interventions(spec, progress=False)
    return root


def site_for(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_assets(site)
    return site


def inline_data(page: Path) -> dict:
    """The page's `const DATA = ...;` as Python."""
    match = re.search(r"const DATA = (.*);\n", page.read_text(encoding="utf-8"))
    assert match, f"no inline DATA in {page}"
    return json.loads(match.group(1))


# --- store ---------------------------------------------------------------------------------


def test_sample_units_spreads_whole_units_evenly_and_takes_at_least_one():
    assert sample_units(list(range(10)), 100, 5000) == list(range(10))
    assert sample_units(list(range(10)), 100, 300) == [0, 4, 9]
    assert sample_units(list(range(10)), 100, 50) == [0]
    assert sample_units([], 100, 300) == []


def test_norms_spanning_decades_get_log_spaced_bins_and_every_row_is_counted():
    rng = np.random.default_rng(0)
    wide = np.concatenate([rng.uniform(1, 2, 995), [500.0, 800.0, 1000.0, 0.5, 3.0]])
    histogram = norm_histogram(wide)
    assert histogram["log"] and sum(histogram["counts"]) == wide.size
    np.testing.assert_allclose(histogram["edges"][0], 0.5)
    np.testing.assert_allclose(histogram["edges"][-1], 1000.0)
    np.testing.assert_allclose(np.diff(np.log(histogram["edges"])), np.log(2000) / 60)
    narrow = norm_histogram(rng.uniform(1, 2, 1000))
    assert not narrow["log"] and sum(narrow["counts"]) == 1000


def test_store_histogram_counts_equal_numpy_norms_of_the_sampled_rows(outputs, tmp_path):
    store_path = outputs / "store"
    page = write_store_report(store_path, site_for(tmp_path), max_rows=1024)
    data = inline_data(page)
    store = ActivationStore.open(store_path)
    assert data["sample"]["units"] == [0, 2]  # 2 of 3 units: first and last
    spans = [store.index.unit_rows(u) for u in data["sample"]["units"]]
    num_rows = sum(b - a for a, b in spans)
    assert data["sample"] == {"units": [0, 2], "rows": num_rows, "num_rows": 1500}
    for hook in data["hooks"]:
        acts = np.concatenate([store.read(hook["hook"], slice(a, b)) for a, b in spans])
        norms = np.linalg.norm(acts.astype(np.float64), axis=1)
        assert sum(hook["counts"]) == hook["rows"] == num_rows
        assert hook["counts"] == np.histogram(norms, bins=np.array(hook["edges"]))[0].tolist()
        np.testing.assert_allclose(hook["stats"]["mean"], norms.mean(), rtol=1e-9)
        np.testing.assert_allclose(hook["stats"]["p99"], np.percentile(norms, 99), rtol=1e-9)
    text = page.read_text(encoding="utf-8")
    assert f"Statistics from {num_rows:,} of 1,500 rows (2 of 3 units with data" in text


def test_store_page_names_the_model_hooks_and_sizes(outputs, tmp_path, tiny_gpt2_path):
    text = write_store_report(outputs / "store", site_for(tmp_path)).read_text(encoding="utf-8")
    assert str(tiny_gpt2_path) in text
    for hook in HOOKS:
        assert f"<td>{hook}</td><td>transformer.h.{hook[-1]}</td><td>64</td>" in text
    assert "<td>rows (tokens stored)</td><td>1500</td>" in text
    assert "from 1,500 of 1,500 rows (3 of 3 units with data, all of them)" in text


def unfinished_copy(outputs: Path, tmp_path: Path) -> Path:
    store = tmp_path / "unfinished"
    shutil.copytree(outputs / "store", store)
    (store / "_SUCCESS").unlink()
    (store / "units" / "unit-00001.json").unlink()
    return store


def test_an_unfinished_store_is_refused_with_the_stores_own_message(outputs, tmp_path):
    store = unfinished_copy(outputs, tmp_path)
    with pytest.raises(UnfinishedStoreError, match="2 of 3 units committed"):
        write_store_report(store, site_for(tmp_path))
    assert not (tmp_path / "site" / "index.html").exists()


def test_a_partial_store_report_samples_committed_units_and_says_so(outputs, tmp_path):
    page = write_store_report(unfinished_copy(outputs, tmp_path), site_for(tmp_path), partial=True)
    assert inline_data(page)["sample"]["units"] == [0, 2]
    assert "Unfinished: 2 of 3 units committed" in page.read_text(encoding="utf-8")


def test_is_store_and_is_intervention_output_tell_the_folders_apart(outputs):
    assert is_store(outputs / "store") and not is_store(outputs / "effects")
    assert is_intervention_output(outputs / "effects")
    assert not is_intervention_output(outputs / "store")


# --- interventions -------------------------------------------------------------------------


def test_intervention_charts_hold_the_summary_means(outputs, tmp_path):
    data = inline_data(write_intervention_report(outputs / "effects", site_for(tmp_path)))
    summary = pd.read_parquet(outputs / "effects" / "summary.parquet")
    assert data["stages"] == ["1: half", "2: half+zero"]
    for column in ("kl", "loss", "loss_base", "top1_agree", "change_layer_2", "t3_5", "t3_5_base"):
        assert data["means"][column] == summary[f"mean_{column}"].tolist(), column
    assert data["layers"] == ["layer_1", "layer_2", "layer_3"]
    assert data["tracked"]["labels"] == ["t3 #0", "t3 #5"]
    assert data["tracked"]["stages"][1] == summary.loc[1, ["mean_t3_0", "mean_t3_5"]].tolist()


def test_intervention_position_profile_and_histogram_match_the_effects(outputs, tmp_path):
    data = inline_data(write_intervention_report(outputs / "effects", site_for(tmp_path)))
    effects = pd.read_parquet(outputs / "effects" / "effects")
    summary = pd.read_parquet(outputs / "effects" / "summary.parquet")
    for index, stage in enumerate(data["profile"]["stages"]):
        rows = effects[effects.stage == index + 1]
        direct = rows.kl.astype("float64").groupby(rows.position).agg(["mean", "count"])
        assert stage["position"] == direct.index.tolist()
        assert stage["tokens"] == direct["count"].tolist()
        np.testing.assert_allclose(stage["kl"], direct["mean"], rtol=1e-9)
        weighted = np.dot(stage["kl"], stage["tokens"]) / sum(stage["tokens"])
        np.testing.assert_allclose(weighted, summary.loc[index, "mean_kl"], rtol=1e-6)
        assert sum(data["histogram"]["counts"][index]) == len(rows) == summary.loc[index, "tokens"]
    lows = np.array(data["histogram"]["log10_low"])
    kl = effects[effects.stage == 2].kl.to_numpy(np.float64)
    in_bins = np.searchsorted(lows, np.log10(np.maximum(kl, 1e-8)), side="right") - 1
    assert data["histogram"]["counts"][1] == np.bincount(in_bins, minlength=len(lows)).tolist()


def test_intervention_page_names_the_steps_and_the_store_when_given(outputs, tmp_path):
    page = write_intervention_report(
        outputs / "effects", site_for(tmp_path), store=outputs / "store"
    )
    text = page.read_text(encoding="utf-8")
    assert "<td>1</td><td>half</td><td>layer_1</td><td>scale x 0.5</td><td>all</td>" in text
    assert "<td>2</td><td>zero</td><td>layer_3</td><td>ablate (zero)</td><td>1, 2</td>" in text
    assert f"<td>store path</td><td>{outputs / 'store'}</td>" in text


def test_an_unfinished_intervention_output_is_refused_naming_how_to_finish(outputs, tmp_path):
    run = tmp_path / "effects"
    shutil.copytree(outputs / "effects", run)
    (run / "_SUCCESS").unlink()
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(run))} is unfinished: 3 units.*jobs\.intervene"
    ):
        write_intervention_report(run, site_for(tmp_path))


# --- in a browser --------------------------------------------------------------------------


DRAWN = "document.querySelectorAll('.chart-drawn').length"
TITLES = "Bokeh.documents.flatMap((d) => d.roots().map((r) => r.title.text))"


def open_charts(browser, page: Path, num_charts: int):
    return browser.open(page, wait_for=f"{DRAWN} >= {num_charts}")


def test_store_page_draws_its_charts_in_a_browser(browser, outputs, tmp_path):
    page = write_store_report(outputs / "store", site_for(tmp_path))
    with open_charts(browser, page, len(HOOKS) + 1) as tab:
        assert tab.errors == []
        assert tab.evaluate(DRAWN) == 3
        assert tab.evaluate(TITLES) == [
            "layer_1: L2 norm per token (1,500 rows)",
            "layer_3: L2 norm per token (1,500 rows)",
            "Mean L2 norm by position in the window",
        ]
        assert "from 1,500 of 1,500 rows" in tab.text()
        tab.screenshot(tmp_path / "store.png", full_page=True)


def test_intervention_page_draws_its_charts_in_a_browser(browser, outputs, tmp_path):
    page = write_intervention_report(outputs / "effects", site_for(tmp_path))
    # kl, loss, top1, layers, tracked, profile, histogram
    with open_charts(browser, page, 7) as tab:
        assert tab.errors == []
        titles = tab.evaluate(TITLES)
        assert len(titles) == 7
        for title in ("KL(baseline || intervened)", "Next-token loss", "Tracked SAE latents"):
            assert any(t.startswith(title) for t in titles), (title, titles)
        assert "ablate (zero)" in tab.text()
        tab.screenshot(tmp_path / "interventions.png", full_page=True)


def test_report_job_refuses_an_unfinished_store_before_writing_and_reports_it_with_partial(
    outputs, tmp_path, capsys
):
    from jobs.report import main as report_main

    store = unfinished_copy(outputs, tmp_path)
    site = tmp_path / "site"
    assert report_main([str(store), "--out", str(site)]) == 2
    assert "unfinished" in capsys.readouterr().err
    assert not site.exists(), "nothing is written for a refused input"
    assert report_main([str(store), "--out", str(site), "--partial"]) == 0
    assert "Unfinished" in (site / "index.html").read_text()
