"""Partners of the shared zone and what each may read (declared in infra/partners.yaml).

police: every row of every table. A ward: its own municipality in tables of level `town`,
every row of tables of level `municipality`, nothing of level `police`. The same rule is
enforced twice: here for exports (`visitshare pull`), and by PostgreSQL row-level security
for the SQL tables (`visitshare db apply`, infra/sql/shared_rls.sql).
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visitshare.access.errors import PartnerError
from visitshare.release import releases as rel
from visitshare.release import shared
from visitshare.settings import Settings


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    kind: Literal["police", "ward"]
    name: str
    municipality_code: str | None = Field(None, pattern=r"^13[0-9]{3}$")

    @model_validator(mode="after")
    def _ward_has_municipality(self) -> Partner:
        if (self.kind == "ward") != (self.municipality_code is not None):
            raise ValueError("a ward needs municipality_code; police must not have one")
        return self

    @property
    def role(self) -> str:
        """Its PostgreSQL role."""
        return "vs_" + re.sub(r"[^a-z0-9_]", "_", self.id)

    def can_read(self, spec: shared.SharedTable) -> bool:
        return self.kind == "police" or spec.level is not shared.Level.POLICE

    def row_filter(self, spec: shared.SharedTable):
        """The Iceberg row filter of this partner's rows (None: all rows)."""
        from pyiceberg.expressions import EqualTo

        if self.kind == "ward" and spec.level is shared.Level.TOWN:
            # pyiceberg's EqualTo(term, literal): the pydantic mypy plugin types its __init__
            # from the model fields (term=, value=) instead.
            return EqualTo("municipality_code", self.municipality_code)  # type: ignore[call-arg]
        return None


class Partners(BaseModel):
    partners: list[Partner]

    @cached_property
    def by_id(self) -> dict[str, Partner]:
        return {p.id: p for p in self.partners}

    def get(self, partner_id: str) -> Partner:
        try:
            return self.by_id[partner_id]
        except KeyError:
            known = ", ".join(sorted(self.by_id))
            raise PartnerError(f"no partner {partner_id!r} (declared: {known})") from None


def load_partners(settings: Settings) -> Partners:
    """The partners file, parsed once per version of it (the sharing server asks per request)."""
    path = settings.partners_file
    try:
        st = path.stat()
    except OSError as exc:
        raise PartnerError(f"cannot read {path}: {exc.strerror}") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _PARTNERS:
        _PARTNERS.clear()
        _PARTNERS[key] = _parse(path)
    return _PARTNERS[key]


_PARTNERS: dict[tuple, Partners] = {}


def _parse(path) -> Partners:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        partners = Partners.model_validate(raw)
    except OSError as exc:
        raise PartnerError(f"cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise PartnerError(f"{path}: {exc}") from None
    ids = [p.id for p in partners.partners]
    if len(set(ids)) != len(ids):
        raise PartnerError(f"{path}: a partner id is declared twice")
    return partners


def view(settings: Settings, partner: Partner, release, name: str) -> pa.Table:
    """One table of a release as `partner` may see it."""
    spec = shared.table(settings, name)
    if not partner.can_read(spec):
        raise PartnerError(f"partner {partner.id!r} may not read {name!r} ({spec.level} only)")
    return rel.read_table(settings, release, name, partner.row_filter(spec))
