"""The one cycle/depth detector shared by prerequisites and nested segments."""

from __future__ import annotations

import random

import pytest

from phaseflag._graph import components, layers


def test_components_order_dependencies_first() -> None:
    """Every component comes after the components it refers to."""
    graph = {"a": ["b"], "b": ["c"], "c": [], "d": ["a", "c"]}
    order = [c[0] for c in components(graph)]
    assert order.index("c") < order.index("b") < order.index("a") < order.index("d")


def test_cycles_are_refused_with_their_members() -> None:
    """Members of a cycle (and a self-loop) are broken; a node above them is not."""
    found = layers({"a": ["b"], "b": ["a"], "s": ["s"], "top": ["a"]}, 16)
    assert found.broken["a"] == ("cycle", ["a", "b"]) and found.broken["b"][0] == "cycle"
    assert found.broken["s"] == ("cycle", ["s"])
    assert "top" not in found.broken


def test_depth_limit_refuses_only_the_top_of_a_long_chain() -> None:
    """A chain one longer than the limit refuses its top node; ``counted`` adds a step."""
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(17)} | {"n17": []}
    found = layers(chain, 16)
    assert set(found.broken) == {"n0"} and found.broken["n0"] == ("depth", [])
    missing = layers({"x": ["gone"]}, 16, counted=lambda node: True)
    assert missing.depth["x"] == 1


@pytest.mark.slow
def test_long_chains_are_iterative() -> None:
    """100,000 nodes in a line: no recursion limit."""
    n = 100_000
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(n - 1)} | {f"n{n - 1}": []}
    found = layers(chain, n)
    assert not found.broken and found.depth["n0"] == n - 1


@pytest.mark.parametrize("seed", range(20))
def test_result_does_not_depend_on_listing_order(seed: int) -> None:
    """Shuffling the nodes changes neither what is broken nor the depths."""
    rng = random.Random(seed)
    nodes = [f"k{i}" for i in range(30)]
    graph = {n: rng.sample(nodes, rng.randint(0, 2)) for n in nodes}
    base = layers(graph, 3)
    shuffled = dict(rng.sample(list(graph.items()), len(graph)))
    other = layers(shuffled, 3)
    assert base.broken == other.broken and base.depth == other.depth
