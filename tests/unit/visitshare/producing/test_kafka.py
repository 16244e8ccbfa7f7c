"""The memoized partitioner picks the partition Kafka's default partitioner would."""

from kafka.cluster import ClusterMetadata
from kafka.partitioner.default import DefaultPartitioner

from visitshare.producing.kafka import KeyPartitions


class _Metadata(ClusterMetadata):
    def __init__(self, topic: str, count: int):
        super().__init__()
        self._topic, self._count = topic, count

    def topics(self, exclude_internal_topics=True):
        return {self._topic}

    def partitions_for_topic(self, topic):
        return set(range(self._count))

    def available_partitions_for_topic(self, topic):
        return set(range(self._count))


def test_same_partition_as_kafkas_default_partitioner():
    ours = KeyPartitions()
    keys = [f"13104:{town}".encode() for town in ("西新宿", "歌舞伎町", "高田馬場", "四谷")] + [
        b"",
        b"x" * 100,
    ]
    for count in (1, 3, 6, 12):
        theirs = _Metadata("visits.outcomes.v1", count)
        for key in keys:
            expected = DefaultPartitioner().partition(
                "visits.outcomes.v1", key, key, None, None, theirs
            )
            assert ours("visits.outcomes.v1", count, key) == expected
            assert ours("visits.outcomes.v1", count, key) == expected  # memoized, same answer
