"""Disclosure control: pseudonyms, the shareable form of rows, contract rules, cell suppression."""

import hashlib
import hmac
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from visitshare.contracts import ContractError, geography, load_contract
from visitshare.contracts.odcs import custom_property, schema_property
from visitshare.quality.validate import validated_schema
from visitshare.release.anonymize import (
    PRIMARY,
    SECONDARY,
    TOWN_GROUP,
    anonymize,
    generalizable,
    pseudonym_columns,
    pseudonymize,
    shared_name,
    suppress_cells,
)
from visitshare.release.errors import DisclosureError
from visitshare.settings import REPO_ROOT

SCHEMAS = REPO_ROOT / "schemas"
JST = timezone(timedelta(hours=9))
KEY = b"test-key-0123456789abcdef-0123456"
P, S = PRIMARY, SECONDARY


def visit_row(**changes) -> dict:
    """A validated visit row with real-looking personal data."""
    row = {
        "event_id": "0b7e6f2e-8d7f-4c0f-9a49-6a3c1f0f2a11",
        "schema_version": 1,
        "produced_at": datetime(2026, 11, 2, 0, 5, tzinfo=JST),
        "visit_id": "V-13104-AB12CD34",
        "household_id": "HH-13104-0001-00001",
        "resident_name": "山田 太郎",
        "phone": "03-1234-5678",
        "address_line": "東京都新宿区西新宿2-8-1 メゾン西新宿101号室",
        "municipality_code": "13104",
        "town": "西新宿",
        # 23:30 in Tokyo on 1 November is 14:30 UTC the same day; 00:30 on the 2nd is the 1st in UTC
        "visited_at": datetime(2026, 11, 1, 23, 30, tzinfo=JST),
        "koban_id": "13104-K01",
        "officer_id": "P123456",
        "outcome": "completed",
        "residents_count": 2,
        "elderly_only": True,
        "vulnerabilities": ["weak_door_lock"],
        "recommendations": ["install_secondary_lock"],
        "materials": ["leaflet_burglary"],
        "workshop_invited": False,
        "concerns": ["burglary"],
        "follow_up_requested": False,
        "satisfaction": 4,
        "notes": "山田さん宅、090-1111-2222 に折り返し",
        "source_topic": "visits.outcomes.v1",
        "source_partition": 0,
        "source_offset": 0,
    }
    row.update(changes)
    return row


def incident_row(**changes) -> dict:
    row = {
        "event_id": "1c8f7a3f-9e8a-4d1a-8b5a-7b4d2a1a3b22",
        "schema_version": 1,
        "produced_at": datetime(2026, 12, 2, 12, 0, tzinfo=JST),
        "incident_id": "I-13104-00ABCDEF12",
        # 00:30 on 1 December in Tokyo is still 30 November in UTC
        "reported_at": datetime(2026, 12, 1, 0, 30, tzinfo=JST),
        # 08:00 on 1 November in Tokyo is 31 October (23:00) in UTC
        "occurred_at": datetime(2026, 11, 1, 8, 0, tzinfo=JST),
        "crime_type": "bicycle_theft",
        "municipality_code": "13104",
        "town": "西新宿",
        "latitude": 35.6896,
        "longitude": 139.6921,
        "address_line": "東京都新宿区西新宿2-8-1",
        "victim_household_id": "HH-13104-0001-00001",
        "victim_age_band": "30-39",
        "status": "reported",
        "narrative": "山田 太郎さんの自転車が盗まれた。連絡先 090-1111-2222",
        "source_topic": "incidents.reports.v1",
        "source_partition": 0,
        "source_offset": 0,
    }
    row.update(changes)
    return row


def table(contract, rows) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=validated_schema(contract))


