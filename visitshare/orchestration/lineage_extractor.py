"""The OpenLineage provider's extractor for our TaskFlow tasks (`[openlineage] extractors`).

The provider picks an extractor by the operator's class: every `@task` function runs as
`_PythonDecoratedOperator`. Its COMPLETE and FAIL events get the datasets the task instance
recorded through `visitshare.orchestration.lineage` while it ran (the provider calls this in
the task's own process, or a fork of it). Its START event gets none: the task has not run yet,
and the provider then falls back to the task's outlets, which it cannot translate either
(`visitshare://` assets are Airflow's scheduling names, not data sources).
"""

from __future__ import annotations

from airflow.providers.openlineage.extractors.base import BaseExtractor, OperatorLineage
from openlineage.client.event_v2 import Dataset as OLDataset

from visitshare.orchestration import lineage


class TaskFlowExtractor(BaseExtractor):
    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["_PythonDecoratedOperator"]

    def _execute_extraction(self) -> OperatorLineage:
        return OperatorLineage()

    def extract_on_complete(self, task_instance) -> OperatorLineage:
        record = lineage.recorded(lineage.task_key(task_instance))
        return OperatorLineage(
            inputs=[OLDataset(namespace=d.namespace, name=d.name) for d in record.inputs],
            outputs=[OLDataset(namespace=d.namespace, name=d.name) for d in record.outputs],
        )
