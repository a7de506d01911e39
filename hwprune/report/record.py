"""The Report record: the report of one slim run as typed core sections plus the sections its
callers add, and the JSON it is written as (docs/report.md).

The JSON keys and their order are an interface that scripts read: the core sections come
first, in the order of the fields below, then every other section in the order it was first
added. Adding a section of a name already there replaces it in its place, as assigning a
key of a dict does, so a caller that restates a section (iterative_slim restates "kept",
"params" and "plan" against the original model) leaves the order as it was.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import InputError
from .json_io import json_value, write_json


@dataclass(frozen=True, eq=False)
class Report:
    """One verified cut, stated: the sections every slim report has (built in one place,
    hwprune.report.build.slim_report), then `sections`, ((name, JSON data), ...): the plan's
    ("lattice", or "plan" and "depth") and those its callers add ("source", "latency_ms",
    "onnx", "outputs", "recover", or their own) with `with_section`. The record is frozen;
    the JSON data inside it is never changed in place by hwprune: a new section is a new Report."""
    hwprune_version: str
    trace: str
    trace_note: str | None
    config: dict
    params: dict  # {"before": n, "after": n}
    macs: dict  # {"before": n, "after": n}
    verify: dict  # the oracle's result
    compensated: dict  # {"layers": n, "reads": n}
    groups: list  # one entry per channel group (group_json)
    kept: dict  # {parameter: {dim: [kept indices]}}: what `apply` repeats
    declared_rules: list
    sections: tuple = ()

    @classmethod
    def core_names(cls) -> tuple:
        return tuple(f.name for f in fields(cls) if f.name != "sections")

    @classmethod
    def of(cls, data: Mapping) -> Report:
        """The Report of a report dict (what hwprune.slim returns, or a report JSON read back)."""
        core = cls.core_names()
        missing = [k for k in core if k not in data]
        if missing:
            raise InputError(f"the report has no {', '.join(missing)}: give a report that hwprune.slim returned "
                             "or `hwprune slim --report` wrote")
        return cls(**{k: data[k] for k in core}, sections=tuple((k, v) for k, v in data.items() if k not in core))

    def with_section(self, name: str, data) -> Report:
        """This report with the section `name` set to `data` (JSON data: dicts, lists, strings,
        numbers, or arrays and paths, written as lists and strings): replaced in its place where
        the report has it, else added last. The report it is called on is left as it was."""
        if not isinstance(name, str) or not name:
            raise InputError(f"report section {name!r}: a section needs a name, a non-empty string")
        try:
            json.dumps(data, default=json_value)
        except (TypeError, ValueError) as e:
            raise InputError(f"report section {name!r}: its data is not JSON ({e}): give dicts, lists, strings "
                             "and numbers") from e
        if name in self.core_names():
            return dataclasses.replace(self, **{name: data})
        names = [k for k, _ in self.sections]
        if name in names:
            at = names.index(name)
            return dataclasses.replace(self, sections=self.sections[:at] + ((name, data),) + self.sections[at + 1:])
        return dataclasses.replace(self, sections=self.sections + ((name, data),))

    def with_sections(self, more: Mapping) -> Report:
        """with_section for each item of `more`, in its order."""
        report = self
        for name, data in more.items():
            report = report.with_section(name, data)
        return report

    def to_json(self) -> dict:
        """The report as the dict that is written as JSON (a new dict; the sections' data is shared)."""
        return {**{k: getattr(self, k) for k in self.core_names()}, **dict(self.sections)}

    def __getitem__(self, name: str):
        if name in self.core_names():
            return getattr(self, name)
        for k, v in self.sections:
            if k == name:
                return v
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return name in self.core_names() or any(k == name for k, _ in self.sections)

    def get(self, name: str, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def write_json(self, path: Path) -> None:
        write_json(path, self.to_json())

    def to_html(self) -> str:
        """One self-contained HTML page with plots (hwprune.report.html)."""
        from .html import render
        return render(self.to_json())
