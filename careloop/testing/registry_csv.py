"""Generate realistic registry CSV files (residents, devices, health records) for tests, benchmarks and demos.

Deterministic for a given seed. Most homes sit at the full depth of the organisation tree; every 50th is a
farmhouse with no compound, building or unit (levels skipped); every 5th home has two residents; every 100th
address spans two lines (a quoted cell with a newline), and some names are not ASCII.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import date, timedelta

from careloop.registry.importer import COLUMNS, ImportKind

_GIVEN = ("Wei", "Fang", "Min", "Jun", "Li", "Ying", "Zoë", "Anna", "José", "Hui", "Lan", "Ming", "伟", "秀英", "芳")
_FAMILY = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Müller", "García", "王", "李", "张")
_CONDITIONS = ("hypertension", "type 2 diabetes", "COPD", "atrial fibrillation", "osteoarthritis", "dementia")
_MEDICATIONS = ("amlodipine 5 mg qd", "metformin 500 mg bid", "tiotropium 18 ug qd", "apixaban 5 mg bid")
_ALLERGIES = ("penicillin", "sulfonamides", "peanuts", "latex")


@dataclass(frozen=True, slots=True)
class RegistryCsv:
    """The three CSV files (as text) and what they hold."""

    residents: str
    devices: str
    health: str
    n_residents: int
    n_homes: int
    n_devices: int


def home_path(index: int) -> dict[str, str]:
    """The org-tree columns of the home with this index (0-based)."""
    unit, household = divmod(index, 6)
    building, unit = divmod(unit, 2)
    compound, building = divmod(building, 3)
    grid, compound = divmod(compound, 2)
    community, grid = divmod(grid, 4)
    street, community = divmod(community, 3)
    path = {
        "county": "Minhang District",
        "street": f"Street {street + 1}",
        "community": f"Community {street + 1}-{community + 1}",
        "grid": f"Grid {grid + 1}",
        "compound": f"Compound {compound + 1}",
        "building": f"Building {building + 1}",
        "unit": f"Unit {unit + 1}",
        "household": f"{household // 2 + 1}0{household % 2 + 1}",
    }
    if index % 50 == 49:
        path.update(compound="", building="", unit="", household=f"Farmhouse {index + 1}")
    return path


def _write(columns: tuple[str, ...], rows: list[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def generate_registry_csv(n_residents: int = 2000, seed: int = 1) -> RegistryCsv:
    """Residents (with homes and org paths), their devices and health records, as CSV text."""
    rng = random.Random(seed)
    residents: list[dict[str, object]] = []
    devices: list[dict[str, object]] = []
    health: list[dict[str, object]] = []
    home_index = 0
    while len(residents) < n_residents:
        home_code = f"H{home_index + 1:05d}"
        path = home_path(home_index)
        address = f"{path['building']}, {path['unit']}, room {path['household']}, {path['street']}"
        if home_index % 100 == 99:
            address = f"{path['street']}, {path['community']}\nroom {path['household']}"
        lat = round(31.10 + rng.random() * 0.1, 6)
        lon = round(121.35 + rng.random() * 0.1, 6)
        occupants = 2 if home_index % 5 == 4 else 1
        devices.append({"device_code": f"GW-{home_code}", "kind": "gateway", "home_code": home_code, "room": "hall"})
        devices.append({"device_code": f"PIR-{home_code}", "kind": "pir", "home_code": home_code, "room": "bedroom"})
        for _ in range(min(occupants, n_residents - len(residents))):
            number = len(residents) + 1
            code = f"R{number:05d}"
            birth = date(1925, 1, 1) + timedelta(days=rng.randrange(35 * 365))
            residents.append(
                {
                    "resident_code": code,
                    "name": f"{rng.choice(_FAMILY)} {rng.choice(_GIVEN)}",
                    "birth_date": birth.isoformat(),
                    "sex": rng.choice(("female", "male")),
                    "phone": f"+86 138 {number:04d} {rng.randrange(10_000):04d}",
                    "status": "in_hospital" if number % 97 == 0 else "active",
                    "home_code": home_code,
                    **path,
                    "address": address,
                    "latitude": lat,
                    "longitude": lon,
                    "geofence_radius_m": 150,
                    "timezone": "Asia/Shanghai",
                }
            )
            devices.append(
                {"device_code": f"BR-{code}", "kind": "bracelet", "home_code": home_code, "resident_code": code}
            )
            if number % 10 == 0:
                devices.append(
                    {
                        "device_code": f"BED-{code}",
                        "kind": "bed_sensor",
                        "home_code": home_code,
                        "resident_code": code,
                        "room": "bedroom",
                    }
                )
            health.append(_health_row(rng, code))
        home_index += 1
    return RegistryCsv(
        residents=_write(COLUMNS[ImportKind.RESIDENTS], residents),
        devices=_write(COLUMNS[ImportKind.DEVICES], devices),
        health=_write(COLUMNS[ImportKind.HEALTH], health),
        n_residents=len(residents),
        n_homes=home_index,
        n_devices=len(devices),
    )


def _health_row(rng: random.Random, code: str) -> dict[str, object]:
    conditions = rng.sample(_CONDITIONS, rng.randrange(4))
    copd = "COPD" in conditions
    height = round(rng.uniform(148, 180), 1)
    weight = round(rng.uniform(45, 90), 1)
    return {
        "resident_code": code,
        "conditions": "; ".join(conditions),
        "medications": "; ".join(rng.sample(_MEDICATIONS, rng.randrange(3))),
        "allergies": "; ".join(rng.sample(_ALLERGIES, rng.randrange(2))),
        "exam_date": (date(2025, 1, 1) + timedelta(days=rng.randrange(300))).isoformat(),
        "height_cm": height,
        "weight_kg": weight,
        "bmi": round(weight / (height / 100) ** 2, 1),
        "hr_min_bpm": 45 if "atrial fibrillation" in conditions else 50,
        "hr_max_bpm": 120,
        "spo2_min_pct": 88 if copd else 92,
        "spo2_scale": 2 if copd else 1,
        "hr_baseline_bpm": rng.randrange(60, 85),
        "spo2_baseline_pct": 90 if copd else rng.randrange(95, 99),
        "bp_systolic_max_mmhg": 180,
        "bp_systolic_baseline_mmhg": rng.randrange(115, 150),
        "bp_diastolic_baseline_mmhg": rng.randrange(65, 90),
    }
