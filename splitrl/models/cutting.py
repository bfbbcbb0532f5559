"""Cut a plain network into stages by module name, or find the cut points automatically.

The network is traced with ``torch.fx`` and its graph split after the named modules: stage ``k``
runs everything between cut ``k - 1`` and cut ``k``, and what follows the last cut (pooling,
flatten, classifier) is the final exit head. A cut is only valid where exactly one tensor flows
across it (not inside a residual block, whose skip connection would cross), and the error says so.

``auto_cuts`` chooses the cuts as the model card's ``cuts: auto`` documents: among the network's
blocks (its top-level modules, with sequential containers opened one level), keep each block whose
output is no larger than every earlier block's output (the last of a run of equal sizes), always
keep the last block that still outputs a feature map (the input's rank, more than one position),
and keep at most ``max_cuts``, the smallest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp


class _LeafTracer(fx.Tracer):
    """Trace through everything except the named modules (and torch's own layers)."""

    def __init__(self, leaves: Sequence[str]) -> None:
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self.leaves or super().is_leaf_module(module, qualified_name)


def network_blocks(network: nn.Module) -> list[str]:
    """The blocks ``auto`` cuts between: top-level modules, sequential containers opened once."""
    blocks: list[str] = []
    for name, child in network.named_children():
        if isinstance(child, nn.Sequential | nn.ModuleList):
            blocks.extend(f"{name}.{inner}" for inner, _ in child.named_children())
        else:
            blocks.append(name)
    return blocks


def cut_network(
    network: nn.Module, cuts: Sequence[str]
) -> tuple[list[fx.GraphModule], fx.GraphModule]:
    """The stages between the cuts and the final head after the last one.

    :param network: the network (its ``forward`` must be traceable by ``torch.fx``)
    :param cuts: names of the modules (as in ``named_modules``) after which to cut, in order
    :return: ``len(cuts)`` stages and the head; they share the network's modules
    :raises ValueError: naming a cut that is unknown, called more or less than once, out of
        order, crossed by more than one tensor, or followed by nothing
    """
    if not cuts:
        raise ValueError("need at least one cut")
    known = dict(network.named_modules())
    unknown = [name for name in cuts if name not in known or not name]
    if unknown:
        raise ValueError(f"cuts {unknown} are not modules of the network")
    graph = _trace(network, cuts)
    nodes = list(graph.nodes)
    positions = []
    for name in cuts:
        calls = [
            i for i, node in enumerate(nodes) if node.op == "call_module" and node.target == name
        ]
        if len(calls) != 1:
            raise ValueError(
                f"cut {name!r}: the forward calls this module {len(calls)} times, not once"
            )
        positions.append(calls[0])
    if positions != sorted(set(positions)):
        raise ValueError(f"cuts must follow the order of the forward, got {list(cuts)}")
    part = _partitions(nodes, positions)
    for k, position in enumerate(positions):
        _check_single_crossing(nodes, part, k, nodes[position], cuts[k])
    if not any(part[node] == len(cuts) and node.op not in ("output", "get_attr") for node in nodes):
        raise ValueError(f"nothing follows the last cut {cuts[-1]!r} to form the final exit")
    segments = [
        _segment(network, nodes, part, k, nodes[positions[k - 1]] if k else None)
        for k in range(len(cuts) + 1)
    ]
    return segments[:-1], segments[-1]


def auto_cuts(network: nn.Module, example: torch.Tensor, max_cuts: int) -> list[str]:
    """Cut points chosen by output size (see the module docstring).

    :param network: the network, in eval mode
    :param example: one input batch, as the network expects it (normalized)
    :param max_cuts: at most this many cuts (at least 1)
    """
    if max_cuts < 1:
        raise ValueError(f"max_cuts must be at least 1, got {max_cuts}")
    blocks = network_blocks(network)
    graph = _trace(network, blocks)
    module = fx.GraphModule(network, graph)
    with torch.no_grad():
        ShapeProp(module).propagate(example)
    nodes = list(graph.nodes)
    rank = example.dim()
    sized: list[tuple[str, int]] = []
    for i, node in enumerate(nodes):
        if node.op != "call_module" or node.target not in blocks:
            continue
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape") or len(meta.shape) != rank:
            continue
        if torch.Size(meta.shape[2:]).numel() < 2:  # pooled: the final head's part
            continue
        name = str(node.target)
        if sum(n.op == "call_module" and n.target == name for n in nodes) != 1:
            continue
        if _crossing(nodes, _partitions(nodes, [i]), 0) == [node]:
            sized.append((name, int(torch.Size(meta.shape[1:]).numel())))
    if not sized:
        raise ValueError("no block of the network outputs a feature map that a cut can follow")
    chosen: list[tuple[str, int]] = []
    smallest = None
    for index, (name, size) in enumerate(sized):
        if smallest is not None and size > smallest:
            continue
        follows_equal = chosen and chosen[-1][1] == size and sized[index - 1][0] == chosen[-1][0]
        if follows_equal:
            chosen[-1] = (name, size)
        else:
            chosen.append((name, size))
        smallest = size
    last = sized[-1]
    if chosen[-1][0] != last[0]:
        chosen.append(last)
    return [name for name, _ in chosen[-max_cuts:]]


def _trace(network: nn.Module, leaves: Sequence[str]) -> fx.Graph:
    try:
        graph = _LeafTracer(leaves).trace(network)
    except Exception as error:
        raise ValueError(
            f"torch.fx cannot trace the network's forward ({error}); write a StagedModule instead"
        ) from error
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"the network's forward must take one input, it takes {len(placeholders)}")
    return graph


