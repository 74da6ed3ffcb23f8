"""Rows of token sequences for scoring: prefix trees (each distinct prefix of a row's sequences once), which groups
share a row, and how rows fill batches. Pure token arithmetic; loglik.py runs the rows through a model."""

from __future__ import annotations

from typing import Sequence

import torch

Group = tuple[list[int], Sequence[list[int]]]


def length_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Consecutive runs of positions in lengths with at most max_rows rows and, unless a run is a single row,
    at most max_tokens padded tokens (rows × longest); pass lengths sorted longest first for little padding."""
    out: list[list[int]] = []
    longest = 0
    for i, n in enumerate(lengths):
        if out and len(out[-1]) < max_rows and (len(out[-1]) + 1) * max(longest, n) <= max_tokens:
            out[-1].append(i)
            longest = max(longest, n)
        else:
            out.append([i])
            longest = n
    return out


def fill_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[list[list[int]]]:
    """Batches of bins of positions in lengths, widest first: a batch's first (widest remaining) item sets its width
    w and allows min(max_rows, max_tokens // w) bins (at least one); later items, widest first, go to the first bin
    with room (a bin's lengths sum to at most w), so short items fill what would have been padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[list[int]]] = []
    while order:
        width = lengths[order[0]]
        nbins = max(1, min(max_rows, max_tokens // max(width, 1)))
        bins: list[list[int]] = [[order[0]]]
        room = [0]
        rest: list[int] = []
        for k, i in enumerate(order[1:], 1):
            n = lengths[i]
            b = next((b for b, r in enumerate(room) if r >= n), None)
            if b is None and len(bins) < nbins:
                bins.append([i])
                room.append(width - n)
            elif b is None:
                rest.append(i)
                if max(room) < lengths[order[-1]]:  # every bin is open and not even the shortest item fits
                    rest.extend(order[k + 1:])
                    break
            else:
                bins[b].append(i)
                room[b] -= n
        out.append(bins)
        order = rest
    return out


def prefix_tree(groups: Sequence[Group]) -> tuple[list[int], list[int], list[int], list[list[list[int]]]]:
    """Several groups as one row holding every distinct prefix of their (context + continuation) sequences once.

    Returns token ids, position ids (depth in the tree), the end of each node's subtree (nodes come in pre-order, so
    node j's descendants are the positions j+1 .. end[j]-1) and, per group and continuation, the row positions whose
    next-token distribution scores it. A sequence's last token is only a target, so it is never a node.
    """
    seqs = [(g, j, list(ctx) + list(c)) for g, (ctx, conts) in enumerate(groups) for j, c in enumerate(conts)]
    # Inserted in lexicographic order, each new node extends the latest branch: creation order is pre-order.
    order = sorted(range(len(seqs)), key=lambda s: seqs[s][2][:-1])
    ids: list[int] = []
    pos: list[int] = []
    parent: list[int] = []
    children: list[dict[int, int]] = []
    roots: dict[int, int] = {}
    paths: list[list[int]] = [[] for _ in seqs]
    for s in order:
        level, path = roots, paths[s]
        for depth, tok in enumerate(seqs[s][2][:-1]):
            node = level.get(tok)
            if node is None:
                node = level[tok] = len(ids)
                ids.append(tok)
                pos.append(depth)
                parent.append(path[-1] if path else -1)
                children.append({})
            path.append(node)
            level = children[node]
    end = list(range(1, len(ids) + 1))
    for node in range(len(ids) - 1, 0, -1):  # children come after their parent: one backward sweep
        if parent[node] >= 0:
            end[parent[node]] = max(end[parent[node]], end[node])
    score_at: list[list[list[int]]] = [[[] for _ in conts] for _, conts in groups]
    for s, (g, j, seq) in enumerate(seqs):
        score_at[g][j] = [paths[s][k - 1] for k in range(len(groups[g][0]), len(seq))]
    return ids, pos, end, score_at


def tree_allow(end: Sequence[int]) -> torch.Tensor:
    """The L×L attention permission of a pre-order prefix tree (True = may attend): each node sees its ancestors and
    itself, i.e. node i attends to j when i lies in j's subtree [j, end[j])."""
    ar = torch.arange(len(end))
    return (ar[None, :] <= ar[:, None]) & (ar[:, None] < torch.tensor(list(end), dtype=torch.long)[None, :])


def packed_row(ctx: Sequence[int], conts: Sequence[Sequence[int]]) -> tuple[list[int], list[int], torch.Tensor, list[list[int]]]:
    """One row for a context and its continuations: token ids, position ids, the L×L attention permission
    (True = may attend) and, per continuation, the row positions whose next-token distribution scores it
    (continuations sharing leading tokens share those positions)."""
    ids, pos, end, score_at = prefix_tree([(list(ctx), conts)])
    return ids, pos, tree_allow(end), score_at[0]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pack_groups(groups: Sequence[Group], limit: int, min_share: int = 4, attention_ratio: float = 0.0) -> list[list[int]]:
    """Indices of groups sharing a row: sorted by context so shared prefixes are adjacent, consecutive groups join a
    row while their context shares at least min_share leading tokens with the previous one, the row's tokens stay
    within limit and the tokens saved outweigh the attention added. A packed row pays attention over its whole
    width under the tree mask, so joining a group of n tokens to a row of S, sharing s, adds
    (S + n - s)² - S² - n² query-key pairs; attention_ratio prices one pair in tokens of linear work (see
    attention_ratio; 0 ignores attention)."""
    order = sorted(range(len(groups)), key=lambda i: list(groups[i][0]))
    rows: list[list[int]] = []
    size = 0
    for i in order:
        ctx, conts = groups[i]
        n = len(ctx) + sum(len(c) - 1 for c in conts)
        shared = common_prefix(groups[rows[-1][-1]][0], ctx) if rows else 0
        added = (size + n - shared) ** 2 - size ** 2 - n ** 2
        if rows and shared >= min_share and size + n - shared <= limit and shared > attention_ratio * added:
            rows[-1].append(i)
            size += n - shared
        else:
            rows.append([i])
            size = n
    return rows


def stem_runs(groups: Sequence[Group], min_stem: int) -> list[tuple[int, list[int]]]:
    """(stem length, group indices) for each run of two or more groups whose contexts share their first stem ≥ min_stem
    tokens, such as MMLU items with the same few-shot examples. Sorted by context, a run's shared prefix is its
    least adjacent one; the stem stops a token short of the run's shortest context, so every group keeps a context
    token whose next-token distribution it scores."""
    order = sorted(range(len(groups)), key=lambda i: list(groups[i][0]))
    runs: list[tuple[int, list[int]]] = []
    run: list[int] = []
    shared = 0

    def close() -> None:
        if len(run) >= 2:
            stem = min(shared, min(len(groups[i][0]) for i in run) - 1)
            if stem >= min_stem:
                runs.append((stem, sorted(run)))

    for i in order:
        cp = common_prefix(groups[run[-1]][0], groups[i][0]) if run else 0
        if run and cp >= min_stem:
            run.append(i)
            shared = min(shared, cp)
        else:
            close()
            run, shared = [i], 1 << 62
    close()
    return runs
