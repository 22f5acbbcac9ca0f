"""Our capture next to SAELens' `CacheActivationsRunner` and mi-crow's activation saving.

Every tool does the same work in the same run: a GPT-2-small-shaped model (12 blocks,
d=768, random weights from a fixed seed, `save_pretrained` into a temporary folder with a
byte-level BPE tokenizer trained on the corpus), the pydoc corpus, the residual stream
after blocks 1 and 3, windows of 128 tokens, batches of 8, 65,536 tokens, float32 on disk
(ours also in its default float16), 2 torch threads.

Each tool runs in a subprocess from its own virtual environment (`make bench-alternatives`
creates `.venv-alt/<tool>`), through a driver in `benchmarks/alternatives/` that prints one
JSON line: tokens, seconds, peak RSS (`ru_maxrss`), output folder and a few stored windows.
The clock runs from model loading to the last file written; imports are outside it. This
process measures the baseline, the same model forward stopped after block 3 on our batches,
and checks the sample windows against a plain Hugging Face forward of the same tokens.
Nothing downloads: the drivers run with `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.capture import unit_batches
from benchmarks.corpora import repeated_pydoc_jsonl
from benchmarks.timing import markdown_table

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = Path(__file__).resolve().parent / "alternatives"
LAYERS = (1, 3)
CONTEXT, BATCH, TOKENS = 128, 8, 65_536
SKIPPED = "skipped: run make bench-alternatives"
TOLERANCE = {"float32": 1e-5, "float16": 1e-3}  # rtol = atol for allclose at the stored dtype


@dataclass(frozen=True)
class Case:
    label: str
    driver: str
    python: Path
    dtype: str


CASES = (
    Case("ours (float16, default)", "drive_ours.py", Path(sys.executable), "float16"),
    Case("ours (float32)", "drive_ours.py", Path(sys.executable), "float32"),
    Case(
        "SAELens CacheActivationsRunner",
        "drive_sae_lens.py",
        ROOT / ".venv-alt/sae-lens/bin/python",
        "float32",
    ),
    Case(
        "mi-crow save_activations",
        "drive_mi_crow.py",
        ROOT / ".venv-alt/mi-crow/bin/python",
        "float32",
    ),
)


def build_model(path: Path, corpus_texts: list[str], seed: int = 0) -> Path:
    """GPT-2 small shape with a BPE tokenizer trained on the corpus, via save_pretrained.

    `n_ctx` is written into the config as in OpenAI's GPT-2 configs: TransformerLens reads it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus_texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_ctx=1024, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_driver(case: Case, spec: dict, work: Path) -> dict:
    """Run one tool's driver in its environment; its JSON line, or {"skipped": reason}."""
    if not case.python.exists():
        return {"skipped": SKIPPED}
    name = Path(case.driver).stem
    spec_path = work / f"spec-{name}-{case.dtype}.json"
    spec_path.write_text(
        json.dumps({**spec, "dtype": case.dtype, "out": str(work / f"out-{name}-{case.dtype}")})
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(work / "hf-home"),
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [str(case.python), str(DRIVERS / case.driver), str(spec_path)],
        cwd=work / "cwd",  # holds gpt2/ -> the local model (see drive_sae_lens.py)
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"failed: {last[:200]}"}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "dtype": case.dtype}


def bare_truncated(
    model: Path, corpus: Path, work: Path, tokens: int, rounds: int, threads: int
) -> float:
    """Tokens/s of the model forward stopped after the deepest layer, on our batches."""
    from pipeline.capture.config import CaptureConfig
    from pipeline.capture.model_setup import deepest_hook
    from pipeline.capture.prepare import prepare_capture
    from pipeline.capture.worker import UnitWorker
    from pipeline.store.corpus import CorpusConfig

    torch.set_num_threads(threads)
    hooks = tuple(f"layer_{n}" for n in LAYERS)
    config = CaptureConfig(
        model=str(model),
        hooks=hooks,
        corpus=CorpusConfig(kind="jsonl", path=str(corpus)),
        context_length=CONTEXT,
        batch_size=BATCH,
        max_tokens=tokens,
        out=str(work / "bare-plan"),
        torch_threads=threads,
    )
    prepared = prepare_capture(config)
    worker = UnitWorker(config, prepared.out, lm=prepared.lm)
    batches, stop = unit_batches(worker), deepest_hook(prepared.lm, hooks)
    for ids, mask in batches[:2]:  # warm-up
        prepared.lm.inference.forward_ids(ids, mask, stop_after=stop)
    seconds = []
    for _ in range(rounds):
        began = time.perf_counter()
        for ids, mask in batches:
            prepared.lm.inference.forward_ids(ids, mask, stop_after=stop)
        seconds.append(time.perf_counter() - began)
    worker.writer.close()
    prepared.writer.close()
    return prepared.writer.index.num_rows / statistics.median(seconds)


