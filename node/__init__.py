"""chinwag.node: the I/O side of a chinwag node (server, store, sessions, federation)."""
