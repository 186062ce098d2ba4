"""Math and elementwise converters."""

from __future__ import annotations
