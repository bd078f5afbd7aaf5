"""Small LMDB cursor helpers shared by the store and its index modules.

Kept apart from node/store.py because store.py imports the index modules
(history_index, actions_store), which need these too.
"""

from __future__ import annotations

from typing import Any

import lmdb


def delete_prefix(txn: lmdb.Transaction[bytes], db: Any, prefix: bytes) -> None:
    """Delete every row of ``db`` whose key starts with ``prefix``."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    while cursor.key().startswith(prefix):
        if not cursor.delete():
            return
