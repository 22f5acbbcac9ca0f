"""mi-crow's `LanguageModel.activations.save_activations`, both layers in one pass.

Runs in `.venv-alt/mi-crow`. mi-crow takes texts, not token ids: each text is tokenized on
its own (padded to the longest of its batch, truncated to `max_length`). A whole document
would be cut to one window, so the documents are first cut into `context`-token pieces with
the model's tokenizer and decoded back to text, as a user would prepare them. Layer N is
the module `transformer.h.N` (signature `gpt2lmheadmodel_transformer_h_N`), whose output
is the residual stream after block N.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import torch
from _common import Clock, read_spec, read_texts, report, save_samples
from mi_crow.language_model.language_model import LanguageModel
from mi_crow.store import LocalStore
from safetensors.torch import load_file
from transformers import AutoTokenizer


def window_texts(model: str, texts: list[str], context: int, num_windows: int) -> list[str]:
    """The first `num_windows` pieces of `context` tokens of the documents, as text."""
    tokenizer = AutoTokenizer.from_pretrained(model)
    pieces = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), context):
            pieces.append(tokenizer.decode(ids[start : start + context]))
            if len(pieces) == num_windows:
                return pieces
    return pieces


def main() -> None:
    spec = read_spec()
    out = Path(spec["out"])
    texts = window_texts(
        spec["model"],
        read_texts(spec["corpus"]),
        spec["context"],
        spec["tokens"] // spec["context"],
    )
    signatures = [f"gpt2lmheadmodel_transformer_h_{n}" for n in spec["layers"]]
    with Clock() as clock:
        lm = LanguageModel.from_local_torch(
            spec["model"], spec["model"], LocalStore(out), device="cpu"
        )
        lm.activations.save_activations(
            texts,
            signatures,
            run_name="run",
            batch_size=spec["batch"],
            max_length=spec["context"],
            save_attention_mask=True,
        )
    run = out / "runs" / "run"
    num_batches = len(list(run.glob("batch_*")))
    tokens = stored_rows = 0
    for b in range(num_batches):
        mask_BT = load_file(str(run / f"batch_{b}/attention_masks/attention_mask.safetensors"))
        tokens += int(mask_BT["tensor"].sum())
        stored_rows += mask_BT["tensor"].numel()
    samples = []
    for b, i in ((0, 0), (0, 1), (num_batches - 1, -1)):
        batch_texts = texts[b * spec["batch"] : (b + 1) * spec["batch"]]
        # the same call mi-crow makes (InferenceEngine._prepare_tokenizer_kwargs)
        enc = lm.tokenizer(
            batch_texts, padding="longest", truncation=True, max_length=spec["context"]
        )
        values = {
            n: load_file(str(run / f"batch_{b}/{sig}/activations.safetensors"))["tensor"][i]
            for n, sig in zip(spec["layers"], signatures, strict=True)
        }
        mask = load_file(str(run / f"batch_{b}/attention_masks/attention_mask.safetensors"))
        assert list(mask["tensor"][i].long()) == list(enc["attention_mask"][i])
        samples.append(
            {
                "ids": torch.tensor(enc["input_ids"][i]),
                "mask": mask["tensor"][i].bool(),
                "values": values,
            }
        )
    report(
        tool="mi-crow",
        version=version("mi-crow"),
        tokens=tokens,
        stored_rows=stored_rows,
        seconds=clock.seconds,
        out=str(out),
        hook_names=signatures,
        samples=save_samples(Path(spec["work"]) / "samples-mi-crow.npz", samples),
    )


if __name__ == "__main__":
    main()
