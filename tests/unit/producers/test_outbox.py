"""The outbox on a real SQLite file: order, delete-after-confirm, survives reopening."""

from producers.outbox import Outbox, OutboxRecord


def _rec(i: int) -> OutboxRecord:
    return OutboxRecord(
        "visits.outcomes.v1",
        f"k{i}".encode(),
        f"v{i}".encode(),
        [("event_id", f"{i}".encode())],
        "event",
    )


def test_records_come_back_in_order_and_survive_reopening(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    box.append(_rec(i) for i in range(5))
    box.append([_rec(5)])
    box.close()

    box = Outbox(path)
    peeked = box.peek(10)
    assert [r.value for r in peeked] == [f"v{i}".encode() for i in range(6)]
    assert peeked[0].headers == [("event_id", b"0")]
    assert box.pending() == 6 and box.summary() == {"visits.outcomes.v1": 6}


def test_deleting_confirmed_rows_leaves_the_rest_in_order(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.append(_rec(i) for i in range(4))
    first_two = box.peek(2)
    box.delete(r.seq for r in first_two)
    assert [r.value for r in box.peek(10)] == [b"v2", b"v3"]
    box.append([_rec(9)])  # later arrivals queue behind
    assert [r.value for r in box.peek(10)] == [b"v2", b"v3", b"v9"]
