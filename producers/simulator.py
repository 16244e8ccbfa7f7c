"""A realistic, reproducible stream of Tokyo home-visit outcomes and incident reports, and of
the programme's feedback loop: visit requests, workshop sessions and their attendance, and
resident surveys.

Same configuration and seed → the same events, byte for byte. Volumes are scaled to about
2 million visits and 100 thousand incidents a year for the whole of Tokyo, spread over
municipalities by population and over towns by a size weight. Japan Post's data has no
population per town, so a town's size is a seeded log-normal weight, larger for towns that
Japan Post divides into 丁目 (the denser ones).

The feedback datasets are tied to the visits (a request is answered by a visit, households
invited during a visit attend a workshop, a survey follows a visit) and are drawn from random
streams of their own, seeded by (seed, dataset): adding them leaves the visits and incidents of
a seed exactly as they were. Whenever a feedback dataset is chosen, the visits and incidents
are simulated in full (and emitted only if chosen), so a feedback dataset does not depend on
which other datasets are chosen either.

Direct identifiers (names from faker ja_JP, phones, addresses) are realistic on purpose, and
notes sometimes repeat a name or phone number, so that later stages have real PII to remove.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import cached_property
from itertools import accumulate

from faker import Faker

from visitshare.clock import SYSTEM_CLOCK, Clock
from visitshare.contracts import ContractRegistry, FieldType, PiiClass, Reason, geography

JST = timezone(timedelta(hours=9), "JST")  # Asia/Tokyo has had no DST since 1951

TOKYO_POPULATION = sum(m.population for m in geography.municipalities().values())
VISITS_PER_PERSON_DAY = 2_000_000 / TOKYO_POPULATION / 365
INCIDENTS_PER_PERSON_DAY = 100_000 / TOKYO_POPULATION / 365

# Daytime population and nightlife raise recorded crime per resident in the centre.
CRIME_INTENSITY = {
    "13101": 6.0, "13102": 2.2, "13103": 2.2, "13104": 2.4, "13106": 1.7,
    "13113": 2.4, "13116": 1.8, "13202": 1.3,
}  # fmt: skip
_MEAN_INTENSITY = (
    sum(m.population * CRIME_INTENSITY.get(c, 1.0) for c, m in geography.municipalities().items())
    / TOKYO_POPULATION
)

# Visits: weekdays mostly; Monday=0.
VISIT_WEEKDAY_FACTOR = [1.25, 1.25, 1.25, 1.25, 1.25, 0.45, 0.05]
VISIT_HOURS = [(9, 8), (10, 12), (11, 12), (12, 4), (13, 10), (14, 13), (15, 13), (16, 11),
               (17, 6), (18, 3)]  # fmt: skip
_HOURS = [h for h, _ in VISIT_HOURS]
_HOUR_CUM = list(accumulate(w for _, w in VISIT_HOURS))

VULNERABILITY_BASE = {
    "weak_door_lock": 0.16, "no_secondary_lock": 0.33, "unlocked_windows": 0.14,
    "poor_lighting": 0.18, "no_intercom": 0.10, "no_camera_intercom": 0.28,
    "accessible_balcony": 0.09, "spare_key_outside": 0.05, "no_window_film": 0.24,
    "unlocked_habit": 0.08, "bicycle_unlocked": 0.11, "landline_unprotected": 0.10,
}  # fmt: skip
RECOMMENDATION_FOR = {
    "weak_door_lock": "replace_door_lock", "no_secondary_lock": "install_secondary_lock",
    "unlocked_windows": "lock_windows", "poor_lighting": "add_sensor_light",
    "no_intercom": "install_camera_intercom", "no_camera_intercom": "install_camera_intercom",
    "accessible_balcony": "lock_windows", "spare_key_outside": "keep_keys_inside",
    "no_window_film": "apply_window_film", "unlocked_habit": "keep_keys_inside",
    "bicycle_unlocked": "bicycle_double_lock", "landline_unprotected": "call_blocker_device",
}  # fmt: skip
CONCERN_BASE = {
    "burglary": 0.20, "special_fraud": 0.12, "bicycle_theft": 0.14, "suspicious_person": 0.09,
    "traffic_safety": 0.12, "noise_or_neighbours": 0.06, "elderly_isolation": 0.02,
    "disaster_preparedness": 0.18, "stalking": 0.01, "domestic_violence": 0.005,
}  # fmt: skip

# MPD recorded-crime mix (bicycle theft and special fraud common, robbery rare).
CRIME_MIX = {
    "bicycle_theft": 27.0, "other": 21.0, "shoplifting": 11.0, "special_fraud": 9.0,
    "vandalism": 7.0, "assault": 6.0, "domestic_violence": 5.0, "vehicle_break_in": 4.0,
    "burglary_vacant_home": 4.0, "sexual_offence": 1.8, "burglary_while_sleeping": 1.0,
    "snatch_theft": 0.8, "burglary_occupied_home": 0.6, "robbery": 0.4,
}  # fmt: skip
HOUSEHOLD_CRIMES = {"burglary_vacant_home", "burglary_while_sleeping", "burglary_occupied_home",
                    "special_fraud", "domestic_violence"}  # fmt: skip
CRIME_HOURS = {
    "burglary_vacant_home": range(9, 18), "burglary_while_sleeping": range(0, 6),
    "special_fraud": range(9, 17), "shoplifting": range(10, 22), "bicycle_theft": range(7, 24),
    "assault": (*range(18, 24), 0, 1, 2), "domestic_violence": (*range(18, 24), 0, 1),
    "snatch_theft": range(16, 24), "robbery": (*range(20, 24), 0, 1, 2, 3),
}  # fmt: skip
REPORT_DELAY_HOURS = {
    "bicycle_theft": (1, 72), "burglary_vacant_home": (1, 12), "special_fraud": (24, 336),
    "domestic_violence": (0, 48), "vandalism": (2, 96), "other": (0, 48),
}  # fmt: skip
CRIME_JA = {
    "burglary_vacant_home": "空き巣", "burglary_while_sleeping": "忍込み",
    "burglary_occupied_home": "居空き", "bicycle_theft": "自転車盗", "snatch_theft": "ひったくり",
    "vehicle_break_in": "車上ねらい", "shoplifting": "万引き", "special_fraud": "特殊詐欺",
    "assault": "暴行", "robbery": "強盗", "vandalism": "器物損壊", "sexual_offence": "性犯罪",
    "domestic_violence": "配偶者暴力", "other": "その他",
}  # fmt: skip
AGE_BANDS = ["0-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80+"]

# Kinds of malformed event (--bad-rate), and the rejection reason each one must get.
BAD_KINDS: dict[str, Reason] = {
    "broken_json": Reason.INVALID_JSON,
    "not_an_object": Reason.NOT_AN_OBJECT,
    "non_utf8": Reason.INVALID_UTF8,
    "missing_field": Reason.MISSING_FIELD,
    "wrong_type": Reason.WRONG_TYPE,
    "unknown_code": Reason.UNKNOWN_VALUE,
    "future_timestamp": Reason.FUTURE_TIMESTAMP,
    "oversized_field": Reason.TOO_LONG,
    "oversized_event": Reason.OVERSIZED_EVENT,
    "unknown_field": Reason.UNKNOWN_FIELD,
    "bad_format": Reason.BAD_FORMAT,
    "out_of_range": Reason.OUT_OF_RANGE,
    "wrong_schema_version": Reason.WRONG_SCHEMA_VERSION,
}

# The programme's core streams (drawn from the main random stream) and its feedback loop
# (each drawn from a stream of its own, tied to the visits).
CORE_DATASETS = ("visit_outcome", "incident_report")
FEEDBACK_DATASETS = ("visit_request", "workshop_session", "workshop_attendance", "resident_survey")
DATASETS = (*CORE_DATASETS, *FEEDBACK_DATASETS)

# Visit requests: the share of completed visits that answer a request (elderly households ask
# more, often through the ward's welfare office), the days from request to visit (log-normal),
# and requests still open, scheduled or cancelled per visit of the day.
REQUEST_ANSWERED_SHARE = {False: 0.10, True: 0.18}  # by elderly_only
REQUEST_DELAY_DAYS = (4.0, 0.8)  # median, sigma of the log
REQUESTS_UNANSWERED_PER_VISIT = 0.03
REQUEST_CHANNELS = {
    False: {"app": 40, "phone": 30, "counter": 20, "welfare_referral": 10},
    True: {"app": 8, "phone": 45, "counter": 20, "welfare_referral": 27},
}  # fmt: skip
REQUEST_STATUS_UNANSWERED = {"open": 45, "scheduled": 35, "cancelled": 20}
# Workshops: sessions per koban and month (1 + Poisson), their topics and venues (capacity
# range), the share of invited households that come, and how full a session gets.
SESSIONS_EXTRA_PER_KOBAN_MONTH = 0.8
WORKSHOP_TOPICS = {
    "disaster_preparedness": 30, "special_fraud": 30, "burglary_prevention": 15,
    "cyber_fraud": 10, "child_safety": 10, "other": 5,
}  # fmt: skip
VENUES = {"koban": (25, (8, 20)), "community_center": (50, (20, 80)),
          "school": (15, (30, 150)), "other": (10, (10, 50))}  # fmt: skip
INVITED_ATTEND_SHARE = {False: 0.25, True: 0.35}  # by elderly_only
INVITATION_HORIZON_DAYS = 60  # an invitation is for the koban's next session within this
SESSION_FILL = (0.25, 0.85)  # walk-ins fill a session to this share of its capacity
# Surveys: the share of completed visits followed by a questionnaire, the hours until it is
# answered (log-normal median, sigma), and surveys answered on their own per visit of the day.
SURVEY_AFTER_VISIT_SHARE = 0.18
SURVEY_DELAY_HOURS = (36.0, 0.9)
SURVEYS_UNLINKED_PER_VISIT = 0.03
RECOMMEND_BY_SATISFACTION = {1: 0.05, 2: 0.15, 3: 0.45, 4: 0.8, 5: 0.95}
# visit_outcome v2 (`SimConfig.visit_v2_share`): the household's preferred language, asked on
# completed visits, and whether an interpreter was used. Foreign residents' share of households
# per municipality (Shinjuku and Toshima have the most; Tokyo's mean is about 4 %), and their
# languages (Tokyo's foreign residents by nationality, roughly).
V2_LANGUAGE_ASKED = 0.85
FOREIGN_HOUSEHOLD_SHARE = {"13104": 0.13, "13116": 0.11, "13118": 0.08, "13123": 0.065}
FOREIGN_HOUSEHOLD_SHARE_DEFAULT = 0.04
FOREIGN_LANGUAGES = {"zh": 38, "ko": 13, "vi": 9, "tl": 6, "ne": 6, "en": 6, "pt": 1, "es": 1,
                     "other": 20}  # fmt: skip
INTERPRETER_USED = 0.45  # of completed visits to a household whose language is not Japanese


@dataclass(frozen=True, slots=True)
class SimEvent:
    dataset: str  # contract name
    payload: dict | bytes  # a decoded event, or raw bytes for malformed ones
    bad_kind: str | None = None


@dataclass(frozen=True)
class SimConfig:
    days: int = 7
    municipalities: tuple[str, ...] = ("13104", "13112", "13120")
    seed: int = 42
    start: date | None = None  # default: the `days` full days before today (Tokyo)
    bad_rate: float = 0.0
    scale: float = 1.0  # multiplies volumes (1.0 = year-scale Tokyo rates)
    datasets: tuple[str, ...] = DATASETS
    # Share of visits sent as visit_outcome v2 (schema_version 2, with the household's
    # preferred language and whether an interpreter was used), the rest as v1, side by side.
    # Decided per visit from a random stream of its own: the v1 visits of a seed are the same
    # whatever the share. Off by default (the tests' and benchmarks' streams); `visitshare run`
    # and `visitshare simulate` send 25 %.
    visit_v2_share: float = 0.0

    def __post_init__(self):
        if self.days < 1:
            raise ValueError("days must be at least 1")
        if not 0.0 <= self.bad_rate <= 1.0:
            raise ValueError("bad rate must be between 0 and 1")
        if self.scale <= 0:
            raise ValueError("scale must be positive")
        if not 0.0 <= self.visit_v2_share <= 1.0:
            raise ValueError("the share of v2 visits must be between 0 and 1")
        unknown = set(self.datasets) - set(DATASETS)
        if unknown:
            raise ValueError(f"unknown datasets {sorted(unknown)}; choose from {DATASETS}")


@dataclass
class _Town:
    code: str
    index: int
    name: str
    weight: float
    households: int
    koban: str
    officers: tuple[str, ...]
    elderly_share: float
    vuln_mult: dict[str, float]
    concern_mult: dict[str, float]
    lat: float
    lon: float
    chome: bool
    visited: deque = field(default_factory=lambda: deque(maxlen=300))


@dataclass
class _Area:
    """One municipality's simulated world: towns, koban, officers."""

    m: geography.Municipality
    towns: list[_Town]
    cum_weights: list[float]


