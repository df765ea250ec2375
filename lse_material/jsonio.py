"""Kept for existing imports: ``write_json`` lives in ``lse_material.atomic`` (atomic writes)."""

from lse_material.atomic import write_json

__all__ = ["write_json"]
