"""The emulate wing (root, kernel): the live network, link engine, forwarding, calibration, nodes,
player, probes.

The wing is also the public context manager `netemu.emulate(plan, **options)`
(emulate.emulation.emulate): `netemu.emulate` names both, so calling the package builds the
network. This file stays light: the link engine and the probe program start from it.
"""

import sys
import types


class _Wing(types.ModuleType):
    def __call__(self, plan, **options):
        """Build the emulated network of `plan` (options: see `Emulation`), yield it, tear it down."""
        from .emulation import emulate   # lazy: the engine and probe programs start without Mininet and pandas
        return emulate(plan, **options)


sys.modules[__name__].__class__ = _Wing
