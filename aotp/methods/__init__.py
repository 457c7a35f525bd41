"""Registered methods. Importing this package registers every method module listed here."""

from aotp.methods.base import METHODS, Method, build_method, head_parameter_count
from aotp.methods import full_ft  # noqa: F401  (registers full_ft)
from aotp.methods import aot  # noqa: F401  (registers aot_fc, aot_kron)

__all__ = ["METHODS", "Method", "build_method", "head_parameter_count"]
