"""Run several FE cases in one MPI program (one start-up for all): ``mpirun -n N python THIS RUNS``.

``RUNS``: a JSON list of ``{"case": "spinodal" | "metamaterial", "options": {...}}``; each is
``simulate_<case>(**options)`` in turn (lists become tuples where the case takes a tuple).
"""

import json
import sys

from lse_material.fem_cases.metamaterial import simulate_metamaterial
from lse_material.fem_cases.spinodal import simulate_spinodal

CASES = {"spinodal": simulate_spinodal, "metamaterial": simulate_metamaterial}

for run in json.loads(sys.argv[1]):
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in run["options"].items()}
    CASES[run["case"]](**options)
