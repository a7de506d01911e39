"""The model as a graph: tracing, per-op channel rules, and coupled channel groups."""