# -- pseudonymize ----------------------------------------------------------------------------------
def test_pseudonym_is_keyed_hmac_hex_and_deterministic():
    ids = pa.array(["HH-13104-0001-00001", "HH-13104-0001-00002", "HH-13104-0001-00001"])
    first = pseudonymize(ids, KEY, "household").to_pylist()
    again = pseudonymize(ids, KEY, "household").to_pylist()
    assert first == again
    assert first[0] == first[2] != first[1]
    # by hand: HMAC-SHA-256(key, "household:" + id), first 32 hex characters
    expected = hmac.new(KEY, b"household:HH-13104-0001-00001", hashlib.sha256).hexdigest()[:32]
    assert first[0] == expected
    for pseudonym, value in zip(first, ids.to_pylist(), strict=True):
        assert re.fullmatch(r"[0-9a-f]{32}", pseudonym)
        assert value not in pseudonym and value.split("-")[-1] not in pseudonym


def test_pseudonym_depends_on_key_and_namespace():
    ids = pa.array(["HH-13104-0001-00001"])
    base = pseudonymize(ids, KEY, "household").to_pylist()
    assert pseudonymize(ids, b"another-key", "household").to_pylist() != base
    assert pseudonymize(ids, KEY, "visit").to_pylist() != base


def test_same_household_in_two_tables_gets_one_pseudonym():
    visits = pa.chunked_array([["HH-13104-0001-00001"], ["HH-13104-0001-00002"]])
    incidents = pa.array([None, "HH-13104-0001-00002", "HH-13104-0001-00001"])
    v = pseudonymize(visits, KEY, "household").to_pylist()
    i = pseudonymize(incidents, KEY, "household").to_pylist()
    assert i == [None, v[1], v[0]]


def test_nulls_stay_null():
    out = pseudonymize(pa.array([None, "HH-13104-0001-00001", None]), KEY, "household")
    assert out.type == pa.string()
    assert out.null_count == 2 and out.to_pylist()[0] is None and out.to_pylist()[2] is None
    assert pseudonymize(pa.array([None], pa.string()), KEY, "household").to_pylist() == [None]


def test_pseudonym_columns_join_visits_and_incidents_in_the_police_zone(contracts):
    vc, ic = contracts.get("visit_outcome"), contracts.get("incident_report")
    visits = table(vc, [visit_row(), visit_row(household_id="HH-13104-0001-00002")])
    incidents = table(
        ic,
        [
            incident_row(victim_household_id="HH-13104-0001-00002"),
            incident_row(victim_household_id=None),
        ],
    )
    v = pseudonym_columns(visits, vc, KEY)
    i = pseudonym_columns(incidents, ic, KEY)
    assert list(v) == ["household_pseudonym"]
    assert list(i) == ["victim_household_pseudonym"]
    by_hand = [
        hmac.new(KEY, f"household:{h}".encode(), hashlib.sha256).hexdigest()[:32]
        for h in ("HH-13104-0001-00001", "HH-13104-0001-00002")
    ]
    assert v["household_pseudonym"].to_pylist() == by_hand
    # the victim household is visited household 2: one pseudonym joins them; no victim: null
    assert i["victim_household_pseudonym"].to_pylist() == [by_hand[1], None]


# -- shared names and the contracts' disclosure sections -------------------------------------------
def test_shared_names(contracts):
    visits, incidents = contracts.get("visit_outcome"), contracts.get("incident_report")
    assert shared_name(visits.field("household_id")) == "household_pseudonym"
    assert shared_name(visits.field("visited_at")) == "visited_date"
    assert shared_name(incidents.field("occurred_at")) == "occurred_month"
    assert shared_name(incidents.field("victim_household_id")) == "victim_household_pseudonym"
    assert shared_name(visits.field("town")) == "town"
    assert generalizable(visits) == generalizable(incidents) == "town"


