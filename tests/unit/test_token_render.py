"""Examples show decoded text with the token marked: no tokenizer pieces, spaces kept."""

from __future__ import annotations

from transformers import AutoTokenizer

from pipeline.model.defaults import default_model_path
from pipeline.model.render import TokenRenderer


def test_wordpiece_tokens_render_as_text_with_the_token_marked():
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    ids = tokenizer("The tokenizing works, Mr. Smith!")["input_ids"]
    renderer = TokenRenderer(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[3] == "##izing"
    assert renderer.context(ids, 3) == ("the token[[izing]] works, mr. smith!", "izing")
    assert renderer.context(ids, 4) == ("the tokenizing[[ works]], mr. smith!", " works")
    assert renderer.context(ids, 0) == ("[[[CLS]]]the tokenizing works, mr. smith!", "[CLS]")
    for i in range(len(ids)):  # marks removed, every context is the decoded text
        marked, token = renderer.context(ids, i)
        if pieces[i] not in tokenizer.all_special_tokens:
            assert marked.replace("[[", "").replace("]]", "") == renderer.decode(ids)
