"""Landing workers own disjoint shares of the partitions that together cover them all."""

from consumers.landing import Lander


def test_workers_split_partitions_disjointly(settings):
    topics = {
        "visits.outcomes.v1": 6,
        "incidents.reports.v1": 3,
        "visits.outcomes.v1.dlq": 1,
        "releases.v1": 1,
    }
    for workers in (1, 2, 3, 4):
        landers = [
            Lander(settings, list(topics), worker=i, workers=workers) for i in range(workers)
        ]
        for topic, count in topics.items():
            for p in range(count):
                assert sum(lander.owns(topic, p) for lander in landers) == 1
    two = [Lander(settings, list(topics), worker=i, workers=2) for i in range(2)]
    shares = [sum(w.owns(t, p) for t, c in topics.items() for p in range(c)) for w in two]
    assert min(shares) >= 4  # roughly balanced (11 partitions)
