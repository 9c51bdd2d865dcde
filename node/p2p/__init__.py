"""Peer-to-peer layer: keys, signed records, the record log, federation and torrents."""
