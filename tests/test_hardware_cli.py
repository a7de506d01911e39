"""hwprune targets / profile / bench / slim --target on tiny models."""
import json

from hwprune.cli import main
from hwprune.hardware import TARGETS


def test_targets_lists_every_target(capsys):
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [t.name for t in TARGETS]
    assert all(r["lattice_rules"] and r["lattice"] >= 1 for r in rows)


def test_targets_table(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert all(t.name in out for t in TARGETS), out  # whole names, even in CI's 80 columns
    assert "% 32" in out
