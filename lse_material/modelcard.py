"""``lse-material inspect MODEL``: the model card of a model file."""

from __future__ import annotations

import json
from pathlib import Path

from lse_material.modelfile import load
from lse_material.wells import wells_table

__all__ = ["model_card", "print_model_card"]


def model_card(model: str | Path) -> str:
    """A human-readable card: inputs (order, units), modes, ρ, training box, metrics, versions."""
    m = load(model)
    card = m.card
    lines = [
        f"model file   {model}",
        f"class        {card['class']}  (format {card['format_version']})",
        f"sha256       {card['sha256']}",
    ]
    units = card.get("input_units") or [""] * len(card["input_names"])
    box = card.get("training_box") or {}
    lines.append("inputs (column order):")
    for i, (name, unit) in enumerate(zip(card["input_names"], units, strict=True)):
        lo_hi = box.get(name)
        extent = f"  training box [{lo_hi[0]:g}, {lo_hi[1]:g}]" if lo_hi else ""
        lines.append(f"  {i}: {name:<8} [{unit}]{extent}")
    if "output" in card:
        lines.append(
            f"output       {card['output'].get('name')} [{card['output'].get('units', '')}]"
        )
    lse = getattr(m, "potential", m)  # compound models keep their LSE-ICNN as .potential
    if hasattr(lse, "gates"):
        gates = ", ".join(f"{g:.3g}" for g in lse.gates().detach().tolist())
        lines.append(
            f"modes        {int(lse.active_modes())} active of {lse.n_modes}  (gates {gates})"
        )
        lines.append(f"rho          {float(lse.rho().detach()):.6g} (normalised energy units)")
        lines.append(f"architecture {json.dumps(card['architecture'])}")
    for key in ("training", "metrics"):
        if key in card:
            lines.append(f"{key:<12} {json.dumps(card[key])}")
    if "wells" in card:  # WellAnalysis.to_json, or one per slice: {"c=0": table, ...}
        wells = card["wells"]
        tables = [wells] if "minima" in wells else list(wells.values())
        lines.extend(wells_table(table) for table in tables)
    lines.append("versions     " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()))
    return "\n".join(lines)


def print_model_card(model: str) -> None:
    """Print the model card of a model file: inputs, modes, ρ, training box, metrics, versions.

    Parameters
    ----------
    model
        a model file (.safetensors) written by ``lse_material.save``.
    """
    print(model_card(model))
