# Tests for the exact k-nearest-neighbour searches (linalg/neighbors.py) against a full sort.
import pytest
import torch

from flashgp.linalg import neighbors as nb


def uniform(n, d, seed):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def clustered(n, d, seed):
    """Most points in a few tight clusters, the rest spread wide: uneven cells."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(4, d, generator=g) * 10
    pick = torch.randint(0, 4, (n,), generator=g)
    x = centres[pick] + 0.01 * torch.randn(n, d, generator=g)
    wide = torch.rand(n // 10, d, generator=g) * 10
    return torch.cat([x, wide])


def brute(points, queries, k):
    return torch.cdist(queries.double(), points.double()).square().argsort(1)[:, :k]


def assert_k_nearest(got, points, queries, k):
    """got holds k distinct nearest points of each query in order: its distances equal the k
    smallest (float64), up to the float32 rounding of the blocked search's distances (about
    1e-7 |p - mean|^2 for the queries the grid hands it)."""
    assert got.shape == (queries.shape[0], k) and got.dtype == torch.long
    d2 = torch.cdist(queries.double(), points.double()).square()
    want = d2.sort(1).values[:, :k]
    have = d2.gather(1, got)
    radius2 = float((points.double() - points.double().mean(0)).square().sum(-1).max())
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-6 * radius2)
    assert (got.sort(1).values.diff(dim=1) > 0).all()  # distinct


@pytest.mark.parametrize("k", [1, 7, 40])
def test_blocked_search_matches_a_full_sort_over_blocks(monkeypatch, k):
    monkeypatch.setattr(nb, "SEARCH_ROWS", 13)  # several partial row and column blocks
    monkeypatch.setattr(nb, "SEARCH_COLS", 37)
    p, q = uniform(300, 4, 3), uniform(50, 4, 4)
    got = nb.blocked_neighbors(p, q, k)
    assert torch.equal(got, brute(p, q, k))  # random inputs: no ties
    with pytest.raises(ValueError, match="k: expected 1 <= k <= 300"):
        nb.nearest_neighbors(p, q, 301)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("data", [uniform, clustered])
def test_grid_search_finds_the_k_nearest(monkeypatch, data, d):
    monkeypatch.setattr(nb, "GRID_ENTRIES", 5000)  # many query blocks
    p = data(4000, d, 5)
    q = torch.cat([data(300, d, 6), uniform(20, d, 7) * 30 - 10])  # some far outside the points
    for k in (1, 16, 64):
        assert_k_nearest(nb.grid_neighbors(p, q, k), p, q, k)


def test_grid_search_certifies_most_uniform_queries(monkeypatch):
    """On uniform data the grid alone answers nearly every query: the blocked fallback is
    called with a handful of them at most."""
    seen = []
    blocked = nb.blocked_neighbors

    def spy(points, queries, k):
        seen.append(queries.shape[0])
        return blocked(points, queries, k)

    monkeypatch.setattr(nb, "blocked_neighbors", spy)
    p, q = uniform(30000, 3, 8), uniform(2000, 3, 9)
    got = nb.nearest_neighbors(p, q, 32)  # 30,000 points: the grid path
    assert_k_nearest(got, p, q, 32)
    assert sum(seen) < 20


def test_nearest_neighbors_checks_its_inputs():
    p = uniform(10, 3, 0)
    with pytest.raises(ValueError, match="queries: expected"):
        nb.nearest_neighbors(p, uniform(4, 2, 1), 3)
    with pytest.raises(ValueError, match="k: expected"):
        nb.nearest_neighbors(p, p, 0)
