"""Validation's first step: the producer's contract check, run again on every landed value.

Events can reach a topic without our producer (a plain Kafka client, another system), so the
check the producer makes before sending is made again here, with the same decoder
(`decode_value`) and the same validator (`EventValidator`, each event against the contract
version its `schema_version` names): what the producer would reject, validation rejects, with
the same reason code. The Great Expectations suite then runs the
rules a contract cannot say on the rows that pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from visitshare.contracts import Contract, EventValidator, Reason, Violation
from visitshare.contracts.formats import DecodeProblem
from visitshare.settings import Settings

DECODE_REASONS = frozenset(p.value for p in DecodeProblem)


def reason_of(v: Violation) -> tuple[str, str]:
    """(quarantine reason, rule id) of one violation.

    Field names come from the contract, except for unknown fields, whose names are the
    sender's and may be personal data: those are reported without their name."""
    code = v.reason.value
    if code in DECODE_REASONS:
        return f"decode:{code}", f"contract.decodes.{code}"
    if v.reason is Reason.UNKNOWN_FIELD or v.field is None:
        return code, f"contract.{code}.event"
    return f"{code}:{v.field}", f"contract.{code}.{v.field}"


def reason_of_rule(rule_id: str) -> str:
    """The quarantine reason a contract rule id stands for (`reason_of`, read backwards)."""
    parts = rule_id.split(".")
    if len(parts) != 3:
        return rule_id  # the check as a whole ("contract")
    _, code, where = parts
    if code == "decodes":
        return f"decode:{where if where in DECODE_REASONS else 'landing'}"
    return code if where == "event" else f"{code}:{where}"


class ContractCheck:
    """The check of one dataset's landed values: each against the contract version its
    `schema_version` names (`contracts`: the versions on the dataset's topic,
    `ContractRegistry.compatible`), as the producer checks it."""

    def __init__(self, contracts: Contract | Sequence[Contract], settings: Settings):
        self.validator = EventValidator(
            contracts,
            max_event_bytes=settings.max_event_bytes,
            future_tolerance=timedelta(seconds=settings.future_tolerance_seconds),
            clock=settings.clock,
        )

    def __call__(self, value: bytes | None, parse_status: str) -> list[tuple[str, str]]:
        """(reason, rule id) for every problem of one landed value; [] when it is valid."""
        _, problems = self.validator.check_bytes(value)
        if problems:
            return list(dict.fromkeys(reason_of(p) for p in problems))
        if parse_status != "ok":
            # Landing could not type what the contract accepts: never let it through silently.
            return [(f"decode:{parse_status}", "contract.decodes.landing")]
        return []
