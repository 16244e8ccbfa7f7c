"""Events for the validation tests."""

import uuid
from datetime import UTC, datetime, timedelta


def incident(**changes):
    day = (datetime.now(UTC) - timedelta(days=3)).astimezone().date().isoformat()
    event = {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "produced_at": f"{day}T12:00:00+09:00",
        "incident_id": "I-13104-00ABCDEF12",
        "reported_at": f"{day}T11:00:00+09:00",
        "occurred_at": f"{day}T08:00:00+09:00",
        "crime_type": "bicycle_theft",
        "municipality_code": "13104",
        "town": "西新宿",
        "status": "reported",
        "victim_age_band": "20-29",
    }
    event.update(changes)
    return event
