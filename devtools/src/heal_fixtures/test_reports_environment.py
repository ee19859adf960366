"""Monthly report generation: CSV export, totals and archiving."""
import csv
import os
from datetime import date

import pytest

from reports.monthly import build_report, export_csv

OUTPUT_DIR = "build/reports/monthly"


@pytest.fixture
def orders():
    return [
        {"id": 1, "day": date(2026, 10, 3), "total": 120.0, "country": "DE"},
        {"id": 2, "day": date(2026, 10, 9), "total": 80.5, "country": "FR"},
        {"id": 3, "day": date(2026, 10, 28), "total": 42.0, "country": "DE"},
    ]


def test_report_totals_by_country(orders):
    report = build_report(orders, month=date(2026, 10, 1))
    assert report.totals == {"DE": 162.0, "FR": 80.5}


def test_csv_export_writes_one_row_per_order(orders):
    path = os.path.join(OUTPUT_DIR, "2026-10.csv")
    export_csv(build_report(orders, month=date(2026, 10, 1)), path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert rows[0]["country"] == "DE"


def test_report_of_an_empty_month():
    report = build_report([], month=date(2026, 2, 1))
    assert report.totals == {}
