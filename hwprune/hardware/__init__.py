"""Hardware targets, channel lattices and latency models (measured LUTs and analytic)."""
from .lattice import Lattice, LatticeRule
from .targets import TARGETS, Target, get_target

__all__ = ["Lattice", "LatticeRule", "TARGETS", "Target", "get_target"]
