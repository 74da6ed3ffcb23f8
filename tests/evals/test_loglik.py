"""Packed-row log-likelihood: row layout, head scoring, and equality with a plain forward on every architecture."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from calmix.errors import CalmixError
from calmix.evals.loglik import _score_positions, loglikelihood_groups, packed_supported, stems_supported
from calmix.evals.packing import fill_batches, pack_groups, packed_row, prefix_tree, stem_runs, tree_allow
from tests.prune.test_architectures import ARCHS

# Mixed context lengths, some longer than the sliding window (8) of the windowed architectures.
GROUPS = [([5, 6, 7], [[8], [9, 10, 11], [12, 13]]), ([1], [[2, 3]]), ([4] * 12, [[1], [2, 9, 9, 9], [3]]),
          ([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [[5], [8, 9]]), ([7, 7], [[100, 101, 102, 103, 104, 105, 106]])]

# Contexts sharing prefixes across groups (one context twice, one a prefix of another) and continuations sharing
# leading tokens: these share rows and tree nodes.
SHARED = [([5, 6, 7, 8, 9], [[1, 2, 3], [1, 2, 4], [1]]), ([5, 6, 7, 8, 9, 10], [[1, 2], [2]]),
          ([5, 6, 7, 8, 11], [[3], [3, 3]]), ([2, 2], [[5, 6]]), ([5, 6, 7, 8, 9], [[1, 2, 3], [7]]),
          ([5, 6, 7, 8], [[9, 10, 1]])]


def plain_logprob(model, ctx: list[int], cont: list[int]) -> float:
    """Oracle: one forward of ctx+cont, log_softmax, sum over the continuation positions."""
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits[0].float(), dim=-1)
    return sum(float(lp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))


def assert_plain(model, groups, res) -> None:
    """Every score, token count and greedy flag equals one plain forward of its (context, continuation) pair."""
    for (ctx, conts), got in zip(groups, res):
        for cont, r in zip(conts, got):
            assert r.ntokens == len(cont)
            assert r.logprob == pytest.approx(plain_logprob(model, ctx, cont), abs=1e-4)
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits[0].float(), -1)
            assert r.greedy == all(int(lp[len(ctx) - 1 + k].argmax()) == t for k, t in enumerate(cont))


def test_packed_row_layout_by_hand():
    ids, pos, allow, score_at = packed_row([5, 6, 7], [[8], [9, 10, 11]])
    assert ids == [5, 6, 7, 9, 10]  # the last token of a continuation is only a target
    assert pos == [0, 1, 2, 3, 4]
    want = torch.tensor([[1, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0],
                         [1, 1, 1, 0, 0],
                         [1, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(allow, want)
    assert score_at == [[2], [2, 3, 4]]

    ids, pos, allow, score_at = packed_row([1, 2], [[3, 4], [5, 6, 7]])
    assert ids == [1, 2, 3, 5, 6] and pos == [0, 1, 2, 2, 3]  # both continuations start right after the context
    assert allow[3].tolist() == [True, True, False, True, False]  # 2nd continuation does not see the 1st
    assert allow[2].tolist() == [True, True, True, False, False]
    assert score_at == [[1, 2], [1, 3, 4]]


def test_prefix_tree_shares_prefixes_within_and_across_groups_by_hand():
    ids, pos, end, score_at = prefix_tree([([1, 2], [[3, 4], [3, 5]]), ([1, 2, 6], [[7]])])
    # sequences without their last token, in lexicographic order: [1,2,3] [1,2,3] [1,2,6]; nodes 1 2 3 6
    assert ids == [1, 2, 3, 6] and pos == [0, 1, 2, 2]
    assert end == [4, 4, 3, 4]
    assert score_at == [[[1, 2], [1, 2]], [[3]]]  # group 0 shares node 2 (token 3); group 1 reads node 3 (token 6)
    allow = tree_allow(end)
    assert allow.tolist() == [[True, False, False, False],
                              [True, True, False, False],
                              [True, True, True, False],
                              [True, True, False, True]]  # node 6 does not see its sibling 3


def test_pack_groups_joins_only_groups_sharing_a_prefix_within_the_limit():
    groups = [([9, 9, 9, 9, 1], [[1]]), ([1, 2, 3, 4, 5], [[6, 7]]), ([1, 2, 3, 4, 6], [[6]]), ([1, 2, 8], [[1]]),
              ([9, 9, 9, 9, 2], [[1, 1]])]
    assert pack_groups(groups, limit=100) == [[1, 2], [3], [0, 4]]  # [1,2,8] shares 2 < 4 tokens with [1,2,3,4,6]
    assert pack_groups(groups, limit=100, min_share=2) == [[1, 2, 3], [0, 4]]
    assert pack_groups(groups, limit=6) == [[1], [2], [3], [0], [4]]  # 6 + 5 - 4 = 7 > 6 tokens


def test_fill_batches_puts_short_rows_where_padding_would_be_by_hand():
    lengths = [3, 10, 6, 2, 4, 9]  # widest first: 10, 9, 6, 4, 3, 2
    # width 10, 3 bins: 9 and 6 open bins, 4 fills the 6's; nothing left fits, so 3 and 2 start a batch of width 3
    assert fill_batches(lengths, max_rows=3, max_tokens=100) == [[[1], [5], [2, 4]], [[0], [3]]]
    # 20 // 10 = 2 bins for 10 and 9; then width 6, 20 // 6 = 3 bins: 6 | 4 + 2 | 3
    assert fill_batches(lengths, max_rows=16, max_tokens=20) == [[[1], [5]], [[2], [4, 3], [0]]]
    assert fill_batches([50, 1], max_rows=16, max_tokens=20) == [[[0]], [[1]]]  # a row wider than max_tokens: alone
    assert fill_batches([], 4, 10) == []


def test_fill_batches_covers_every_row_once_within_the_limits():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        lengths = torch.randint(1, 40, (int(torch.randint(1, 60, (1,), generator=g)),), generator=g).tolist()
        batches = fill_batches(lengths, max_rows=5, max_tokens=120)
        flat = sorted(i for bins in batches for b in bins for i in b)
        assert flat == list(range(len(lengths)))
        for bins in batches:
            width = lengths[bins[0][0]]
            assert width == max(lengths[i] for b in bins for i in b)
            assert all(sum(lengths[i] for i in b) <= width for b in bins)
            assert len(bins) <= max(1, min(5, 120 // width))


def test_score_positions_matches_log_softmax_in_any_chunking():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(3, 8)
    slots, targets = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([4, 7, 0, 10, 3])
    lp_all = torch.log_softmax(head(hidden), dim=-1)
    want = lp_all[slots, targets]
    hits = lp_all.argmax(-1)[slots] == targets
    for max_elems in (1, 11, 22, 1 << 20):  # one row per chunk .. all rows at once
        lp, hit = _score_positions(head, None, hidden, slots, targets, max_elems=max_elems)
        assert torch.allclose(lp, want, atol=1e-6)
        assert torch.equal(hit, hits)
    order = torch.tensor([3, 0, 2, 4, 1])  # targets in any slot order
    lp, hit = _score_positions(head, None, hidden, slots[order], targets[order], max_elems=11)
    assert torch.allclose(lp, want[order], atol=1e-6) and torch.equal(hit, hits[order])
    capped = torch.log_softmax(torch.tanh(head(hidden) / 2.0) * 2.0, dim=-1)[slots, targets]
    assert torch.allclose(_score_positions(head, 2.0, hidden, slots, targets)[0], capped, atol=1e-6)


def test_score_positions_greedy_on_ties_and_stable_on_large_logits():
    v = torch.tensor([1.0, -2.0, 0.5, 3.0])
    head = torch.nn.Linear(4, 6, bias=False)
    with torch.no_grad():  # tokens 2 and 5 score c|v|², the others 0.1 c|v|²: exact ties either way
        head.weight.copy_(torch.stack([0.1 * v, 0.1 * v, v, 0.1 * v, 0.1 * v, v]))
    hidden = torch.stack([v, -v]) * 100.0  # logits near ±1.4e3: a plain exp overflows
    slots, targets = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([2, 5, 0, 0, 3, 2])
    want = torch.log_softmax(head(hidden).double(), dim=-1)[slots, targets]
    lp, hit = _score_positions(head, None, hidden, slots, targets)
    assert torch.allclose(lp.double(), want, atol=1e-4)
    # greedy means the first maximal token, as lm-eval's argmax check: 2 (not 5) for +v, 0 (not 3) for -v
    assert hit.tolist() == [True, False, False, True, False, False]


@pytest.mark.parametrize("packed", [None, False])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_architecture_matches_a_plain_forward(arch, packed):
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    if packed is None:
        assert packed_supported(model)
    res = loglikelihood_groups(model, GROUPS, batch_size=3, packed=packed)
    for (ctx, conts), got in zip(GROUPS, res):
        for cont, r in zip(conts, got):
            assert r.ntokens == len(cont)
            assert r.logprob == pytest.approx(plain_logprob(model, ctx, cont), abs=1e-4)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_shared_prefix_rows_match_one_plain_forward_per_pair(arch):
    """Oracle: one plain forward per (context, continuation) pair; the rows share contexts and continuation prefixes."""
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    for batch_size in (1, 4):
        assert_plain(model, SHARED, loglikelihood_groups(model, SHARED, batch_size=batch_size))


def fewshot_groups() -> list:
    """A few-shot prefix of 80 tokens shared by 14 groups whose tails (16..40 tokens) do not fit one 256-token row,
    two of them sharing text past the prefix, one ending right after it, and two unrelated groups."""
    g = torch.Generator().manual_seed(3)
    shot = torch.randint(3, 128, (80,), generator=g).tolist()
    tails = [torch.randint(3, 128, (int(n),), generator=g).tolist() for n in torch.randint(16, 41, (12,), generator=g)]
    tails += [tails[0][:4] + [9, 9], [1]]
    groups = [(shot + t, [[5], [6], [7, 8, 9]]) for t in tails]
    groups += [([4, 2, 4], [[1, 2]]), (shot[:50], [[3]])]
    return groups


def test_stem_runs_by_hand():
    stem = list(range(10, 20))
    groups = [(stem + [1, 2], [[1]]), ([5, 5], [[1]]), (stem + [3], [[1]]), (stem[:6] + [0], [[1]]),
              (stem + [1, 4], [[1]])]
    # sorted by context: 3 (shares 6), then 0, 4, 2 (share 10, 11, 10); 1 apart
    assert stem_runs(groups, min_stem=8) == [(10, [0, 2, 4])]
    assert stem_runs(groups, min_stem=6) == [(6, [0, 2, 3, 4])]  # the stem stops short of context 3's last token
    assert stem_runs(groups, min_stem=11) == [(11, [0, 4])]
    assert stem_runs(groups, min_stem=12) == []
    # a context that is the shared prefix itself keeps its last token: the stem is one shorter
    assert stem_runs([(stem, [[1]]), (stem + [2], [[1]])], min_stem=9) == [(9, [0, 1])]
    assert stem_runs([(stem, [[1]]), (stem + [2], [[1]])], min_stem=10) == []


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fewshot_prefix_runs_once_and_matches_a_plain_forward(arch):
    """Oracle: one plain forward per pair; the shared prefix goes through the body once where stems are supported."""
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    groups = fewshot_groups()
    windowed = getattr(model.config, "sliding_window", None) is not None
    assert stems_supported(model) == (not windowed)
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(i[0].numel()))
    res = loglikelihood_groups(model, groups, batch_size=4)
    hook.remove()
    assert_plain(model, groups, res)
    if not windowed:  # the prefix runs once; in rows of their own, the tails' two rows would each repeat it (+80)
        distinct = len(prefix_tree(groups)[0])
        assert sum(seen) < distinct + 50 + 80, seen  # shot[:50] shares too little for a stem and runs again


class _MaskDroppingModel(tf.LlamaForCausalLM):
    """A model whose decoder ignores custom 4D masks (as some attention kernels do)."""

    def __init__(self, config):
        super().__init__(config)
        body_forward = self.model.forward

        def forward(*args, attention_mask=None, **kwargs):
            if attention_mask is not None and attention_mask.dim() == 4:
                attention_mask = None
            return body_forward(*args, attention_mask=attention_mask, **kwargs)

        self.model.forward = forward


def test_model_that_ignores_custom_masks_falls_back_to_cached_path():
    torch.manual_seed(0)
    model = _MaskDroppingModel(tf.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                              max_position_embeddings=256)).eval()
    assert not packed_supported(model)
    wrong = loglikelihood_groups(model, GROUPS[:1], packed=True)[0]  # what forcing packed rows would give
    assert any(abs(r.logprob - plain_logprob(model, GROUPS[0][0], c)) > 1e-3 for c, r in zip(GROUPS[0][1], wrong))
    for (ctx, conts), got in zip(GROUPS, loglikelihood_groups(model, GROUPS, batch_size=2)):
        for cont, r in zip(conts, got):
            assert r.logprob == pytest.approx(plain_logprob(model, ctx, cont), abs=1e-4)
    for (ctx, conts), got in zip(SHARED, loglikelihood_groups(model, SHARED, batch_size=2)):
        for cont, r in zip(conts, got):
            assert r.logprob == pytest.approx(plain_logprob(model, ctx, cont), abs=1e-4)


def test_forcing_packed_rows_on_a_model_without_a_separate_head_is_a_clear_error():
    class Whole(torch.nn.Module):
        config = tf.LlamaConfig(vocab_size=16)

    with pytest.raises(CalmixError, match="packed=False"):
        loglikelihood_groups(Whole(), [([1], [[2]])], packed=True)


def test_support_check_runs_without_dropout_and_restores_training_mode():
    torch.manual_seed(0)
    model = tf.OPTForCausalLM(tf.OPTConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                           ffn_dim=128, word_embed_proj_dim=64, max_position_embeddings=256,
                                           dropout=0.5, attention_dropout=0.5)).train()
    assert packed_supported(model)
    assert model.training


def test_attention_width_from_the_decoder_shape():
    """Rows stop widening where attention costs a quarter of the linears: weights / (8 · hidden · layers)."""
    from calmix.evals.loglik import attention_width
    from calmix.models import tiny_llama

    model = tiny_llama(hidden=256, layers=1, heads=4, kv_heads=4, intermediate=2048)
    # q, k, v, o: 4 · 256²; gate, up, down: 3 · 256 · 2048; two RMSNorm weights: 2 · 256
    weights = 4 * 256 * 256 + 3 * 256 * 2048 + 2 * 256
    assert attention_width(model) == weights // (8 * 256 * 1) == 896
    assert attention_width(tiny_llama()) == 256  # the floor: tiny decoders still pack short groups together


def test_attention_ratio_from_the_decoder_shape():
    """One query-key pair costs 4·hidden FLOPs per layer, a token of linear work 2 per decoder weight."""
    from calmix.evals.loglik import attention_ratio
    from calmix.models import tiny_llama

    model = tiny_llama(hidden=256, layers=1, heads=4, kv_heads=4, intermediate=2048)
    weights = 4 * 256 * 256 + 3 * 256 * 2048 + 2 * 256
    assert attention_ratio(model) == pytest.approx(2 * 256 * 1 / weights)


def test_pack_groups_weighs_the_prefix_saved_against_the_attention_added():
    """Two groups of 108 tokens sharing 8 save 8 tokens but add 208² - 2·108² = 19,936 pairs: at 1e-3 tokens a
    pair they stay apart; two of 100 sharing 90 join (110² - 2·100² < 0 pairs added)."""
    short = [(list(range(8)) + [100 + j] * 40, [[1] * 61]) for j in range(2)]
    long_ = [(list(range(90)) + [100 + j] * 9, [[1, 2]]) for j in range(2)]
    assert pack_groups(short, limit=1000) == [[0, 1]]
    assert pack_groups(short, limit=1000, attention_ratio=1e-3) == [[0], [1]]
    assert pack_groups(long_, limit=1000, attention_ratio=1e-3) == [[0, 1]]
