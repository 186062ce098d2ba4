"""Layout conversion for conv-heavy models, chosen by the target (owned by the schedules work)."""

from __future__ import annotations


def layout_passes(target) -> list:
    """Passes that convert conv layouts to what `target`'s default schedules prefer."""
    return []
