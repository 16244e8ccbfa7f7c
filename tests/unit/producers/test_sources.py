"""Reading police-system exports: JSON Lines as raw bytes, CSV typed by the contract."""

import pytest

from producers.sources import csv_row_to_event, infer_dataset, read_export
from visitshare.contracts import EventValidator, Reason


def test_csv_cells_are_typed_by_the_contract(contracts):
    contract = contracts.get("visit_outcome")
    event = csv_row_to_event(
        {
            "residents_count": "3",
            "elderly_only": "TRUE",
            "concerns": "burglary; special_fraud",
            "materials": '["leaflet_burglary"]',
            "satisfaction": "",
            "town": "西新宿",
        },
        contract,
    )
    assert event == {
        "residents_count": 3,
        "elderly_only": True,
        "concerns": ["burglary", "special_fraud"],
        "materials": ["leaflet_burglary"],
        "town": "西新宿",
    }


def test_cells_that_do_not_convert_reach_validation_unchanged(contracts):
    contract = contracts.get("visit_outcome")
    event = csv_row_to_event({"residents_count": "three", "elderly_only": "yes"}, contract)
    assert event == {"residents_count": "three", "elderly_only": "yes"}
    problems = EventValidator(contract).validate(event)
    assert {(p.reason, p.field) for p in problems} >= {
        (Reason.WRONG_TYPE, "residents_count"),
        (Reason.WRONG_TYPE, "elderly_only"),
    }


def test_jsonl_lines_stay_bytes_even_when_broken(tmp_path, contracts):
    path = tmp_path / "visit_outcome_export.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{broken\n\x93\x8c\x8b\x9e\n')
    items = list(read_export(path, contracts))
    assert [i.payload for i in items] == [b'{"a": 1}', b"{broken", b"\x93\x8c\x8b\x9e"]
    assert {i.dataset for i in items} == {"visit_outcome"}


def test_a_shift_jis_csv_fails_before_anything_is_read(tmp_path, contracts):
    path = tmp_path / "incident_report.csv"
    path.write_bytes("town\n西新宿\n".encode("cp932"))
    with pytest.raises(ValueError, match="--encoding cp932"):
        read_export(path, contracts)
    items = list(read_export(path, contracts, encoding="cp932"))
    assert items[0].payload == {"town": "西新宿"}


def test_dataset_comes_from_the_file_name_or_must_be_given(tmp_path, contracts):
    assert infer_dataset(tmp_path / "incident_report-2026-11.csv", contracts) == "incident_report"
    with pytest.raises(ValueError, match="--dataset"):
        infer_dataset(tmp_path / "export.csv", contracts)


@pytest.mark.parametrize(
    ("line", "cells"),
    [
        ("13104,西新宿", 2),  # fewer cells than the header: once silently accepted short
        ("13104,西新宿,completed,extra", 4),  # more: once silently dropped
        ("13104,西新宿,note, with a comma", 4),  # an unquoted comma in the last column
    ],
)
def test_a_csv_row_of_the_wrong_shape_goes_whole_to_the_dlq(contracts, tmp_path, line, cells):
    path = tmp_path / "visit_outcome.csv"
    path.write_text(f"municipality_code,town,notes\n13104,西新宿,fine\n{line}\n", encoding="utf-8")
    good, bad = list(read_export(path, contracts))
    assert good.problems == () and good.payload["notes"] == "fine"
    (problem,) = bad.problems
    assert problem.reason is Reason.CSV_ROW_SHAPE
    assert f"row 3 of visit_outcome.csv has {cells} cells; its header has 3" in problem.message
    assert bad.payload == line.encode()  # the row as it was, for the DLQ
