"""hwprune's latency benchmark suite: `python -m benchmarks run` (the comparison studies),
`python -m benchmarks readme` (the READMEs' results from results/), and
`pytest benchmarks/ --benchmark-only` (the micro-benchmarks). See benchmarks/README.md.

The studies are scripts (`python benchmarks/bench_x.py`) that import each other by module name
(`from bench_sparse import ...`, `import record`); importing this package puts their folder on
sys.path so that the same imports work when the suite, a test or the GPU driver imports them.
"""
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
