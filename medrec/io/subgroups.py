"""De-identified subgroup columns of a DICOM header: sex, a 10-year age band, the view position.

For subgroup validation (`eval.subgroups`). What is written is coarse on purpose: sex as
M / F / O, the age as a 10-year band ("40-49", with every age from 90 on as "90+", as the
HIPAA Safe Harbor rule asks), never the birth date or study date it came from.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

SEXES = ("M", "F", "O")
OLDEST_BAND = 90  # ages from 90 on share one band
# PatientAge is nnnD, nnnW, nnnM or nnnY (DICOM AS); days per unit to turn it into years.
_AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
# ViewPosition is a code string (AP, PA, LL, RLD, ...): anything else is not written.
_VIEW = re.compile(r"[A-Z0-9 _]{1,16}")


def subgroups(ds: Any, birth_date: str | None) -> dict[str, str]:
    """sex, age_band and view_position of a dataset ("" when absent or not a valid code)."""
    sex = str(ds.get("PatientSex") or "").strip().upper()
    view = str(ds.get("ViewPosition") or "").strip().upper()
    return {
        "sex": sex if sex in SEXES else "",
        "age_band": age_band(_age_years(ds, birth_date)),
        "view_position": view if _VIEW.fullmatch(view) else "",
    }


def age_band(years: float | None) -> str:
    """'40-49' for 40 <= years < 50; '90+' from 90; '' for no or an impossible age."""
    if years is None or not 0 <= years < 150:
        return ""
    if years >= OLDEST_BAND:
        return f"{OLDEST_BAND}+"
    low = int(years // 10) * 10
    return f"{low}-{low + 9}"


def _age_years(ds: Any, birth_date: str | None) -> float | None:
    """PatientAge if valid, else whole years from the birth date to the study (or series...) date."""
    age = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(ds.get("PatientAge") or "").upper())
    if age:
        return int(age.group(1)) * _AGE_UNITS[age.group(2)]
    born = _date(birth_date)
    seen = next((d for d in (_date(ds.get(k)) for k in _DATE_KEYWORDS) if d is not None), None)
    if born is None or seen is None or seen < born:
        return None
    return seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))


def _date(value: Any) -> date | None:
    digits = re.sub(r"\D", "", str(value or ""))
    if len(digits) != 8:
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