def _partitions(nodes: Sequence[fx.Node], positions: Sequence[int]) -> dict[fx.Node, int]:
    """Which segment every node falls in: the number of cuts before it."""
    return {node: sum(i > p for p in positions) for i, node in enumerate(nodes)}


def _crossing(nodes: Sequence[fx.Node], part: dict[fx.Node, int], k: int) -> list[fx.Node]:
    """The values made at or before segment ``k`` and used after it (parameters excepted)."""
    return [
        node
        for node in nodes
        if part[node] <= k and node.op != "get_attr" and any(part[user] > k for user in node.users)
    ]


def _check_single_crossing(
    nodes: Sequence[fx.Node], part: dict[fx.Node, int], k: int, cut: fx.Node, name: str
) -> None:
    crossing = _crossing(nodes, part, k)
    if crossing != [cut]:
        others = [str(node.name) for node in crossing if node is not cut]
        raise ValueError(
            f"cut {name!r}: more than its output crosses it ({', '.join(others)}); a skip "
            "connection spans it, cut after the whole block instead"
        )
    if any(part[user] != k + 1 for user in cut.users):
        raise ValueError(f"cut {name!r}: its output is used past the next stage")


def _segment(
    network: nn.Module,
    nodes: Sequence[fx.Node],
    part: dict[fx.Node, int],
    k: int,
    incoming: fx.Node | None,
) -> fx.GraphModule:
    """Segment ``k`` as its own module: from the incoming value to the next cut or the output."""
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    if incoming is not None:
        values[incoming] = graph.placeholder("x")
    last: fx.Node | None = None
    for node in nodes:
        if node.op == "placeholder":
            if k == 0:
                values[node] = graph.placeholder("x")
            continue
        if node.op == "output":
            if part[node] == k:
                graph.output(fx.node.map_arg(node.args[0], values.__getitem__))
            continue
        if node.op == "get_attr":
            if any(part[user] == k for user in node.users):
                values[node] = graph.node_copy(node, values.__getitem__)
            continue
        if part[node] == k:
            values[node] = graph.node_copy(node, values.__getitem__)
            last = node
    if not any(node.op == "output" for node in graph.nodes):
        assert last is not None
        graph.output(values[last])
    return fx.GraphModule(network, graph)
