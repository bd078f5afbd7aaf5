"""chinwag.cli: the ``chinwag`` command."""
