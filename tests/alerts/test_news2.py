"""NEWS2 against the band edges of the RCP 2017 chart, both SpO2 scales, and the partial score's missing list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.news2 import (
    LOWER_BOUND_NOTE,
    PARAMETERS,
    news2_partial,
    score_consciousness,
    score_pulse,
    score_respiration,
    score_spo2,
    score_systolic,
    score_temperature,
)


@pytest.mark.parametrize(
    ("hr", "points"),
    [(30, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2), (131, 3), (200, 3)],
)
def test_pulse_bands(hr: float, points: int) -> None:
    assert score_pulse(hr) == points


@pytest.mark.parametrize(
    ("spo2", "points"),
    [(80, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)],
)
def test_spo2_scale_1_bands(spo2: float, points: int) -> None:
    assert score_spo2(spo2, 1) == points
    assert score_spo2(spo2, 1, on_oxygen=True) == points  # oxygen does not change scale 1 (it scores apart)


@pytest.mark.parametrize(
    ("spo2", "on_air", "on_oxygen"),
    [
        (75, 3, 3),
        (83, 3, 3),
        (84, 2, 2),
        (85, 2, 2),
        (86, 1, 1),
        (87, 1, 1),
        (88, 0, 0),
        (92, 0, 0),
        (93, 0, 1),
        (94, 0, 1),
        (95, 0, 2),
        (96, 0, 2),
        (97, 0, 3),
        (100, 0, 3),
    ],
)
def test_spo2_scale_2_bands(spo2: float, on_air: int, on_oxygen: int) -> None:
    assert score_spo2(spo2, 2, on_oxygen=False) == on_air
    assert score_spo2(spo2, 2, on_oxygen=True) == on_oxygen
    assert score_spo2(spo2, 2, on_oxygen=None) == on_air  # unknown oxygen: scored as air, a lower bound


@pytest.mark.parametrize(
    ("sys", "points"),
    [(70, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
)
def test_systolic_bands(sys: float, points: int) -> None:
    assert score_systolic(sys) == points


@pytest.mark.parametrize(
    ("rr", "points"), [(5, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)]
)
def test_respiration_bands(rr: float, points: int) -> None:
    assert score_respiration(rr) == points


@pytest.mark.parametrize(
    ("temp", "points"),
    [(34.0, 3), (35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2), (41.0, 2)],
)
def test_temperature_bands(temp: float, points: int) -> None:
    assert score_temperature(temp) == points


def test_consciousness() -> None:
    assert score_consciousness("A") == 0
    assert [score_consciousness(x) for x in "CVPU"] == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="one of A, C, V, P, U"):
        score_consciousness("X")


def test_measured_values_are_rounded_half_up_to_the_chart() -> None:
    assert score_pulse(130.4) == 2
    assert score_pulse(130.5) == 3
    assert score_spo2(91.5, 1) == 2
    assert score_spo2(91.49, 1) == 3
    assert score_temperature(35.04) == 3
    assert score_temperature(35.05) == 1


def test_partial_score_lists_what_the_bracelet_cannot_measure() -> None:
    score = news2_partial(hr_bpm=135, spo2_pct=95, bp_systolic_mmhg=105)
    assert dict(score.parameters) == {"spo2": 1, "systolic_bp": 1, "pulse": 3}
    assert score.total == 5
    assert score.any_three
    assert score.max_parameter == 3
    assert score.missing == ("respiration_rate", "air_or_oxygen", "consciousness", "temperature")
    assert not score.complete
    assert "lower bound" in LOWER_BOUND_NOTE


def test_full_score_matches_the_chart_example() -> None:
    # RR 22 (2), SpO2 95 scale 1 (1), on oxygen (2), systolic 105 (1), pulse 115 (2), alert (0), 38.5 C (1)
    score = news2_partial(
        respiration_rate=22,
        spo2_pct=95,
        on_oxygen=True,
        bp_systolic_mmhg=105,
        hr_bpm=115,
        consciousness="A",
        temperature_c=38.5,
    )
    assert score.complete
    assert score.total == 9
    assert not score.any_three


def test_scale_must_be_1_or_2() -> None:
    with pytest.raises(ValueError, match="scales 1 and 2"):
        news2_partial(hr_bpm=70, spo2_pct=97, spo2_scale=3)
    with pytest.raises(ValueError, match="scales 1 and 2"):
        news2_partial(hr_bpm=70, spo2_scale=0)


@given(
    hr=st.none() | st.floats(20, 250),
    spo2=st.none() | st.floats(50, 100),
    sys=st.none() | st.floats(50, 260),
    scale=st.sampled_from([1, 2]),
    on_o2=st.none() | st.booleans(),
    extra_rr=st.floats(4, 40),
)
def test_missing_parameters_only_add_points(
    hr: float | None, spo2: float | None, sys: float | None, scale: int, on_o2: bool | None, extra_rr: float
) -> None:
    partial = news2_partial(hr_bpm=hr, spo2_pct=spo2, bp_systolic_mmhg=sys, spo2_scale=scale)
    fuller = news2_partial(
        hr_bpm=hr, spo2_pct=spo2, bp_systolic_mmhg=sys, spo2_scale=scale, on_oxygen=on_o2, respiration_rate=extra_rr
    )
    assert fuller.total >= partial.total
    assert set(partial.parameters) | set(partial.missing) == set(PARAMETERS)
    assert partial.total == sum(partial.parameters.values())
