"""Units and default tile geometry shared by every stage (one table, one set of constants).

Survival times come in days, weeks, months or years; everything converts through days with a
year of 365.25 days. Tiles default to the seed study's geometry: 112 µm read at 0.5 µm/px,
i.e. 224 px model inputs.
"""

from __future__ import annotations

#: Days per time unit (a year is 365.25 days, a month a twelfth of it).
DAYS_PER_UNIT: dict[str, float] = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12.0, "years": 365.25}
TIME_UNITS: tuple[str, ...] = tuple(DAYS_PER_UNIT)

#: Survival horizons (1, 3 and 5 years) reported by default, as written in each time unit.
DEFAULT_HORIZONS: dict[str, tuple[float, ...]] = {
    "days": (365, 1095, 1825),
    "weeks": (52, 156, 260),
    "months": (12, 36, 60),
    "years": (1, 3, 5),
}

#: Tile side in µm, read resolution in µm/px and the model input side in px they give.
DEFAULT_TILE_UM = 112.0
DEFAULT_MPP = 0.5
DEFAULT_TILE_PX = int(round(DEFAULT_TILE_UM / DEFAULT_MPP))


def check_time_unit(unit: str) -> str:
    """The unit itself; ValueError naming the known units otherwise."""
    if unit not in DAYS_PER_UNIT:
        raise ValueError(f"unknown time unit {unit!r}; choose one of {list(DAYS_PER_UNIT)}")
    return unit


def convert_time(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit``."""
    return float(value) * DAYS_PER_UNIT[check_time_unit(from_unit)] / DAYS_PER_UNIT[check_time_unit(to_unit)]


def per_year(unit: str) -> float:
    """How many ``unit`` make a year (365.25 for days, 12 for months); 1 for unknown units."""
    return DAYS_PER_UNIT["years"] / DAYS_PER_UNIT[unit] if unit in DAYS_PER_UNIT else 1.0


def years_label(value: float, unit: str) -> str:
    """'1 year', '3 years', '2.5 years' for a duration in ``unit`` (unknown units as given)."""
    if unit not in DAYS_PER_UNIT:
        return f"{float(value):g} {unit}"
    y = round(float(value) / per_year(unit), 1)
    return f"{y:g} year" + ("" if y == 1 else "s")


def years_short(value: float, unit: str) -> str:
    """'1 y', '3 y', '2.5 y': the compact form of :func:`years_label` for panels and CLI lines."""
    years = float(value) / per_year(unit)
    return f"{round(years):d} y" if abs(years - round(years)) < 0.05 else f"{years:.1f} y"