def test_contract_quasi_identifiers_and_sensitive_attributes(contracts):
    visits, incidents = contracts.get("visit_outcome"), contracts.get("incident_report")
    vq = visits.disclosure.quasi_identifiers
    assert list(vq) == [
        "municipality_code",
        "town",
        "koban_id",
        "visited_at",
        "residents_count",
        "elderly_only",
        "preferred_language",  # v2: a rare language singles a household out
        "interpreter_used",
    ]
    assert vq["preferred_language"].levels == ["exact", "category", "any"]
    assert set(vq["preferred_language"].categories.values()) == {"ja", "other_language"}
    assert vq["town"].levels == ["town", "town_group", "municipality"]
    assert vq["koban_id"].follows == "town"  # a koban narrows place as much as its town
    assert visits.field("koban_id").carries == ["place"]  # inferred from its 13xxx- pattern
    assert visits.field("visited_at").carries == ["time"]
    assert visits.field("vulnerabilities").pii.value == "sensitive"
    assert visits.disclosure.sensitive == ["vulnerabilities", "concerns"]
    assert list(incidents.disclosure.quasi_identifiers) == [
        "municipality_code",
        "town",
        "occurred_at",
        "reported_at",
        "crime_type",
        "victim_age_band",
    ]


def test_every_victim_age_band_has_a_coarser_band(contracts):
    """The published bands (the field's `band` rule) are the finest level of the
    quasi-identifier's hierarchy: each must have its coarser band."""
    incidents = contracts.get("incident_report")
    published = set(incidents.field("victim_age_band").disclosure.band.values())
    assert published == {"under_20", "20-39", "40-59", "60+", "unknown"}
    bands = incidents.disclosure.quasi_identifiers["victim_age_band"].bands
    assert set(bands) == published


# -- anonymize: visits -----------------------------------------------------------------------------
VISIT_PII = [
    "山田 太郎",
    "03-1234-5678",
    "東京都新宿区西新宿2-8-1 メゾン西新宿101号室",
    "HH-13104-0001-00001",
    "V-13104-AB12CD34",
    "P123456",
    "090-1111-2222",
    "0b7e6f2e-8d7f-4c0f-9a49-6a3c1f0f2a11",
]


def _visit_rows() -> list[dict]:
    return [
        visit_row(concerns=["burglary", "stalking", "domestic_violence"], residents_count=9),
        visit_row(
            household_id="HH-13104-0001-00002",
            visit_id="V-13104-XY98ZW76",
            resident_name="佐藤 花子",
            phone="090-9876-5432",
            visited_at=datetime(2026, 11, 2, 0, 30, tzinfo=JST),
            residents_count=5,
            concerns=["stalking", "elderly_isolation"],
            town="歌舞伎町",
        ),
        visit_row(residents_count=3, concerns=None, outcome="not_home", satisfaction=None),
    ]


@pytest.fixture
def anonymized_visits(contracts):
    contract = contracts.get("visit_outcome")
    return anonymize(table(contract, _visit_rows()), contract)


def test_anonymized_visits_have_exactly_the_shared_columns(anonymized_visits):
    out, _, _ = anonymized_visits
    assert out.column_names == [
        "municipality_code",
        "town",
        "visited_date",
        "koban_id",
        "outcome",
        "residents_count",
        "elderly_only",
        "vulnerabilities",
        "recommendations",
        "materials",
        "workshop_invited",
        "concerns",
        "follow_up_requested",
        "satisfaction",
        "preferred_language",  # v2's columns: null for v1 rows
        "interpreter_used",
        "town_group",
    ]
    text = str(out.to_pylist())
    assert [s for s in VISIT_PII if s in text] == []


def test_pseudonyms_are_not_shared(contracts, anonymized_visits):
    out, report, _ = anonymized_visits
    assert report.pseudonymized == ["household_id"]
    assert not [c for c in out.column_names if "household" in c or "pseudonym" in c]
    contract = contracts.get("visit_outcome")
    pseudonyms = pseudonym_columns(table(contract, _visit_rows()), contract, KEY)
    text = str(out.to_pylist())
    assert [p for p in pseudonyms["household_pseudonym"].to_pylist() if p in text] == []


