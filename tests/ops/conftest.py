"""Fixtures shared with the BitTorrent tests: two live nodes and a published file."""

from tests.p2p.test_torrents import node_a, node_b, published  # noqa: F401
