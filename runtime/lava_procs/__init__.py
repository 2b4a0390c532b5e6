"""Lava Processes and ProcessModels, alone in their package: Lava discovers a Process's models by
running every module in its directory (docs/DESIGN.md §7).

Lava fixes multiprocessing's start method ('fork') when it is first imported, and fails if
anything fixed it before (a first tqdm progress bar does, with its lock): clear it first.
"""

import multiprocessing
import sys

if "lava.magma.runtime.message_infrastructure.multiprocessing" not in sys.modules and \
        multiprocessing.get_start_method(allow_none=True) == "fork":
    multiprocessing.set_start_method(None, force=True)