def test_visited_date_is_the_tokyo_day(anonymized_visits):
    out, _, _ = anonymized_visits
    assert out.schema.field("visited_date").type == pa.date32()
    # 2026-11-01 23:30+09:00 is 14:30Z on the 1st; 2026-11-02 00:30+09:00 is 15:30Z on the 1st
    assert out.column("visited_date").to_pylist() == [
        date(2026, 11, 1),
        date(2026, 11, 2),
        date(2026, 11, 1),
    ]


def test_residents_count_capped(anonymized_visits, contracts):
    out, report, _ = anonymized_visits
    cap = contracts.get("visit_outcome").field("residents_count").disclosure.cap
    assert cap == 5
    # 9 → 5, 5 stays 5, 3 stays 3
    assert out.column("residents_count").to_pylist() == [5, 5, 3]
    assert report.capped == ["residents_count ≤ 5"]


def test_unknown_residents_count_stays_unknown(contracts):
    contract = contracts.get("visit_outcome")
    out, _, _ = anonymize(table(contract, [visit_row(residents_count=None)]), contract)
    assert out.column("residents_count").to_pylist() == [None]


def test_sensitive_concerns_removed_from_lists(anonymized_visits, contracts):
    out, report, municipality_only = anonymized_visits
    sensitive = contracts.get("visit_outcome").field("concerns").sensitive_values
    assert set(sensitive) == {"stalking", "domestic_violence"}
    assert out.column("concerns").to_pylist() == [["burglary"], ["elderly_isolation"], None]
    # row 0 loses stalking and domestic_violence, row 1 loses stalking: 3 values
    assert report.sensitive_values_removed == 3
    # a list value goes; the row keeps its town and is not sent to municipality level
    assert report.municipality_level_rows == 0
    assert municipality_only.tolist() == [False, False, False]
    assert out.column("town").to_pylist() == ["西新宿", "歌舞伎町", "西新宿"]


def test_other_lists_are_untouched(anonymized_visits):
    out, _, _ = anonymized_visits
    assert out.column("vulnerabilities").to_pylist() == [["weak_door_lock"]] * 3
    assert out.column("recommendations").to_pylist() == [["install_secondary_lock"]] * 3


def test_visit_field_report(anonymized_visits):
    _, report, _ = anonymized_visits
    assert sorted(report.dropped) == sorted(
        [
            "event_id",
            "schema_version",
            "produced_at",
            "visit_id",
            "resident_name",
            "phone",
            "address_line",
            "officer_id",
            "notes",
        ]
    )
    assert report.pseudonymized == ["household_id"]
    assert report.coarsened == ["visited_at → day"]
    assert report.banded == []
    assert report.kept == [
        "municipality_code",
        "town",
        "koban_id",
        "outcome",
        "elderly_only",
        "vulnerabilities",
        "recommendations",
        "materials",
        "workshop_invited",
        "concerns",
        "follow_up_requested",
        "satisfaction",
        "preferred_language",
        "interpreter_used",
    ]


# -- town groups -----------------------------------------------------------------------------------
SHINJUKU = geography.municipalities()["13104"].towns  # Japan Post's order
CHIYODA = geography.municipalities()["13101"].towns


def test_town_group_is_the_public_group_of_eight_neighbouring_towns(contracts):
    contract = contracts.get("visit_outcome")
    rows = [
        visit_row(town=SHINJUKU[0]),
        visit_row(town=SHINJUKU[7]),  # the 8th town: still the first group
        visit_row(town=SHINJUKU[8]),  # the 9th: the second
        visit_row(town=SHINJUKU[17]),  # the 18th: the third
        visit_row(municipality_code="13101", koban_id="13101-K01", town=CHIYODA[8]),
    ]
    out, _, _ = anonymize(table(contract, rows), contract)
    assert out.column(TOWN_GROUP).to_pylist() == [
        "13104-G01",
        "13104-G01",
        "13104-G02",
        "13104-G03",
        "13101-G02",
    ]
    assert [geography.town_group(r["municipality_code"], r["town"]) for r in rows] == (
        out.column(TOWN_GROUP).to_pylist()
    )


