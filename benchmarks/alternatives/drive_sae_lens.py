"""SAELens' `CacheActivationsRunner`, one run per layer (it caches one `hook_name` a run).

Runs in `.venv-alt/sae-lens`. SAELens loads models through TransformerLens, whose
`HookedTransformer.from_pretrained` accepts only names from its list of official models and
reads that model's Hugging Face config from the hub, also when `hf_model=` is given. It
treats the name as a local folder when a folder of that name exists in the working
directory, so the benchmark runs this driver in a folder holding `gpt2/` (the local model);
`HF_HUB_OFFLINE=1` makes any hub access fail instead of downloading. Layer N is
`blocks.N.hook_resid_post`, the residual stream after block N.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import torch
from _common import Clock, read_spec, read_texts, report, save_samples
from datasets import Dataset, load_from_disk
from sae_lens import CacheActivationsRunner, CacheActivationsRunnerConfig

BUFFERS = 4  # the buffer is sized so that BUFFERS buffers hold exactly the run's tokens


def runner_config(spec: dict, layer: int, d_model: int, out: Path) -> CacheActivationsRunnerConfig:
    hook_name = f"blocks.{layer}.hook_resid_post"
    bytes_per_token = d_model * torch.tensor([], dtype=getattr(torch, spec["dtype"])).itemsize
    tokens_per_buffer = spec["tokens"] // BUFFERS
    config = CacheActivationsRunnerConfig(
        dataset_path="pydoc",  # unused: the documents come as override_dataset
        model_name="gpt2",  # resolved to ./gpt2, the local model (see the module docstring)
        model_class_name="HookedTransformer",
        hook_name=hook_name,
        d_in=d_model,
        training_tokens=spec["tokens"],
        context_size=spec["context"],
        model_batch_size=spec["batch"],
        new_cached_activations_path=str(out / hook_name),
        shuffle=False,  # stored in order, like the others
        dtype=spec["dtype"],
        device="cpu",
        # n_tokens_in_buffer = int(buffer_size_gb * 1e9) // bytes_per_token, rounded down to
        # whole batches: half a token of slack makes the division land on tokens_per_buffer.
        buffer_size_gb=(tokens_per_buffer + 0.5) * bytes_per_token / 1e9,
    )
    assert config.n_tokens_in_buffer * config.n_buffers == spec["tokens"], config
    return config


def main() -> None:
    spec = read_spec()
    out = Path(spec["out"])
    texts = read_texts(spec["corpus"])
    d_model = spec["d_model"]
    with Clock() as clock:
        for layer in spec["layers"]:
            config = runner_config(spec, layer, d_model, out)
            CacheActivationsRunner(
                config, override_dataset=Dataset.from_dict({"text": texts})
            ).run()
    samples = []
    datasets = {n: load_from_disk(str(out / f"blocks.{n}.hook_resid_post")) for n in spec["layers"]}
    num_windows = len(datasets[spec["layers"][0]])
    for window in (0, 1, num_windows - 1):
        values, ids = {}, None
        for n, dataset in datasets.items():
            row = dataset.with_format("torch")[window]
            values[n] = row[f"blocks.{n}.hook_resid_post"]
            assert ids is None or torch.equal(ids, row["token_ids"].long())
            ids = row["token_ids"].long()
        samples.append(
            {"ids": ids, "mask": torch.ones(len(ids), dtype=torch.bool), "values": values}
        )
    num_rows = num_windows * spec["context"]
    report(
        tool="SAELens",
        version=version("sae-lens"),
        versions={"transformer-lens": version("transformer-lens")},
        tokens=num_rows,
        stored_rows=num_rows,
        seconds=clock.seconds,
        out=str(out),
        hook_names=[f"blocks.{n}.hook_resid_post" for n in spec["layers"]],
        samples=save_samples(Path(spec["work"]) / "samples-sae-lens.npz", samples),
    )


if __name__ == "__main__":
    main()
