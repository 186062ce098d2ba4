"""Schedules: the tuning database first (a later stage), default schedule rules second."""

from .default import default_schedules

__all__ = ["default_schedules"]