def test_town_group_of_a_town_not_in_the_municipality_is_null():
    assert geography.town_group("13104", CHIYODA[0]) is None  # 飯田橋 is in Chiyoda
    assert geography.town_group("13104", None) is None


def test_anonymize_an_empty_table(contracts):
    """The release derives its shared schema from an empty table."""
    contract = contracts.get("incident_report")
    out, report, municipality_only = anonymize(validated_schema(contract).empty_table(), contract)
    assert out.num_rows == 0 and municipality_only.shape == (0,)
    assert "town_group" in out.column_names and out.schema.field("town_group").type == pa.string()
    assert report.municipality_level_rows == 0 and report.pseudonymized == ["victim_household_id"]


# -- anonymize: incidents --------------------------------------------------------------------------
@pytest.fixture
def anonymized_incidents(contracts):
    contract = contracts.get("incident_report")
    rows = [
        incident_row(),
        incident_row(crime_type="sexual_offence", victim_age_band="80+"),
        incident_row(crime_type="domestic_violence", victim_age_band="0-19", town="歌舞伎町"),
        incident_row(victim_household_id=None, victim_age_band=None, latitude=None),
        incident_row(victim_age_band="unknown", town="歌舞伎町"),
        incident_row(victim_age_band="50-59"),
    ]
    return anonymize(table(contract, rows), contract)


def test_anonymized_incidents_columns(anonymized_incidents):
    out, report, _ = anonymized_incidents
    assert out.column_names == [
        "reported_month",
        "occurred_month",
        "crime_type",
        "municipality_code",
        "town",
        "victim_age_band",
        "status",
        "town_group",
    ]
    for gone in ("latitude", "longitude", "address_line", "narrative", "incident_id"):
        assert gone in report.dropped and gone not in out.column_names
    assert report.pseudonymized == ["victim_household_id"]
    text = str(out.to_pylist())
    assert "山田" not in text and "35.6896" not in text and "I-13104" not in text
    assert "HH-13104" not in text


def test_incident_age_banded_and_months_in_tokyo_time(anonymized_incidents):
    out, report, _ = anonymized_incidents
    # 30-39 → 20-39, 80+ → 60+, 0-19 → under_20, null stays null, unknown → unknown,
    # 50-59 → 40-59
    assert out.column("victim_age_band").to_pylist() == [
        "20-39",
        "60+",
        "under_20",
        None,
        "unknown",
        "40-59",
    ]
    assert report.banded == ["victim_age_band"]
    # reported 2026-12-01 00:30+09:00 (UTC: Nov 30), occurred 2026-11-01 08:00+09:00 (UTC: Oct 31)
    assert out.column("reported_month").to_pylist() == ["2026-12"] * 6
    assert out.column("occurred_month").to_pylist() == ["2026-11"] * 6
    assert out.schema.field("occurred_month").type == pa.string()


def test_sensitive_crimes_keep_their_town_and_are_flagged_municipality_only(anonymized_incidents):
    out, report, municipality_only = anonymized_incidents
    assert out.column("crime_type").to_pylist()[1:3] == ["sexual_offence", "domestic_violence"]
    assert municipality_only.dtype == np.bool_
    assert municipality_only.tolist() == [False, True, True, False, False, False]
    assert report.municipality_level_rows == 2
    # the town stays until generalization puts the flagged rows at municipality level
    towns = ["西新宿", "西新宿", "歌舞伎町", "西新宿", "歌舞伎町", "西新宿"]
    assert out.column("town").to_pylist() == towns
    assert out.column("municipality_code").to_pylist() == ["13104"] * 6
    assert out.column(TOWN_GROUP).to_pylist() == [geography.town_group("13104", t) for t in towns]
    assert report.sensitive_values_removed == 0