def _poisson(rng: random.Random, mu: float) -> int:
    if mu <= 0:
        return 0
    if mu > 30:  # normal approximation, fine at these sizes
        return max(0, round(rng.gauss(mu, math.sqrt(mu))))
    limit, k, p = math.exp(-mu), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


class Simulator:
    """Generates the event stream for one configuration. Iterate `events()`."""

    def __init__(
        self,
        config: SimConfig,
        contracts: ContractRegistry,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.config = config
        self.contracts = contracts
        if config.visit_v2_share:
            try:
                contracts.version("visit_outcome", 2)
            except KeyError:
                raise ValueError(
                    "v2 visits need the contract visit_outcome.v2 in the contracts folder"
                ) from None
        # "Now" for the default window and for malformed "future" timestamps: from the one
        # clock, so that a validator given the same clock agrees on what is in the future.
        self._now = clock.now().astimezone(JST)
        today = self._now.date()
        self.start = config.start or today - timedelta(days=config.days)
        self.end = datetime.combine(self.start + timedelta(days=config.days), time(), JST)
        self._areas = [self._build_area(m) for m in geography.resolve(list(config.municipalities))]
        fake = Faker("ja_JP")
        fake.seed_instance(config.seed)
        self._last_names = [fake.last_name() for _ in range(400)]
        self._first_names = [fake.first_name() for _ in range(400)]
        self._buildings = [fake.building_name() for _ in range(60)]

    # -- the world ----------------------------------------------------------------------------
    def _build_area(self, m: geography.Municipality) -> _Area:
        # Seeded per municipality: a ward's world does not depend on which others are simulated.
        rng = random.Random(f"{self.config.seed}:{m.code}")
        raw = [rng.lognormvariate(0.0, 0.8) * (1.6 if t in m.chome_towns else 1.0) for t in m.towns]
        total = sum(raw)
        ward_households = m.population / 1.95
        spread = 0.035 if m.is_special_ward or m.code < "13300" else 0.02
        old_area = rng.uniform(0.7, 1.4)
        towns = []
        for i, (name, w) in enumerate(zip(m.towns, raw, strict=True)):
            koban_no = i // 8 + 1
            officers = tuple(f"P{m.code[2:]}{koban_no:02d}{j}" for j in range(rng.randint(3, 6)))
            elderly = min(0.6, max(0.05, rng.gauss(0.22, 0.07) * old_area))
            towns.append(
                _Town(
                    code=m.code,
                    index=i,
                    name=name,
                    weight=w,
                    households=max(40, round(ward_households * w / total)),
                    koban=f"{m.code}-K{koban_no:02d}",
                    officers=officers,
                    elderly_share=elderly,
                    vuln_mult={
                        k: rng.lognormvariate(0, 0.35) * (old_area if "lock" in k else 1.0)
                        for k in VULNERABILITY_BASE
                    },
                    concern_mult={k: rng.lognormvariate(0, 0.4) for k in CONCERN_BASE},
                    lat=m.latitude + rng.uniform(-spread, spread),
                    lon=m.longitude + rng.uniform(-spread, spread) * 1.2,
                    chome=name in m.chome_towns,
                )
            )
        cum, acc = [], 0.0
        for t in towns:
            acc += t.weight
            cum.append(acc)
        return _Area(m, towns, cum)

    def _household(self, town: _Town, index: int) -> dict:
        """A household's fixed attributes, derived from its id (no state kept per household)."""
        hid = f"HH-{town.code}-{town.index:04d}-{index:05d}"
        r = random.Random(f"{self.config.seed}:{hid}")
        elderly = r.random() < town.elderly_share
        residents = r.choice((1, 1, 2)) if elderly else r.choice((1, 1, 2, 2, 3, 3, 4, 4, 5, 6))
        if town.chome:
            street = f"{r.randint(1, 5)}丁目{r.randint(1, 30)}番{r.randint(1, 25)}号"
        else:
            street = f"{r.randint(1, 3000)}番地{r.randint(1, 30)}"
        if r.random() < 0.55:
            street += f" {r.choice(self._buildings)}{r.randint(1, 12)}{r.randint(1, 9):02d}号室"
        if r.random() < 0.5:
            phone = f"0{r.choice((70, 80, 90))}-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}"
        elif town.code < "13200":
            phone = f"03-{r.randint(3000, 6999)}-{r.randint(1000, 9999)}"
        elif town.code < "13360":
            phone = f"042-{r.randint(300, 999)}-{r.randint(1000, 9999)}"
        else:
            phone = f"04992-{r.randint(2, 9)}-{r.randint(1000, 9999)}"
        m = geography.municipality(town.code)
        return {
            "id": hid,
            "name": f"{r.choice(self._last_names)} {r.choice(self._first_names)}",
            "phone": phone,
            "address": f"東京都{m.name}{town.name}{street}",
            "residents": residents,
            "elderly": elderly,
            "lat": town.lat + r.uniform(-0.004, 0.004),
            "lon": town.lon + r.uniform(-0.005, 0.005),
        }

    # -- volumes -----------------------------------------------------------------------------
    @cached_property
    def plan(self) -> list[tuple[date, str, int, int]]:
        """(day, municipality, visits, incidents) for every day: drawn before any event."""
        rng = random.Random(f"{self.config.seed}:plan")
        weekly = sum(VISIT_WEEKDAY_FACTOR) / 7
        out = []
        for d in range(self.config.days):
            day = self.start + timedelta(days=d)
            for area in self._areas:
                pop = area.m.population * self.config.scale
                mu_v = pop * VISITS_PER_PERSON_DAY * VISIT_WEEKDAY_FACTOR[day.weekday()] / weekly
                mu_i = (
                    pop * INCIDENTS_PER_PERSON_DAY
                    * CRIME_INTENSITY.get(area.m.code, 1.0) / _MEAN_INTENSITY
                )  # fmt: skip
                visits = _poisson(rng, mu_v) if "visit_outcome" in self._world else 0
                incidents = _poisson(rng, mu_i) if "incident_report" in self._world else 0
                out.append((day, area.m.code, visits, incidents))
        return out

    @cached_property
    def _world(self) -> frozenset[str]:
        """The core datasets simulated: the chosen ones, or all of them when a feedback dataset
        (which follows the visits) is chosen."""
        chosen = set(self.config.datasets)
        return frozenset(CORE_DATASETS if chosen & set(FEEDBACK_DATASETS) else chosen)

    @cached_property
    def total(self) -> int:
        """The number of events `events()` yields. The feedback datasets follow the simulated
        visits, so when one is chosen they are counted by generating the stream once."""
        if not set(self.config.datasets) & set(FEEDBACK_DATASETS):
            return sum(v + i for _, _, v, i in self.plan)
        return sum(1 for _ in self.events())

    # -- events ------------------------------------------------------------------------------
    def events(self) -> Iterator[SimEvent]:
        """All events, day by day, each day ordered by the time the police system emitted them."""
        rng = random.Random(self.config.seed)
        areas = {a.m.code: a for a in self._areas}
        for area in self._areas:  # each call starts the same world afresh (`total` runs one)
            for town in area.towns:
                town.visited.clear()
        chosen = set(self.config.datasets)
        feedback = _Feedback(self, areas) if chosen & set(FEEDBACK_DATASETS) else None
        # Which visits are v2: a stream of its own, so the main stream never sees its draws.
        v2_share = self.config.visit_v2_share
        v2_rng = random.Random(f"{self.config.seed}:visit_outcome:v2")
        by_day: dict[date, list[tuple[str, int, int]]] = {}
        for day, code, v, i in self.plan:
            by_day.setdefault(day, []).append((code, v, i))
        for day, rows in by_day.items():
            batch: list[dict] = []
            for code, n_visits, n_incidents in rows:
                area = areas[code]
                batch.extend(self._visit(rng, area, day) for _ in range(n_visits))
                batch.extend(self._incident(rng, area, day) for _ in range(n_incidents))
            batch.sort(key=lambda e: e["produced_at"])
            out: list[tuple[str, SimEvent]] = []
            for event in batch:
                dataset = "visit_outcome" if "visit_id" in event else "incident_report"
                v1_form = None
                if v2_share and dataset == "visit_outcome" and v2_rng.random() < v2_share:
                    v1_form = dict(event)
                    self._as_v2(v2_rng, event)
                # The draw is made for every core event, emitted or not: the main stream (and so
                # every later event) is the same whichever datasets are chosen.
                if self.config.bad_rate and rng.random() < self.config.bad_rate:
                    if v1_form is None:
                        sim_event = self._corrupt(rng, dataset, event)
                    else:
                        # The main stream draws what it draws for the v1 form (every later
                        # event stays as it is without v2 visits); the v2 event goes wrong the
                        # same way, drawn from the v2 stream.
                        kind = self._corrupt(rng, dataset, v1_form).bad_kind
                        sim_event = self._corrupt(v2_rng, dataset, event, kind)
                else:
                    sim_event = SimEvent(dataset, event)
                if dataset in chosen:
                    out.append((event["produced_at"], sim_event))
            if feedback is None:
                yield from (e for _, e in out)
                continue
            visits = [e for e in batch if "visit_id" in e]
            out.extend(feedback.day(day, visits, {code: v for code, v, _ in rows}))
            # Stable: the core events keep their order; feedback events slot in by their time.
            out.sort(key=lambda pair: pair[0])
            yield from (e for _, e in out)

    def _pick_town(self, rng: random.Random, area: _Area) -> _Town:
        return rng.choices(area.towns, cum_weights=area.cum_weights)[0]

    def _event_id(self, rng: random.Random) -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def _case_no(self, rng: random.Random, prefix: str, code: str) -> str:
        return f"{prefix}-{code}-{rng.getrandbits(40):010X}"

    def _visit(self, rng: random.Random, area: _Area, day: date) -> dict:
        town = self._pick_town(rng, area)
        hh_index = rng.randrange(town.households)
        hh = self._household(town, hh_index)
        town.visited.append(hh_index)
        hour = rng.choices(_HOURS, cum_weights=_HOUR_CUM)[0]
        visited_at = datetime.combine(day, time(hour, rng.randrange(60), rng.randrange(60)), JST)
        weekend = day.weekday() >= 5
        p_not_home = (0.30 if weekend else 0.46) * (0.7 if hour >= 17 else 1.0)
        p_not_home *= 0.55 if hh["elderly"] else 1.0
        u = rng.random()
        if u < p_not_home:
            outcome = "not_home"
        elif u < p_not_home + 0.07:
            outcome = "declined"
        elif u < p_not_home + 0.13:
            outcome = "rescheduled"
        else:
            outcome = "completed"
        produced = min(visited_at + timedelta(minutes=rng.randint(5, 180)), self.end)
        event: dict = {
            "event_id": self._event_id(rng),
            "schema_version": 1,
            "produced_at": _iso(produced),
            "visit_id": self._case_no(rng, "V", town.code),
            "household_id": hh["id"],
            "address_line": hh["address"],
            "municipality_code": town.code,
            "town": town.name,
            "visited_at": _iso(visited_at),
            "koban_id": town.koban,
            "officer_id": rng.choice(town.officers),
            "outcome": outcome,
        }
        if outcome != "not_home" or rng.random() < 0.7:  # the name is on the household card
            event["resident_name"] = hh["name"]
        if rng.random() < 0.6:
            event["phone"] = hh["phone"]
        if rng.random() < 0.85:  # household size is known from an earlier card
            event["residents_count"] = hh["residents"]
            event["elderly_only"] = hh["elderly"]
        if outcome == "completed":
            self._assess(rng, town, hh, event)
        elif outcome == "not_home":
            if rng.random() < 0.6:
                event["materials"] = ["leaflet_burglary"]
            if rng.random() < 0.4:
                event["notes"] = rng.choice(
                    ("不在のため防犯チラシを投函。", "不在。巡回連絡カードを差し置き。")
                )
        elif outcome == "declined":
            if rng.random() < 0.5:
                event["notes"] = rng.choice(("多忙のため辞退。", "インターホン越しに辞退された。"))
        elif rng.random() < 0.7:
            event["notes"] = rng.choice(
                (
                    f"{hh['name']}様の希望により後日再訪。連絡先 {hh['phone']}。",
                    "夕方以降の訪問を希望。",
                    f"{hh['name'].split()[0]}様、来週再訪予定。",
                )
            )
        return event

    def _language(self, household_id: str) -> str:
        """A household's preferred language, fixed by its id (a stream of its own)."""
        r = random.Random(f"{self.config.seed}:{household_id}:language")
        code = household_id.split("-")[1]
        share = FOREIGN_HOUSEHOLD_SHARE.get(code, FOREIGN_HOUSEHOLD_SHARE_DEFAULT)
        if r.random() >= share:
            return "ja"
        return r.choices(list(FOREIGN_LANGUAGES), list(FOREIGN_LANGUAGES.values()))[0]

    def _as_v2(self, rng: random.Random, event: dict) -> None:
        """A visit written against visit_outcome v2: the officer notes the household's
        preferred language on most completed visits, and whether an interpreter helped."""
        event["schema_version"] = 2
        if event["outcome"] != "completed" or rng.random() >= V2_LANGUAGE_ASKED:
            return
        language = self._language(event["household_id"])
        event["preferred_language"] = language
        event["interpreter_used"] = language != "ja" and rng.random() < INTERPRETER_USED

    def _assess(self, rng: random.Random, town: _Town, hh: dict, event: dict) -> None:
        """What a completed visit records: weaknesses, advice, material, concerns, satisfaction."""
        elderly = hh["elderly"]
        vulns = []
        for k, base in VULNERABILITY_BASE.items():
            p = base * town.vuln_mult[k]
            if k == "landline_unprotected" and elderly:
                p = 0.5
            if rng.random() < min(p, 0.95):
                vulns.append(k)
        recs = list(dict.fromkeys(RECOMMENDATION_FOR[v] for v in vulns))
        if "landline_unprotected" in vulns and rng.random() < 0.6:
            recs.append("answerphone_always_on")
        if rng.random() < 0.4:
            recs.append("register_anshin_mail")
        if rng.random() < 0.1:
            recs.append("join_neighbourhood_watch")
        invited = rng.random() < (0.45 if elderly else 0.3)
        materials = [
            m
            for m, p in (
                ("leaflet_burglary", 0.7),
                ("leaflet_special_fraud", 0.8 if elderly else 0.4),
                ("leaflet_bicycle_theft", 0.3),
                ("local_crime_statistics", 0.5),
                ("emergency_contact_card", 0.25),
                ("anshin_mail_flyer", 0.35),
            )
            if rng.random() < p
        ]
        if invited:
            materials.append("workshop_invitation")
        concerns = []
        for k, base in CONCERN_BASE.items():
            p = base * town.concern_mult[k]
            if elderly and k == "special_fraud":
                p = 0.35 * town.concern_mult[k]
            if elderly and k == "elderly_isolation":
                p = 0.15
            if rng.random() < min(p, 0.9):
                concerns.append(k)
        sensitive = {"stalking", "domestic_violence"} & set(concerns)
        follow_up = rng.random() < 0.08 + 0.06 * (len(vulns) >= 2) + 0.5 * bool(sensitive)
        weights = (3, 5, 15, 40, 37) if elderly else (3, 6, 18, 41, 32)
        event.update(
            vulnerabilities=vulns,
            recommendations=recs,
            materials=materials,
            workshop_invited=invited,
            concerns=concerns,
            follow_up_requested=follow_up,
            satisfaction=rng.choices((1, 2, 3, 4, 5), weights)[0],
        )
        if rng.random() < 0.7:
            event["notes"] = self._visit_note(rng, hh, vulns, concerns)

    def _visit_note(self, rng: random.Random, hh: dict, vulns: list, concerns: list) -> str:
        parts = []
        if rng.random() < 0.2:
            parts.append(f"{hh['name']}様宅を訪問。")
        if vulns:
            parts.append(f"防犯診断で{len(vulns)}点の指摘。補助錠・センサーライト等を助言。")
        else:
            parts.append("防犯診断を実施、特に問題なし。")
        if "special_fraud" in concerns:
            parts.append("不審な電話があったとの相談。留守番電話の常時設定を助言。")
        if "bicycle_theft" in concerns:
            parts.append("近隣で自転車盗が続いているとの話。ツーロックを推奨。")
        if hh["elderly"] and rng.random() < 0.3:
            parts.append("高齢者のみの世帯。")
        if rng.random() < 0.12:
            parts.append(f"連絡先 {hh['phone']}。")
        return "".join(parts)

    def _incident(self, rng: random.Random, area: _Area, day: date) -> dict:
        town = self._pick_town(rng, area)
        crime = rng.choices(list(CRIME_MIX), list(CRIME_MIX.values()))[0]
        hours = CRIME_HOURS.get(crime, range(24))
        occurred = datetime.combine(day, time(rng.choice(hours), rng.randrange(60)), JST)
        lo, hi = REPORT_DELAY_HOURS.get(crime, (0, 24))
        reported = min(
            occurred + timedelta(minutes=rng.randint(lo * 60 + 10, hi * 60 + 60)), self.end
        )
        produced = min(reported + timedelta(minutes=rng.randint(1, 30)), self.end)
        hh = None
        if crime in HOUSEHOLD_CRIMES or (crime == "vandalism" and rng.random() < 0.3):
            # Some victims were visited earlier: the programme's repeat-victimization question.
            if town.visited and rng.random() < 0.25:
                index = rng.choice(town.visited)
            else:
                index = rng.randrange(town.households)
            hh = self._household(town, index)
        event: dict = {
            "event_id": self._event_id(rng),
            "schema_version": 1,
            "produced_at": _iso(produced),
            "incident_id": self._case_no(rng, "I", town.code),
            "reported_at": _iso(reported),
            "occurred_at": _iso(occurred),
            "crime_type": crime,
            "municipality_code": town.code,
            "town": town.name,
            "status": rng.choices(
                ("reported", "under_investigation", "cleared", "closed"), (40, 35, 15, 10)
            )[0],
        }
        if hh is not None:
            event.update(
                victim_household_id=hh["id"],
                address_line=hh["address"],
                latitude=round(hh["lat"], 6),
                longitude=round(hh["lon"], 6),
            )
        elif rng.random() < 0.9:
            m = area.m
            event.update(
                address_line=f"東京都{m.name}{town.name}付近",
                latitude=round(town.lat + rng.uniform(-0.006, 0.006), 6),
                longitude=round(town.lon + rng.uniform(-0.007, 0.007), 6),
            )
        event["victim_age_band"] = self._age_band(rng, crime, hh)
        if rng.random() < 0.8:
            event["narrative"] = self._narrative(rng, crime, hh)
        return event

    def _age_band(self, rng: random.Random, crime: str, hh: dict | None) -> str:
        if rng.random() < 0.05:
            return "unknown"
        if crime == "special_fraud" or (hh and hh["elderly"]):
            return rng.choices(("60-69", "70-79", "80+"), (10, 48, 42))[0]
        if crime == "sexual_offence":
            return rng.choices(AGE_BANDS[:4], (25, 45, 20, 10))[0]
        return rng.choices(AGE_BANDS, (14, 18, 17, 16, 13, 10, 8, 4))[0]

    def _narrative(self, rng: random.Random, crime: str, hh: dict | None) -> str:
        text = {
            "bicycle_theft": "駐輪場に施錠して駐輪していた自転車が盗まれた。",
            "burglary_vacant_home": "不在中に窓から侵入され、現金等が盗まれた。",
            "special_fraud": "息子を名乗る男から電話があり、現金をだまし取られた。",
            "domestic_violence": "配偶者からの暴力について相談・通報あり。",
        }.get(crime, f"{CRIME_JA[crime]}の被害届を受理。")
        if hh is not None and rng.random() < 0.3:
            text += f"被害者 {hh['name']}。"
        if hh is not None and rng.random() < 0.15:
            text += f"連絡先 {hh['phone']}。"
        return text

    # -- malformed events --------------------------------------------------------------------
    def _corrupt(
        self, rng: random.Random, dataset: str, event: dict, kind: str | None = None
    ) -> SimEvent:
        """Turn a good event into one malformed kind (chosen at random unless given)."""
        if kind is None:
            kind = rng.choice(list(BAD_KINDS))
        # The event's own version (a v1 and a v2 visit go wrong against their own contract).
        contract = self.contracts.version(dataset, event["schema_version"])
        bad = dict(event)
        fields = contract.fields

        def pick(pred):
            return rng.choice([f for f in fields if pred(f)])

        if kind == "out_of_range" and not any(
            f.minimum is not None and f.name in bad and f.name != "schema_version" for f in fields
        ):
            kind = "wrong_schema_version"  # nothing numeric to push out of range in this event

        payload: dict | bytes
        if kind == "broken_json":
            text = _dumps(bad)
            payload = text[: rng.randint(1, len(text) - 2)].encode()
        elif kind == "not_an_object":
            payload = json.dumps([bad], ensure_ascii=False).encode()
        elif kind == "non_utf8":
            # A legacy export in Shift_JIS; add a byte that can never start UTF-8 to be sure.
            payload = _dumps(bad).encode("cp932", errors="replace") + b"\xff"
        elif kind == "missing_field":
            del bad[pick(lambda f: f.required and f.name in bad).name]
            payload = bad
        elif kind == "wrong_type":
            f = pick(lambda f: f.name in bad and f.name != "schema_version")
            bad[f.name] = _wrong_type(f.type, bad[f.name])
            payload = bad
        elif kind == "unknown_code":
            f = pick(lambda f: (f.enum or f.domain) and f.name in bad)
            bad[f.name] = {"municipality_code": "13999", "town": "架空町"}.get(f.name, "not_a_code")
            payload = bad
        elif kind == "future_timestamp":
            f = pick(lambda f: f.not_future and f.name in bad)
            future = self._now + timedelta(days=rng.randint(2, 400))
            for name in {f.name, "produced_at"}:
                bad[name] = _iso(future.astimezone(JST))
            payload = bad
        elif kind == "oversized_field":
            f = pick(lambda f: f.type is FieldType.STRING and f.max_length and not f.enum)
            bad[f.name] = "あ" * (f.max_length + rng.randint(1, 500))
            payload = bad
        elif kind == "oversized_event":
            # Into its free text (notes, narrative, comment), or else any plain string field.
            carriers = [f for f in fields if f.pii is PiiClass.FREE_TEXT] or [
                f for f in fields if f.type is FieldType.STRING and not f.enum
            ]
            bad[carriers[0].name] = "x" * 70_000
            payload = _dumps(bad).encode()
        elif kind == "unknown_field":
            bad[rng.choice(("resident_email", "my_number", "licence_plate"))] = "x"
            payload = bad
        elif kind == "bad_format":
            f = pick(lambda f: (f.pattern or f.type in (FieldType.UUID, FieldType.TIMESTAMP))
                     and f.name in bad)  # fmt: skip
            bad[f.name] = {FieldType.TIMESTAMP: "2026/11/20 10:15"}.get(f.type, "??-not-valid")
            payload = bad
        elif kind == "out_of_range":
            f = pick(lambda f: (f.minimum is not None) and f.name in bad
                     and f.name != "schema_version")  # fmt: skip
            beyond = (f.maximum or 0) + rng.randint(1, 50)
            bad[f.name] = int(beyond) if f.type is FieldType.INTEGER else float(beyond)
            payload = bad
        else:  # wrong_schema_version: one no contract of the dataset has
            bad["schema_version"] = self.contracts.get(dataset).version + 1
            payload = bad
        return SimEvent(dataset, payload, kind)


@dataclass
class _Session:
    """A workshop session of a koban, and the households invited to it so far."""

    id: str
    koban: str
    town: _Town  # of the venue
    starts: datetime
    topic: str
    venue: str
    capacity: int
    invited: list[tuple[_Town, int, str]] = field(default_factory=list)  # town, index, visit_id


class _Feedback:
    """The feedback datasets of one `events()` run, generated day by day from the visits.

    Each dataset draws from a random stream of its own, seeded by (seed, dataset), and so does
    the corruption of its events (`bad_rate`): the main stream of visits and incidents never
    sees these draws. Workshop sessions are drawn per koban and month (seeded by both), so a
    session is the same whatever window is simulated. Events wait in a queue until the day
    their `produced_at` falls on; those written after the window's end are never emitted (they
    have not happened yet).

    Links: a share of completed visits answer a request made days before (the request carries
    the visit's id and time); households invited during a visit come, with some probability, to
    their koban's next session (with the visit's id); walk-ins fill sessions up to a share of
    their capacity; a share of completed visits are followed by a survey naming the visit, and
    some surveys, and some requests (open, scheduled, cancelled), stand on their own.
    """

    def __init__(self, sim: Simulator, areas: dict[str, _Area]):
        self.sim = sim
        self.areas = areas
        seed = sim.config.seed
        self.rng = {d: random.Random(f"{seed}:{d}") for d in FEEDBACK_DATASETS}
        self.bad_rng = {d: random.Random(f"{seed}:{d}:malformed") for d in FEEDBACK_DATASETS}
        self.chosen = set(sim.config.datasets)
        self.end_iso = _iso(sim.end)
        self.queue: list[tuple[str, int, str, dict]] = []  # (produced_at, seq, dataset, event)
        self._seq = 0
        self.kobans: dict[str, tuple[list[_Town], list[float]]] = {}
        for area in areas.values():
            for t in area.towns:
                self.kobans.setdefault(t.koban, ([], []))[0].append(t)
        for towns, cum in self.kobans.values():
            cum.extend(accumulate(t.weight for t in towns))
        self.sessions = {k: self._schedule(k) for k in self.kobans}
        self.starts = {k: [s.starts for s in v] for k, v in self.sessions.items()}
        self.held: dict[date, list[_Session]] = {}
        for sessions in self.sessions.values():
            for s in sessions:
                if s.starts.date() >= sim.start and s.starts < sim.end:
                    self.held.setdefault(s.starts.date(), []).append(s)

    # -- the day's events --------------------------------------------------------------------
    def day(
        self, day: date, visits: list[dict], visit_counts: dict[str, int]
    ) -> list[tuple[str, SimEvent]]:
        """The feedback events written on `day` (produced_at, event), after its visits."""
        for s in sorted(self.held.get(day, ()), key=lambda s: (s.starts, s.id)):
            self._session_held(s)
        for v in visits:
            if v["outcome"] == "completed":
                self._after_visit(v)
        for code, n_visits in visit_counts.items():
            self._unanswered_requests(self.areas[code], day, n_visits)
            self._unlinked_surveys(self.areas[code], day, n_visits)
        until = _iso(datetime.combine(day + timedelta(days=1), time(), JST))
        out: list[tuple[str, SimEvent]] = []
        bad_rate = self.sim.config.bad_rate
        while self.queue and (
            self.queue[0][0] < until or self.queue[0][0] == until == self.end_iso
        ):
            produced, _, dataset, event = heapq.heappop(self.queue)
            if dataset not in self.chosen:
                continue
            rng = self.bad_rng[dataset]
            if bad_rate and rng.random() < bad_rate:
                out.append((produced, self.sim._corrupt(rng, dataset, event)))
            else:
                out.append((produced, SimEvent(dataset, event)))
        return out

    def _push(self, dataset: str, event: dict) -> None:
        heapq.heappush(self.queue, (event["produced_at"], self._seq, dataset, event))
        self._seq += 1

    def _envelope(self, rng: random.Random, produced: datetime) -> dict:
        produced = min(produced, self.sim.end)
        return {"event_id": self.sim._event_id(rng), "schema_version": 1,
                "produced_at": _iso(produced)}  # fmt: skip

    def _town_of(self, household_id: str) -> tuple[_Town, int]:
        _, code, town, index = household_id.split("-")
        return self.areas[code].towns[int(town)], int(index)

    def _resident(self, rng: random.Random, area_towns: list[_Town], cum: list[float]):
        """A household of these towns: (town, index), a visited one now and then."""
        town = rng.choices(area_towns, cum_weights=cum)[0]
        if town.visited and rng.random() < 0.3:
            return town, rng.choice(town.visited)
        return town, rng.randrange(town.households)

    def _after_visit(self, visit: dict) -> None:
        town, index = self._town_of(visit["household_id"])
        hh = self.sim._household(town, index)
        visited = datetime.fromisoformat(visit["visited_at"])
        self._answered_request(visit, town, hh, visited)
        if visit.get("workshop_invited"):
            self._invited(visit, town, index, hh, visited)
        self._survey_after(visit, town, hh, visited)

    # -- visit requests ----------------------------------------------------------------------
    def _answered_request(self, visit: dict, town: _Town, hh: dict, visited: datetime) -> None:
        r = self.rng["visit_request"]
        if r.random() >= REQUEST_ANSWERED_SHARE[hh["elderly"]]:
            return
        channel, reason = self._why(r, hh, visit.get("concerns", []))
        median, sigma = REQUEST_DELAY_DAYS
        delay = timedelta(days=min(45.0, r.lognormvariate(math.log(median), sigma)))
        requested = self._office_time(r, channel, (visited - delay).date())
        if requested > visited - timedelta(minutes=30):
            requested = visited - timedelta(minutes=r.randint(30, 180))
        produced = visited + timedelta(minutes=r.randint(10, 240))
        event = self._request(r, town, hh, requested, channel, reason, produced, "answered")
        event.update(answered_visit_id=visit["visit_id"], answered_at=visit["visited_at"])
        self._push("visit_request", event)

    def _unanswered_requests(self, area: _Area, day: date, n_visits: int) -> None:
        r = self.rng["visit_request"]
        for _ in range(_poisson(r, n_visits * REQUESTS_UNANSWERED_PER_VISIT)):
            town, index = self._resident(r, area.towns, area.cum_weights)
            hh = self.sim._household(town, index)
            channel, reason = self._why(r, hh, [])
            requested = self._office_time(r, channel, day)
            statuses = REQUEST_STATUS_UNANSWERED
            status = r.choices(list(statuses), list(statuses.values()))[0]
            lo, hi = {"open": (1, 60), "scheduled": (60, 2_880), "cancelled": (60, 7_200)}[status]
            produced = requested + timedelta(minutes=r.randint(lo, hi))
            self._push(
                "visit_request",
                self._request(r, town, hh, requested, channel, reason, produced, status),
            )

    def _why(self, r: random.Random, hh: dict, concerns: list[str]) -> tuple[str, str]:
        """How and why a household asked for a visit."""
        channels = REQUEST_CHANNELS[hh["elderly"]]
        channel = r.choices(list(channels), list(channels.values()))[0]
        w = {"security_check": 35, "fraud_worry": 12, "elderly_living_alone": 0,
             "after_incident": 8, "new_resident": 15, "other": 8}  # fmt: skip
        if hh["elderly"]:
            w.update(fraud_worry=25, new_resident=3)
            w["elderly_living_alone"] = 30 if hh["residents"] == 1 else 5
        if "special_fraud" in concerns:
            w["fraud_worry"] += 40
        if "burglary" in concerns:
            w["security_check"] += 20
        if channel == "welfare_referral":
            w.update(elderly_living_alone=w["elderly_living_alone"] * 3, new_resident=1)
        return channel, r.choices(list(w), list(w.values()))[0]

    def _office_time(self, r: random.Random, channel: str, day: date) -> datetime:
        """A time on `day` when such a request comes in (the app at any waking hour)."""
        hour = r.randint(6, 23) if channel == "app" else r.randint(8, 19)
        return datetime.combine(day, time(hour, r.randrange(60), r.randrange(60)), JST)

    def _request(
        self,
        r: random.Random,
        town: _Town,
        hh: dict,
        requested: datetime,
        channel: str,
        reason: str,
        produced: datetime,
        status: str,
    ) -> dict:
        sim = self.sim
        event = self._envelope(r, produced)
        event.update(
            request_id=sim._case_no(r, "R", town.code),
            requested_at=_iso(requested),
            channel=channel,
            reason=reason,
            municipality_code=town.code,
            town=town.name,
            household_id=hh["id"],
        )
        if channel == "welfare_referral":  # the ward's welfare officer who referred
            if r.random() < 0.9:
                event["contact_name"] = f"{r.choice(sim._last_names)} {r.choice(sim._first_names)}"
            if r.random() < 0.9:
                prefix = "03" if town.code < "13200" else "042"
                event["contact_phone"] = f"{prefix}-{r.randint(3000, 5999)}-{r.randint(1000, 9999)}"
        else:
            if r.random() < 0.9:
                event["contact_name"] = hh["name"]
            if channel == "phone" or r.random() < 0.7:
                event["contact_phone"] = hh["phone"]
        event["status"] = status
        return event

    # -- workshops ---------------------------------------------------------------------------
    def _schedule(self, koban: str) -> list[_Session]:
        """The koban's sessions from the window's first month to the last an invitation made
        in the window can reach."""
        month = self.sim.start.replace(day=1)
        last = (self.sim.end + timedelta(days=INVITATION_HORIZON_DAYS)).date()
        out: list[_Session] = []
        while month <= last:
            out.extend(self._month_sessions(koban, month))
            month = (month + timedelta(days=32)).replace(day=1)
        return out

    def _month_sessions(self, koban: str, month: date) -> list[_Session]:
        # Seeded per koban and month: the same sessions whatever window is simulated.
        r = random.Random(f"{self.sim.config.seed}:workshop_session:{koban}:{month:%Y-%m}")
        towns, cum = self.kobans[koban]
        next_month = (month + timedelta(days=32)).replace(day=1)
        days = [month + timedelta(days=i) for i in range((next_month - month).days)]
        days = [d for d in days if d.weekday() != 6]  # not on Sundays
        drafts = []
        for _ in range(1 + _poisson(r, SESSIONS_EXTRA_PER_KOBAN_MONTH)):
            day = r.choice(days)
            if day.weekday() == 5:
                at = r.choice((time(10), time(13, 30)))
            else:
                at = r.choices((time(10), time(14), time(18, 30)), (35, 45, 20))[0]
            venue = r.choices(list(VENUES), [w for w, _ in VENUES.values()])[0]
            lo, hi = VENUES[venue][1]
            capacity = max(5, 5 * round(r.randint(lo, hi) / 5))
            topic = r.choices(list(WORKSHOP_TOPICS), list(WORKSHOP_TOPICS.values()))[0]
            town = r.choices(towns, cum_weights=cum)[0]
            drafts.append((datetime.combine(day, at, JST), topic, venue, capacity, town))
        drafts.sort(key=lambda d: d[0])
        return [
            _Session(f"WS-{koban}-{month:%Y%m}-{i:02d}", koban, town, starts, topic, venue, cap)
            for i, (starts, topic, venue, cap, town) in enumerate(drafts, 1)
        ]

    def _invited(self, visit: dict, town: _Town, index: int, hh: dict, visited: datetime) -> None:
        """An invited household may come to its koban's next session (a day or more later)."""
        r = self.rng["workshop_attendance"]
        if r.random() >= INVITED_ATTEND_SHARE[hh["elderly"]]:
            return
        starts = self.starts[town.koban]
        i = bisect.bisect_left(starts, visited + timedelta(days=1))
        if i < len(starts) and starts[i] <= visited + timedelta(days=INVITATION_HORIZON_DAYS):
            self.sessions[town.koban][i].invited.append((town, index, visit["visit_id"]))

    def _session_held(self, s: _Session) -> None:
        sim = self.sim
        r = self.rng["workshop_session"]
        event = self._envelope(r, s.starts + timedelta(minutes=90 + r.randint(10, 600)))
        event.update(
            session_id=s.id,
            koban_id=s.koban,
            municipality_code=s.town.code,
            town=s.town.name,
            starts_at=_iso(s.starts),
            topic=s.topic,
            capacity=s.capacity,
            venue_kind=s.venue,
        )
        self._push("workshop_session", event)

        a = self.rng["workshop_attendance"]
        come: dict[str, tuple[_Town, int, bool, str | None]] = {}
        for town, index, invitation in s.invited:
            hid = sim._household(town, index)["id"]
            if hid not in come and len(come) < s.capacity:
                come[hid] = (town, index, True, invitation)
        target = min(s.capacity, round(s.capacity * a.uniform(*SESSION_FILL)))
        towns, cum = self.kobans[s.koban]
        for _ in range(3 * target):  # walk-ins (neighbourhood association, notice board)
            if len(come) >= target:
                break
            town, index = self._resident(a, towns, cum)
            hid = sim._household(town, index)["id"]
            if hid not in come:
                # A few were invited at a visit before the simulated window (visit unknown).
                come[hid] = (town, index, a.random() < 0.08, None)
        for hid, (town, _, invited, visit_id) in come.items():
            event = self._envelope(a, s.starts + timedelta(minutes=a.randint(120, 1_440)))
            event.update(
                attendance_id=sim._case_no(a, "WA", town.code),
                session_id=s.id,
                household_id=hid,
                municipality_code=town.code,
                town=town.name,
                attended_at=_iso(s.starts + timedelta(minutes=a.randint(-20, 10))),
                invited_during_visit=invited,
            )
            if visit_id is not None and a.random() < 0.9:  # the officer noted the visit
                event["invitation_visit_id"] = visit_id
            self._push("workshop_attendance", event)

    # -- resident surveys --------------------------------------------------------------------
    def _survey_after(self, visit: dict, town: _Town, hh: dict, visited: datetime) -> None:
        r = self.rng["resident_survey"]
        if r.random() >= SURVEY_AFTER_VISIT_SHARE:
            return
        median, sigma = SURVEY_DELAY_HOURS
        hours = min(14 * 24.0, max(0.5, r.lognormvariate(math.log(median), sigma)))
        answered = visited + timedelta(seconds=round(hours * 3600))
        satisfaction = visit["satisfaction"] + r.choices((-1, 0, 1), (15, 70, 15))[0]
        concerns = [c for c in visit["concerns"] if r.random() < 0.7]
        self._survey(r, town, hh, answered, min(5, max(1, satisfaction)), concerns, visit)

    def _unlinked_surveys(self, area: _Area, day: date, n_visits: int) -> None:
        r = self.rng["resident_survey"]
        for _ in range(_poisson(r, n_visits * SURVEYS_UNLINKED_PER_VISIT)):
            town, index = self._resident(r, area.towns, area.cum_weights)
            hh = self.sim._household(town, index)
            answered = datetime.combine(
                day, time(r.randint(7, 22), r.randrange(60), r.randrange(60)), JST
            )
            satisfaction = r.choices((1, 2, 3, 4, 5), (6, 8, 22, 38, 26))[0]
            self._survey(r, town, hh, answered, satisfaction, [], None)

    def _survey(
        self,
        r: random.Random,
        town: _Town,
        hh: dict,
        answered: datetime,
        satisfaction: int,
        concerns: list[str],
        visit: dict | None,
    ) -> None:
        for k, base in CONCERN_BASE.items():
            p = base * town.concern_mult[k] * 0.5
            if hh["elderly"] and k == "special_fraud":
                p *= 2
            if k not in concerns and r.random() < min(p, 0.9):
                concerns.append(k)
        ticked = [k for k in CONCERN_BASE if k in concerns]  # the questionnaire's order
        worried = bool(
            {"burglary", "suspicious_person", "stalking", "domestic_violence"} & set(ticked)
        )
        safer = round(3 + 0.6 * (satisfaction - 3) - 0.7 * worried + r.gauss(0, 0.8))
        entered = r.randint(5, 4_320) if visit else r.randint(1, 120)  # paper or app
        event = self._envelope(r, answered + timedelta(minutes=entered))
        event.update(
            survey_id=self.sim._case_no(r, "S", town.code),
            answered_at=_iso(answered),
            household_id=hh["id"],
            municipality_code=town.code,
            town=town.name,
            satisfaction=satisfaction,
            feels_safer=min(5, max(1, safer)),
        )
        if r.random() < 0.92:
            event["concerns"] = ticked
        if r.random() < 0.92:
            event["would_recommend"] = r.random() < RECOMMEND_BY_SATISFACTION[satisfaction]
        if visit is not None:
            event["visit_id"] = visit["visit_id"]
        if r.random() < 0.35:
            event["comment"] = self._comment(r, hh, satisfaction, ticked)
        if answered < self.sim.end:  # answers after the window have not been given yet
            self._push("resident_survey", event)

    def _comment(self, r: random.Random, hh: dict, satisfaction: int, concerns: list) -> str:
        if satisfaction >= 4:
            parts = [r.choice(("丁寧に説明していただき安心しました。",
                               "防犯診断がとても参考になりました。", "また来てほしいです。"))]  # fmt: skip
        elif satisfaction <= 2:
            parts = [r.choice(("訪問の連絡がなく困りました。", "説明がわかりにくかった。"))]
        else:
            parts = ["特になし。"]
        if "special_fraud" in concerns:
            parts.append("最近不審な電話が多く不安です。")
        if "disaster_preparedness" in concerns:
            parts.append("災害時の避難場所を知りたい。")
        if r.random() < 0.15:
            parts.append(f"{hh['name']}より。")
        if r.random() < 0.1:
            parts.append(f"連絡先 {hh['phone']}。")
        return "".join(parts)


def _wrong_type(t: FieldType, value):
    """A value of the wrong JSON type, as a careless export would write it."""
    match t:
        case FieldType.INTEGER | FieldType.NUMBER:
            return str(value)
        case FieldType.BOOLEAN:
            return "yes" if value else "no"
        case FieldType.ARRAY:
            return ",".join(value)
        case FieldType.TIMESTAMP:
            return 1_700_000_000
        case _:
            return 12345


def _dumps(event: dict) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
