"""What the steps need to read a file's data: the reading limits from the settings,
and the look at its first bytes (or its footer) that launch takes before any model
starts (:mod:`workers.scoring.preview`, which ``scorefleet check`` runs too)."""

from __future__ import annotations

from workers.scoring.preview import expansion_limits, read_limits

__all__ = ["expansion_limits", "read_limits"]
