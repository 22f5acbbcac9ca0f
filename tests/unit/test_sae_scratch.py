"""`encode_sparse` writes its throw-away pre-activations into a reused buffer: the codes it
returns must be the same as without it, stay valid after later calls, and be right when
several threads share one SAE."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch

from pipeline.sae import JumpReluSae, ReluSae, TopKSae


def make(kind: str):
    torch.manual_seed(0)
    if kind == "topk":
        return TopKSae(512, 64, 8)
    sae = ReluSae(512, 64) if kind == "relu" else JumpReluSae(512, 64)
    if kind == "jumprelu":
        with torch.no_grad():
            sae.threshold.fill_(0.05)
    return sae


def dense(sae, values, indices):
    return torch.zeros(values.shape[0], sae.n_latents).scatter_(1, indices, values)


@pytest.mark.parametrize("kind", ["topk", "relu", "jumprelu"])
def test_codes_equal_the_fresh_computation_and_survive_later_calls(kind):
    sae = make(kind)
    x_big, x_small = torch.randn(300, 64), torch.randn(40, 64)
    with torch.no_grad():
        expected_big = sae.encode(x_big)
        expected_small = sae.encode(x_small)
        first = sae.encode_sparse(x_big)
        second = sae.encode_sparse(x_small)  # reuses the buffer the first call wrote
        with torch.inference_mode():
            third = sae.encode_sparse(x_big)
        fourth = sae.encode_sparse(x_big)  # back outside inference mode
    assert sae._scratch._local.buffer.shape == (300, 512)
    assert torch.equal(dense(sae, *first), expected_big)
    assert torch.equal(dense(sae, *second), expected_small)
    assert torch.equal(dense(sae, *third), expected_big)
    assert torch.equal(dense(sae, *fourth), expected_big)


def test_training_gets_fresh_tensors_with_gradients():
    sae = make("topk")
    values, _ = sae.encode_sparse(torch.randn(16, 64))
    values.sum().backward()
    assert sae.W_enc.grad is not None and sae.W_enc.grad.abs().sum() > 0
    assert getattr(sae._scratch._local, "buffer", None) is None


def test_threads_sharing_one_sae_each_get_their_own_buffer():
    sae = make("topk")
    inputs = [torch.randn(200 + 10 * i, 64) for i in range(4)]
    with torch.no_grad():
        expected = [sae.encode(x) for x in inputs]
    results, errors = {}, []

    def work(i):
        try:
            with torch.no_grad():
                for _ in range(20):
                    results[i] = dense(sae, *sae.encode_sparse(inputs[i]))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(torch.equal(results[i], expected[i]) for i in range(4))


def test_copies_and_pickles_do_not_carry_the_buffer():
    sae = make("relu")
    x = torch.randn(32, 64)
    with torch.no_grad():
        sae.encode_sparse(x)
        for other in (copy.deepcopy(sae), pickle.loads(pickle.dumps(sae))):
            assert getattr(other._scratch._local, "buffer", None) is None
            assert torch.equal(dense(other, *other.encode_sparse(x)), sae.encode(x))
