"""The one cycle and depth check for references between ruleset items.

Prerequisites (flag -> flag) and nested segments (segment -> segment) are both
graphs whose cycles and overly long chains must be refused at compile time, so that
evaluation is bounded. Both use ``layers`` here: an iterative strongly connected
components pass (Tarjan), so any chain length is safe and the answer does not depend
on the order the items are listed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

__all__ = ["Layers", "components", "layers"]


def components(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected components, each after every component it refers to.

    ``graph`` maps a node to the nodes it refers to; references to nodes that are
    not keys of ``graph`` are ignored.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, refs = work[-1]
            for ref in refs:
                if ref not in graph:
                    continue
                if ref not in index:
                    index[ref] = low[ref] = len(index)
                    stack.append(ref)
                    on_stack.add(ref)
                    work.append((ref, iter(graph[ref])))
                    break
                if ref in on_stack:
                    low[node] = min(low[node], index[ref])
            else:
                work.pop()
                if work:
                    caller = work[-1][0]
                    low[caller] = min(low[caller], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(component)
    return found


class Layers:
    """What ``layers`` found: nodes in dependency order, their depth, and the refused."""

    __slots__ = ("broken", "depth", "order")

    def __init__(self) -> None:
        self.order: list[str] = []
        self.depth: dict[str, int] = {}
        #: node -> ("cycle", members sorted) or ("depth", []) for a chain over the limit.
        self.broken: dict[str, tuple[str, list[str]]] = {}


def layers(
    graph: Mapping[str, Sequence[str]],
    limit: int,
    *,
    counted: Callable[[str], bool] = lambda node: False,
) -> Layers:
    """Order ``graph`` dependencies first, refusing cycles and chains deeper than ``limit``.

    A node's depth is one more than its deepest reference's (0 without references);
    a refused node adds no depth to the nodes that refer to it, so only the node at
    the top of an overly long chain is refused. ``counted(node)`` True gives a node
    depth 1 even when none of its references is in ``graph`` (a missing prerequisite
    still costs a step).
    """
    out = Layers()
    for component in components(graph):
        first = component[0]
        if len(component) > 1 or first in graph[first]:
            members = sorted(component)
            for member in component:
                out.broken[member] = ("cycle", members)
                out.depth[member] = 0
                out.order.append(member)
            continue
        deepest = 0
        refs = [ref for ref in graph[first] if ref in graph]
        if refs or counted(first):
            deepest = 1 + max((out.depth[ref] for ref in refs), default=0)
        if deepest > limit:
            out.broken[first] = ("depth", [])
            deepest = 0
        out.depth[first] = deepest
        out.order.append(first)
    return out