def check_values(model: Path, result: dict) -> str:
    """Compare the stored sample windows with a plain HF forward, allclose at the stored dtype."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model).eval()
    dtype = getattr(torch, result["dtype"])
    tol = TOLERANCE[result["dtype"]]
    samples = np.load(result["samples"])
    worst, ok, i = 0.0, True, 0
    while f"ids_{i}" in samples:
        ids, mask = torch.from_numpy(samples[f"ids_{i}"]), torch.from_numpy(samples[f"mask_{i}"])
        with torch.no_grad():
            hidden = lm(
                input_ids=ids[None], attention_mask=mask[None].long(), output_hidden_states=True
            ).hidden_states
        for n in LAYERS:
            ref_TD = hidden[n + 1][0][mask].to(dtype).float()
            stored_TD = torch.from_numpy(samples[f"values_{i}_{n}"])[mask]
            ok &= torch.allclose(stored_TD, ref_TD, rtol=tol, atol=tol)
            worst = max(worst, (stored_TD - ref_TD).abs().max().item())
        i += 1
    return f"{'yes' if ok else 'no'} (max abs diff {worst:.1e}, {i} windows)"


def folder_stats(out: Path) -> tuple[int, int]:
    files = [p for p in out.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def row(case: Case, result: dict, base_tps: float, model: Path) -> list:
    if "skipped" in result:
        return [case.label, case.dtype, result["skipped"], "", "", "", "", "", ""]
    num_files, num_bytes = folder_stats(Path(result["out"]))
    tps = result["tokens"] / result["seconds"]
    padding = (result["stored_rows"] - result["tokens"]) * len(LAYERS)
    return [
        case.label,
        case.dtype,
        f"{tps:,.0f}",
        f"{tps / base_tps:.2f}",
        f"{num_bytes / result['tokens']:,.0f}",
        f"{result['peak_rss_bytes'] / 2**20:,.0f}",
        num_files,
        f"{padding:,}",
        check_values(model, result),
    ]


def run(
    rounds: int = 3, threads: int | None = None, device: str = "cpu", tokens: int = TOKENS
) -> str:
    if device != "cpu":
        raise ValueError("the alternatives suite runs on cpu (the drivers pin device='cpu')")
    threads = threads or 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = repeated_pydoc_jsonl(work / "pydoc.jsonl", copies=1)
        texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
        model = build_model(work / "model", texts)
        (work / "cwd").mkdir()
        (work / "cwd" / "gpt2").symlink_to(model)
        d_model = 768
        spec = {
            "model": str(model),
            "corpus": str(corpus),
            "layers": list(LAYERS),
            "context": CONTEXT,
            "batch": BATCH,
            "tokens": tokens,
            "threads": threads,
            "d_model": d_model,
            "work": str(work),
        }
        results = {case.label: run_driver(case, spec, work) for case in CASES}
        base_tps = bare_truncated(model, corpus, work, tokens, min(rounds, 2), threads)
        rows = [
            [f"bare forward, stopped after block {LAYERS[-1]}", "", f"{base_tps:,.0f}", "1.00"]
            + [""] * 5
        ]
        rows += [row(case, results[case.label], base_tps, model) for case in CASES]
        versions = "; ".join(
            f"{r['tool']} {r['version']}"
            + "".join(f", {k} {v}" for k, v in r.get("versions", {}).items())
            for r in results.values()
            if "version" in r
        )
    header = [
        "tool",
        "stored dtype",
        "tokens/s",
        "/ bare truncated",
        "bytes/token on disk",
        "peak RSS (MiB)",
        "files",
        "padding rows stored",
        "matches plain forward",
    ]
    return (
        f"GPT-2-small shape (12 blocks, d=768), residual stream after blocks {LAYERS[0]} and "
        f"{LAYERS[1]}, {tokens:,} tokens, windows of {CONTEXT}, batches of {BATCH}, "
        f"{threads} threads; {versions or 'no alternative installed'}\n\n"
        + markdown_table(header, rows)
    )
