"""AoT P-Tuning (``aot_fc``, ``aot_kron``); importing this package registers both methods.

See :mod:`aotp.methods.aot.method` for the equations, parameter formulas and inference behaviour.
"""

from aotp.methods.aot.method import (INFERENCE_MODES, TABLE_DTYPES, AoTFC, AoTKronecker, AoTMethod,
                                     aot_method_names, backbone_shapes, build_aot_method)
from aotp.methods.aot.module import AoTBias
from aotp.methods.aot.reparam import FCReparametrization, KroneckerReparametrization, kron_index, kron_split

__all__ = ["AoTBias", "AoTFC", "AoTKronecker", "AoTMethod", "FCReparametrization", "INFERENCE_MODES",
           "KroneckerReparametrization", "TABLE_DTYPES", "aot_method_names", "backbone_shapes",
           "build_aot_method", "kron_index", "kron_split"]