def test_municipality_only_follows_the_rows_across_chunks(contracts):
    contract = contracts.get("incident_report")
    chunked = pa.concat_tables(
        [
            table(contract, [incident_row(), incident_row(crime_type="domestic_violence")]),
            table(contract, [incident_row(crime_type="sexual_offence", town="歌舞伎町")]),
        ]
    )
    assert chunked.column("crime_type").num_chunks == 2
    out, report, municipality_only = anonymize(chunked, contract)
    assert municipality_only.tolist() == [False, True, True]
    assert report.municipality_level_rows == 2
    assert out.column("town").to_pylist() == ["西新宿", "西新宿", "歌舞伎町"]
    assert out.column(TOWN_GROUP).to_pylist() == [
        geography.town_group("13104", t) for t in ("西新宿", "西新宿", "歌舞伎町")
    ]


# -- contracts: fields without a disclosure rule, quasi-identifiers --------------------------------
def _write_contract(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((SCHEMAS / "visit_outcome.v1.yaml").read_text(encoding="utf-8"))
    mutate(raw)
    path = tmp_path / "visit_outcome.v1.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _field(raw: dict, name: str) -> dict:
    return schema_property(raw, name)


def _rule(raw: dict, name: str) -> dict:
    """The field's disclosure rule: the custom property {property: disclosure, value: ...}."""
    rule = custom_property(_field(raw, name), "disclosure")
    assert rule is not None
    return rule


def _qis(raw: dict) -> dict:
    return custom_property(raw, "disclosure")["value"]["quasi_identifiers"]


def test_quasi_identifier_without_disclosure_rule_is_refused_at_load(tmp_path):
    def drop_rule(raw):
        _field(raw, "elderly_only")["customProperties"].remove(_rule(raw, "elderly_only"))

    path = _write_contract(tmp_path, drop_rule)
    with pytest.raises(ContractError, match=r"'elderly_only'.*disclosure rule"):
        load_contract(path)


def test_published_quasi_identifier_must_be_listed(tmp_path):
    def unlist(raw):
        del _qis(raw)["elderly_only"]

    path = _write_contract(tmp_path, unlist)
    with pytest.raises(ContractError, match=r"'elderly_only' is published but not listed"):
        load_contract(path)


@pytest.mark.parametrize("pii", ["quasi_identifier", "public"])
def test_published_koban_must_be_a_quasi_identifier_because_it_narrows_place(tmp_path, pii):
    """The koban's code starts with the municipality code: it narrows place whatever its PII
    class says (it was `public` before), so it cannot be published outside the hierarchy."""

    def unlist(raw):
        del _qis(raw)["koban_id"]
        _field(raw, "koban_id")["classification"] = pii
        assert _rule(raw, "koban_id")["value"] == "keep"

    path = _write_contract(tmp_path, unlist)
    with pytest.raises(ContractError, match=r"'koban_id' is published and narrows place"):
        load_contract(path)


def test_published_timestamp_must_be_a_quasi_identifier(tmp_path):
    def unlist(raw):
        del _qis(raw)["visited_at"]

    path = _write_contract(tmp_path, unlist)
    with pytest.raises(ContractError, match=r"'visited_at' is published and narrows time"):
        load_contract(path)


def test_dropped_koban_needs_no_hierarchy(tmp_path):
    """What is not published narrows nothing: dropping the koban is the other way out."""

    def drop(raw):
        del _qis(raw)["koban_id"]
        _rule(raw, "koban_id")["value"] = "drop"

    contract = load_contract(_write_contract(tmp_path, drop))
    assert "koban_id" not in contract.disclosure.quasi_identifiers
    out, report, _ = anonymize(table(contract, [visit_row()]), contract)
    assert "koban_id" not in out.column_names and "koban_id" in report.dropped


def test_unchanged_copy_loads(tmp_path):
    """The refusals above come from the edit, not from the round trip through YAML."""
    contract = load_contract(_write_contract(tmp_path, lambda raw: None))
    assert contract.field("elderly_only").disclosure.action == "keep"
    assert contract.field("koban_id").disclosure.action == "keep"
    assert contract.disclosure.quasi_identifiers["koban_id"].follows == "town"


def test_anonymize_refuses_a_field_without_rule_even_if_the_loader_was_bypassed(contracts):
    contract = contracts.get("visit_outcome")
    # model_copy does not validate: a contract the loader would have refused
    fields = [
        f.model_copy(update={"disclosure": None}) if f.name == "elderly_only" else f
        for f in contract.fields
    ]
    broken = contract.model_copy(update={"fields": fields})
    with pytest.raises(DisclosureError, match="'elderly_only'"):
        anonymize(table(contract, [visit_row()]), broken)


# -- cell suppression ------------------------------------------------------------------------------
def _lines_with_one_suppressed(status, row_totals=True, column_totals=True) -> list:
    bad = []
    if row_totals:
        bad += [("row", i) for i in range(status.shape[0]) if np.count_nonzero(status[i]) == 1]
    if column_totals:
        bad += [("col", j) for j in range(status.shape[1]) if np.count_nonzero(status[:, j]) == 1]
    return bad


def test_suppress_cells_3x3_by_hand():
    cells = np.array([[20, 5, 30], [12, 15, 40], [8, 25, 3]])
    status = suppress_cells(cells, 10)
    # primaries: 5 (0,1), 8 (2,0), 3 (2,2)
    # row 0 has one → smallest other non-zero is 20 (0,0); row 2 has two
    # column 1 has one → 15 (1,1) < 25; column 2 has one → 30 (0,2) < 40
    # row 1 now has one (1,1) → 12 (1,0) < 40; every line now has 0 or ≥ 2
    assert status.tolist() == [[S, P, S], [S, S, 0], [P, 0, P]]
    assert _lines_with_one_suppressed(status) == []


def test_suppress_cells_without_totals_marks_primaries_only():
    cells = np.array([[20, 5, 30], [12, 15, 40], [8, 25, 3]])
    status = suppress_cells(cells, 10, row_totals=False, column_totals=False)
    assert status.tolist() == [[0, P, 0], [0, 0, 0], [P, 0, P]]


def test_suppress_cells_primary_range_and_zero():
    # 0 is not suppressed, 1..9 are, 10 is not
    status = suppress_cells(np.array([[0, 1, 9, 10]]), 10, row_totals=False, column_totals=False)
    assert status.tolist() == [[0, P, P, 0]]


def test_suppress_cells_prefers_non_zero_secondary():
    # 4 is primary; the row total would reveal it; of 0 and 12, the zero would hide nothing
    status = suppress_cells(np.array([[0, 4, 12]]), 10, row_totals=True, column_totals=False)
    assert status.tolist() == [[0, P, S]]


def test_suppress_cells_zero_as_last_resort():
    # the only other cell is zero: suppressed anyway, so the 4 is not alone in its row
    status = suppress_cells(np.array([[4, 0]]), 10, row_totals=True, column_totals=False)
    assert status.tolist() == [[P, S]]


@pytest.mark.parametrize("seed", range(5))
def test_suppress_cells_leaves_no_line_with_a_single_suppressed_cell(seed):
    cells = np.random.default_rng(seed).integers(0, 30, size=(6, 5))
    status = suppress_cells(cells, 10)
    primaries = (cells >= 1) & (cells < 10)
    assert primaries.any()
    assert ((status == P) == primaries).all()  # secondaries never relabel a primary
    assert _lines_with_one_suppressed(status) == []
    rows_only = suppress_cells(cells, 10, row_totals=True, column_totals=False)
    assert _lines_with_one_suppressed(rows_only, column_totals=False) == []


def test_loader_refuses_a_town_without_a_published_municipality(tmp_path):
    """The recoding moves a town up to its municipality: a contract that does not publish the
    municipality cannot say where such a row stands, and is refused when loaded."""

    def drop_municipality(raw):
        _rule(raw, "municipality_code")["value"] = "drop"
        del _qis(raw)["municipality_code"]

    path = _write_contract(tmp_path, drop_municipality)
    with pytest.raises(ContractError, match="must publish municipality_code"):
        load_contract(path)
