"""Same numbers on CPU and CUDA: log-likelihoods (packed and cached paths) and greedy generations of the tiny model."""

from __future__ import annotations

import copy

import pytest
import torch

from calmix.evals.loglik import loglikelihood_groups
from calmix.evals.scorers import generate_greedy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

GROUPS = [([5, 6, 7], [[8], [9, 10, 11], [12, 13]]), ([1], [[2, 3]]), ([4] * 40, [[1], [2, 9, 9, 9], [3]])]


@pytest.mark.parametrize("packed", [None, False])
def test_loglikelihoods_agree_on_cpu_and_cuda(tiny_model, packed):
    cpu = loglikelihood_groups(tiny_model, GROUPS, batch_size=2, packed=packed)
    gpu_model = copy.deepcopy(tiny_model).to("cuda")
    gpu = loglikelihood_groups(gpu_model, GROUPS, batch_size=2, device="cuda", packed=packed)
    for a_group, b_group in zip(cpu, gpu):
        for a, b in zip(a_group, b_group):
            assert a.ntokens == b.ntokens and a.greedy == b.greedy
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_greedy_generations_agree_on_cpu_and_cuda(tiny_model, tiny_tokenizer):
    prompts = ["def f(x):\n    return", "Once upon a time, in a land far away, there", "1 + 1 ="]
    cpu = generate_greedy(tiny_model, tiny_tokenizer, prompts, max_new_tokens=8, batch_size=3)
    gpu_model = copy.deepcopy(tiny_model).to("cuda")
    assert generate_greedy(gpu_model, tiny_tokenizer, prompts, max_new_tokens=8, batch_size=3, device="cuda") == cpu
