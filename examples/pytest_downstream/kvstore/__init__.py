"""kvstore: a tiny line-based TCP key-value store (``SET k v`` / ``GET k``).

``python -m kvstore.server`` serves; :class:`kvstore.client.KVClient` (or ``python -m kvstore.client``) asks.
"""
