"""Text tracking: per latent, the top activations over many batches, bounded in memory."""

from __future__ import annotations

import torch

from pipeline.sae import TopKSae
from tests.helpers import pydoc_texts

TOP_K = 3


def snippets(num_batches: int = 6, batch_size: int = 4) -> list[list[str]]:
    texts = [
        text.strip()[: 20 + 13 * (i % 7)]
        for i, text in enumerate(pydoc_texts(num_batches * batch_size))
    ]
    return [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]


def brute_force_top(batches_codes, texts, latent):
    """Every positive code of `latent`, ranked by value then by order of appearance."""
    candidates, order, first_row = [], 0, 0
    for codes, num_rows in batches_codes:
        for n in range(len(codes)):
            value = float(codes.latent(latent)[n])
            if value > 0:
                row = first_row + int(codes.batch_N[n])
                candidates.append((-value, order, texts[row], int(codes.position_N[n])))
            order += 1
        first_row += num_rows
    return [(-v, text, pos) for v, _, text, pos in sorted(candidates)[:TOP_K]]


def test_top_texts_over_many_batches_match_a_brute_force_ranking(tiny_lm):
    torch.manual_seed(0)
    sae = TopKSae(n_latents=32, n_inputs=64, k=4)
    tiny_lm.attach_sae(sae, layer_signature="layer_2")
    sae.concepts.enable_text_tracking(top_k=TOP_K)
    seen, all_texts = [], []
    for batch in snippets():
        tiny_lm.inference.execute_inference(batch)
        seen.append((sae.get_captured(), len(batch)))
        all_texts.extend(batch)
    for latent in range(sae.n_latents):
        expected = brute_force_top(seen, all_texts, latent)
        got = [
            (entry.score, entry.text, entry.position)
            for entry in sae.concepts.get_top_texts(latent)
        ]
        assert got == expected, latent


def test_top_text_entries_name_the_token_at_their_position(tiny_lm):
    torch.manual_seed(1)
    sae = TopKSae(n_latents=32, n_inputs=64, k=4)
    tiny_lm.attach_sae(sae, layer_signature="layer_0")
    sae.concepts.enable_text_tracking(top_k=2)
    batch = snippets(1)[0]
    _, encodings = tiny_lm.inference.execute_inference(batch)
    for latent in range(sae.n_latents):
        for entry in sae.concepts.get_top_texts(latent):
            token_id = int(encodings["input_ids"][entry.text_row, entry.position])
            assert entry.token_id == token_id
            assert entry.token == tiny_lm.tokenizer.decode([token_id])
            assert entry.text == batch[entry.text_row]


def test_tracking_memory_stays_bounded_by_latents_times_top_k(tiny_lm):
    torch.manual_seed(2)
    sae = TopKSae(n_latents=16, n_inputs=64, k=2)
    tiny_lm.attach_sae(sae, layer_signature="layer_1")
    sae.concepts.enable_text_tracking(top_k=2)
    for batch in snippets(num_batches=8):
        tiny_lm.inference.execute_inference(batch)
    tracker = sae.concepts.tracker
    assert tracker.num_text_rows == 32
    # Deduplication (the default) ranks 2 * top_k candidates per latent, so that top_k
    # distinct ones remain: memory is bounded by latents x 2 x top_k.
    assert len(tracker._ids) <= 16 * 2 * 2
    assert len(tracker._texts) <= len(tracker._ids)
    sae.concepts.enable_text_tracking(top_k=2, dedupe=False)
    for batch in snippets(num_batches=8):
        tiny_lm.inference.execute_inference(batch)
    assert len(sae.concepts.tracker._ids) <= 16 * 2


def test_texts_run_twice_are_listed_once_with_the_token_marked(tiny_lm):
    torch.manual_seed(3)
    sae = TopKSae(n_latents=16, n_inputs=64, k=2)
    tiny_lm.attach_sae(sae, layer_signature="layer_1")
    sae.concepts.enable_text_tracking(top_k=3)
    batch = snippets(1)[0]
    for _ in range(2):
        tiny_lm.inference.execute_inference(batch)
    frame = sae.concepts.top_texts_frame()
    assert not frame.duplicated(["latent", "text", "position"]).any()
    assert (frame.groupby("latent").size() <= 3).all()
    assert all("[[" in m and m.replace("[[", "").replace("]]", "") for m in frame.marked)

    sae.concepts.enable_text_tracking(top_k=3, dedupe=False)
    for _ in range(2):
        tiny_lm.inference.execute_inference(batch)
    assert sae.concepts.top_texts_frame().duplicated(["latent", "text", "position"]).any()


def test_top_texts_frame_has_one_row_per_latent_and_rank(tiny_lm):
    torch.manual_seed(3)
    sae = TopKSae(n_latents=16, n_inputs=64, k=4)
    tiny_lm.attach_sae(sae, layer_signature="layer_1")
    sae.concepts.enable_text_tracking(top_k=2)
    tiny_lm.inference.execute_inference(snippets(1)[0])
    frame = sae.concepts.top_texts_frame()
    assert list(frame.columns[:6]) == ["latent", "rank", "score", "text", "token", "position"]
    assert len(frame) == sum(len(sae.concepts.get_top_texts(i)) for i in range(16))
    first = frame[(frame.latent == frame.latent.iloc[0]) & (frame["rank"] == 0)].iloc[0]
    assert first.score == sae.concepts.get_top_texts(int(first.latent))[0].score
