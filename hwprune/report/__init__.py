"""The report of a slim run: built in one place from the stages' records, written as JSON and
as HTML from that one record (docs/report.md).

    report = slim_report(original, plan, verified, config)      # hwprune.report.build
    report = report.with_section("source", {...})                 # a caller's own section
    report.to_json(); report.write_json(path); report.to_html()

Report (hwprune.report.record) is frozen: the CLI, the pipeline (SlimPass), the deployment
bundle and iterative_slim each add their sections with `with_section`, never by changing a dict.
"""
from __future__ import annotations

from .build import config_json, count_params, group_json, hwprune_version, slim_report
from .json_io import json_text, json_value, write_json
from .record import Report

__all__ = ["Report", "slim_report", "count_params", "group_json", "hwprune_version", "config_json", "write_json",
           "json_text", "json_value"]
