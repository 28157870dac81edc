"""The per-home monitor: routing, SOS / OK, wearable falls with their clip, fusion with the thermopile, adoption."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from scipy import signal

from careloop import messages as m
from careloop.recordings import TRIALS_CSV, TrialInfo, find_trial, read_samples
from careloop.testing.service_fixtures import require_falls_dataset
from careloop.topics import Topic, TopicKind
from edge.falls import fall_detector
from edge.infrared import ThermalFall
from edge.models import DeviceConfig, FallDetection, GeoZone, HomeConfig, Outputs, Placement
from edge.monitor import FallFusion, HomeMonitor, WearableFall, accel_clip, clean_features
from simulators.infrared import frame_for
from simulators.timeline import Posture

T0 = 1_790_000_000.0  # 2026-09-21 22:13 in Shanghai: night
DAY = 1_790_043_200.0  # 2026-09-22 10:13 in Shanghai: day
HOME = HomeConfig(
    home_id="h1",
    devices=(
        DeviceConfig(device_id="br1", kind="bracelet", resident_id="r1", placement="wrist"),
        DeviceConfig(device_id="pir-hall", kind="pir", room="hallway"),
        DeviceConfig(device_id="pir-bath", kind="pir", room="bathroom"),
        DeviceConfig(device_id="th-bath", kind="thermopile", room="bathroom"),
        DeviceConfig(device_id="bed1", kind="bed_sensor", room="bedroom"),
    ),
    zone=GeoZone(lat=31.2304, lon=121.4737, radius_m=100),
)
STILL = np.tile([0.0, 0.0, 1.0], (50, 1))
Array = npt.NDArray[np.float64]


class ScriptedDetector:
    """Test double for the FallDetector Protocol: reports each scripted detection with the batch covering its
    `detected_ts`, and remembers what it was fed."""

    def __init__(self, detections: Iterable[FallDetection] = (), rate_hz: float = 50.0) -> None:
        self.pending = list(detections)
        self.rate_hz = rate_hz
        self.fed: list[float] = []

    def update(self, samples: npt.NDArray[np.float64], t0: float) -> list[FallDetection]:
        self.fed.append(t0)
        end = t0 + len(samples) / self.rate_hz
        due = [d for d in self.pending if d.detected_ts < end]
        self.pending = [d for d in self.pending if d.detected_ts >= end]
        return due


class Factory:
    """Makes ScriptedDetectors, each with the script, and keeps them."""

    def __init__(self, detections: Iterable[FallDetection] = ()) -> None:
        self.detections = list(detections)
        self.made: list[tuple[Placement, ScriptedDetector]] = []

    def __call__(self, placement: Placement, rate_hz: float) -> ScriptedDetector:
        detector = ScriptedDetector(self.detections, rate_hz)
        self.made.append((placement, detector))
        return detector


def detection(impact: float, *, confidence: float = 0.8, n: int = 500, **features: float) -> FallDetection:
    clip = np.tile([0.123456, -0.987654, 0.05], (n, 1))
    return FallDetection(
        impact_ts=impact,
        detected_ts=impact + 3.0,
        confidence=confidence,
        features=features or {"peak_g": 3.8, "stillness_s": 2.5},
        clip_t0=impact - n / 100.0,
        clip_g=clip,
        clip_rate_hz=50.0,
    )


def send(monitor: HomeMonitor, device: str, kind: TopicKind, message: m.Message, now: float) -> Outputs:
    return monitor.on_message(Topic(kind, home_id="h1", device_id=device), message, now)


def accel(monitor: HomeMonitor, t0: float, seconds: int, device: str = "br1", samples: np.ndarray = STILL) -> Outputs:
    """One 1-s batch per second from t0, with ticks; everything raised."""
    out = Outputs()
    for k in range(seconds):
        batch = m.AccelBatch(t0=t0 + k, samples_g=tuple(map(tuple, samples.tolist())))
        out.extend(send(monitor, device, TopicKind.DEVICE_ACCEL, batch, t0 + k + 1))
        out.extend(monitor.tick(t0 + k + 1))
    return out


def thermal(
    monitor: HomeMonitor, t0: float, seconds: float, posture: Posture, rng: np.random.Generator
) -> tuple[float, Outputs]:
    """Bathroom thermopile frames every 2 s, with ticks; returns the next frame time and everything raised."""
    out = Outputs()
    t = t0
    while t < t0 + seconds:
        pixels = frame_for(posture, (4.0, 4.0), rng, heading_rad=0.5)
        frame = m.ThermalFrame(ts=t, room="bathroom", pixels_c=tuple(map(tuple, pixels.tolist())))
        out.extend(send(monitor, "th-bath", TopicKind.DEVICE_THERMAL, frame, t))
        out.extend(monitor.tick(t))
        t += 2.0
    return t, out


def falls(out: Outputs) -> list[m.FallEvent]:
    return [e for e in out.events if isinstance(e, m.FallEvent)]


# ---------------------------------------------------------------------------------------------------------------
# buttons
# ---------------------------------------------------------------------------------------------------------------
def test_sos_and_ok_presses_are_forwarded_at_once_with_stable_ids() -> None:
    monitor = HomeMonitor(HOME)
    send(monitor, "pir-hall", TopicKind.DEVICE_MOTION, m.MotionReport(ts=T0 - 30, room="hallway", motion=True), T0)
    out = send(monitor, "br1", TopicKind.DEVICE_SOS, m.SosPress(ts=T0), T0 + 0.2)
    [sos] = out.events
    assert isinstance(sos, m.SosEvent)
    assert sos.pressed_ts == T0
    assert sos.ts == T0 + 0.2
    assert (sos.resident_id, sos.device_id, sos.room) == ("r1", "br1", "hallway")
    assert sos.event_id == f"sos-br1-{round(T0 * 1000)}"
    [ok] = send(monitor, "br1", TopicKind.DEVICE_OK, m.OkPress(ts=T0 + 20), T0 + 20).events
    assert isinstance(ok, m.OkEvent)
    assert ok.pressed_ts == T0 + 20


# ---------------------------------------------------------------------------------------------------------------
# wearable falls
# ---------------------------------------------------------------------------------------------------------------
def test_a_wearable_fall_becomes_a_fall_event_with_its_clip_and_features() -> None:
    factory = Factory([detection(DAY + 5.3, n=1500, **{"peak_g": 3.8, "Peak Jerk": 2.0, "bad": math.nan})])
    monitor = HomeMonitor(HOME, factory)
    out = accel(monitor, DAY, 20)
    [fall] = falls(out)
    assert [p for p, _ in factory.made] == ["wrist"]
    assert fall.sources == ("bracelet",)
    assert fall.placement == "wrist"
    assert (fall.impact_ts, fall.ts) == (DAY + 5.3, DAY + 9)  # nothing in view to wait for: at once
    assert fall.event_id == f"fall-br1-{round((DAY + 5.3) * 1000)}"
    assert fall.features == {"peak_g": 3.8, "peak_jerk": 2.0}
    assert fall.clip is not None
    assert len(fall.clip.samples_g) == m.MAX_CLIP_SAMPLES
    assert fall.clip.samples_g[0] == (0.1235, -0.9877, 0.05)
    # the clip was cut around the impact
    assert fall.clip.t0 <= fall.impact_ts <= fall.clip.t0 + m.MAX_CLIP_SAMPLES / 50


def test_a_belt_is_a_waist_detector_and_the_belt_source() -> None:
    config = HOME.model_copy(
        update={"devices": (DeviceConfig(device_id="belt1", kind="belt", resident_id="r1", placement="waist"),)}
    )
    factory = Factory([detection(DAY + 2)])
    monitor = HomeMonitor(config, factory)
    [fall] = falls(accel(monitor, DAY, 10, device="belt1"))
    assert (fall.placement, fall.sources) == ("waist", ("belt",))
    assert [p for p, _ in factory.made] == ["waist"]


def test_a_gap_in_the_stream_or_taking_the_bracelet_off_starts_a_new_detector() -> None:
    factory = Factory()
    monitor = HomeMonitor(HOME, factory)
    accel(monitor, DAY, 5)
    accel(monitor, DAY + 5, 5)
    assert len(factory.made) == 1
    accel(monitor, DAY + 60, 5)  # the stream resumed after a gap
    assert len(factory.made) == 2
    send(monitor, "br1", TopicKind.DEVICE_WEAR, m.WearStatus(ts=DAY + 70, worn=False), DAY + 70)
    send(monitor, "br1", TopicKind.DEVICE_WEAR, m.WearStatus(ts=DAY + 80, worn=True), DAY + 80)
    accel(monitor, DAY + 81, 3)
    assert len(factory.made) == 3
    assert factory.made[0][1].fed == [DAY + k for k in range(10)]


def test_an_out_of_order_batch_is_not_fed_to_the_detector() -> None:
    factory = Factory()
    monitor = HomeMonitor(HOME, factory)
    accel(monitor, DAY, 5)
    accel(monitor, DAY + 2, 1)
    assert monitor.stats["accel_out_of_order"] == 1
    assert factory.made[0][1].fed == [DAY + k for k in range(5)]


def test_clean_features_and_the_clip_follow_the_contract() -> None:
    many = {f"f{k}": float(k) for k in range(40)}
    assert len(clean_features(many)) == 32
    assert clean_features({"9lives": 1.0, "ok_name": math.inf, "Mixed-Case": 2.0}) == {"mixed_case": 2.0}
    empty = FallDetection(DAY, DAY, 0.5, {}, DAY, np.zeros((0, 3)), 50.0)
    assert accel_clip(empty) is None
    loud = FallDetection(DAY, DAY, 0.5, {}, DAY, np.full((10, 3), 40.0), 50.0)
    clip = accel_clip(loud)
    assert clip is not None
    assert clip.samples_g[0] == (16.0, 16.0, 16.0)


# ---------------------------------------------------------------------------------------------------------------
# fusion with the thermopile
# ---------------------------------------------------------------------------------------------------------------
def _wear(monitor: HomeMonitor, worn: bool, t: float) -> None:
    send(monitor, "br1", TopicKind.DEVICE_WEAR, m.WearStatus(ts=t, worn=worn), t)


def test_a_fall_seen_by_the_bracelet_and_the_thermopile_is_one_event_with_both_sources() -> None:
    rng = np.random.default_rng(1)
    impact = DAY + 600
    factory = Factory([detection(impact, confidence=0.8)])
    monitor = HomeMonitor(HOME, factory)
    _wear(monitor, True, DAY)
    t, out = thermal(monitor, DAY, 560, Posture.AWAY, rng)
    t, more = thermal(monitor, t, 40, Posture.STANDING, rng)
    out.extend(more)
    # the fall: the wrist reports 3 s after the impact, the thermopile confirms ~15 s after she lands
    for k in range(60):
        now = impact - 5 + k
        out.extend(accel_at(monitor, now))
        if k % 2 == 0:
            _, frame_out = thermal(monitor, now, 1, Posture.LYING_FLOOR, rng)
            out.extend(frame_out)
        out.extend(monitor.tick(now + 0.5))
    [fall] = falls(out)
    assert fall.sources == ("bracelet", "thermal")
    assert fall.placement == "wrist"
    assert fall.room == "bathroom"
    assert fall.impact_ts == impact
    assert fall.confidence == pytest.approx(1 - 0.2 * 0.25)
    assert fall.confidence > 0.8
    assert {"peak_g", "thermal_mass_c"} <= set(fall.features)
    assert fall.clip is not None
    assert impact + 10 <= fall.ts <= impact + 25
    assert monitor.fusion.absorbed == 0


def accel_at(monitor: HomeMonitor, t0: float) -> Outputs:
    batch = m.AccelBatch(t0=t0, samples_g=tuple(map(tuple, STILL.tolist())))
    return send(monitor, "br1", TopicKind.DEVICE_ACCEL, batch, t0 + 1)


def test_with_the_bracelet_off_the_thermopile_alone_raises_the_fall() -> None:
    rng = np.random.default_rng(2)
    monitor = HomeMonitor(HOME, Factory())
    _wear(monitor, False, DAY)
    t, out = thermal(monitor, DAY, 600, Posture.AWAY, rng)
    landed = t
    t, more = thermal(monitor, t, 300, Posture.LYING_FLOOR, rng)
    out.extend(more)
    [fall] = falls(out)
    assert fall.sources == ("thermal",)
    assert fall.placement == "infrared"
    assert fall.device_id == "th-bath"
    assert fall.room == "bathroom"
    assert fall.resident_id == "r1"
    assert fall.clip is None
    assert fall.impact_ts == pytest.approx(landed, abs=4)
    assert fall.ts <= landed + 25  # not held: no wearable to wait for
    assert fall.confidence == 0.75


def test_a_wearable_fall_out_of_the_thermopile_s_view_is_not_held() -> None:
    rng = np.random.default_rng(3)
    impact = DAY + 700
    monitor = HomeMonitor(HOME, Factory([detection(impact)]))
    _, out = thermal(monitor, DAY, 600, Posture.AWAY, rng)  # the bathroom is empty: she fell elsewhere
    out.extend(accel(monitor, impact - 10, 20))
    [fall] = falls(out)
    assert fall.ts == impact + 4  # the batch that carried the decision


def test_fusion_waits_only_while_the_partner_can_come_and_absorbs_late_reports() -> None:
    fusion = FallFusion("r1")
    d = detection(DAY)
    wearable = WearableFall("br1", "r1", "bracelet", "wrist", d, None)
    warm = ThermalFall("th1", "bathroom", DAY - 2, DAY + 15, 0.75, {"thermal_mass_c": 28.0})
    # the wearable first, a thermopile watching a floor-shaped area: held until the thermopile confirms
    assert fusion.wearable(wearable, DAY + 3, thermal_watching=True) == []
    assert fusion.tick(DAY + 10, thermal_candidate=True) == []
    [both] = fusion.thermal(warm, DAY + 15, wearable_active=True)
    assert both.sources == ("bracelet", "thermal")
    # a later report of the same fall is absorbed: the alarm is already on its way
    assert fusion.thermal(warm, DAY + 40, wearable_active=True) == []
    assert fusion.absorbed == 1
    # held, but the floor-shaped area went away (she got up): released after the minimum hold
    later = WearableFall("br1", "r1", "bracelet", "wrist", detection(DAY + 1000), None)
    assert fusion.wearable(later, DAY + 1003, thermal_watching=True) == []
    assert fusion.tick(DAY + 1005, thermal_candidate=False) == []
    [alone] = fusion.tick(DAY + 1007, thermal_candidate=False)
    assert alone.sources == ("bracelet",)
    # a thermal fall with the wearable streaming waits for it, then goes alone
    floor = ThermalFall("th1", "bathroom", DAY + 2000, DAY + 2015, 0.75, {})
    assert fusion.thermal(floor, DAY + 2015, wearable_active=True) == []
    assert fusion.tick(DAY + 2024) == []
    [thermal_only] = fusion.tick(DAY + 2025)
    assert thermal_only.sources == ("thermal",)
    assert thermal_only.placement == "infrared"
    # and the wearable report that comes after it joins it
    late = WearableFall("br1", "r1", "bracelet", "wrist", detection(DAY + 2003), None)
    assert fusion.wearable(late, DAY + 2030, thermal_watching=False) == []


def test_two_wearables_falling_at_once_are_two_people() -> None:
    fusion = FallFusion(None)
    a = WearableFall("br1", "r1", "bracelet", "wrist", detection(DAY), None)
    b = WearableFall("br2", "r2", "bracelet", "wrist", detection(DAY + 1), None)
    assert len(fusion.wearable(a, DAY + 3, thermal_watching=False)) == 1
    assert len(fusion.wearable(b, DAY + 4, thermal_watching=False)) == 1


# ---------------------------------------------------------------------------------------------------------------
# inactivity, vitals, geofence, health through the monitor
# ---------------------------------------------------------------------------------------------------------------
def _walking(n: int = 50) -> np.ndarray:
    t = np.arange(n) / 50.0
    return np.stack(
        [0.3 * np.sin(2 * np.pi * 1.8 * t), 0.1 * np.cos(2 * np.pi * 0.9 * t), 1 + 0.3 * np.sin(2 * np.pi * 1.8 * t)],
        axis=1,
    )


def test_walking_with_the_bracelet_is_movement_sitting_still_with_it_is_not() -> None:
    monitor = HomeMonitor(HOME)
    monitor.tick(DAY)
    accel(monitor, DAY, 30, samples=_walking())
    assert monitor.activity.last_motion_ts == DAY + 30
    accel(monitor, DAY + 30, 600)  # sitting: the wrist barely moves
    assert monitor.activity.last_motion_ts == DAY + 30
    out = Outputs()
    for k in range(4 * 3600):
        out.extend(monitor.tick(DAY + 630 + k))
    [inactive] = out.events
    assert isinstance(inactive, m.InactivityEvent)
    assert inactive.last_motion_ts == DAY + 30


def test_vitals_are_summarised_per_bracelet() -> None:
    monitor = HomeMonitor(HOME)
    start = math.ceil(DAY / 60) * 60
    out = Outputs()
    for k in range(13):
        reading = m.VitalsReading(ts=start + 5 * k, hr_bpm=70.0, spo2_pct=97.0, ppg_quality=0.9, motion_g=0.01)
        out.extend(send(monitor, "br1", TopicKind.DEVICE_VITALS, reading, start + 5 * k))
    [summary] = out.vitals
    assert (summary.device_id, summary.resident_id, summary.n_readings) == ("br1", "r1", 12)


def test_the_geofence_raises_and_pauses_inactivity() -> None:
    monitor = HomeMonitor(HOME)
    lat = 31.2304 + 0.002  # 222 m north
    out = Outputs()
    for k in range(2):
        fix = m.GpsFix(ts=DAY + 10 * k, lat=lat, lon=121.4737, accuracy_m=8.0)
        out.extend(send(monitor, "br1", TopicKind.DEVICE_GPS, fix, DAY + 10 * k))
    [exit_event] = out.events
    assert isinstance(exit_event, m.GeofenceExitEvent)
    assert monitor.activity.wearer_outside


def test_availability_and_battery_reach_device_health() -> None:
    monitor = HomeMonitor(HOME)
    out = send(monitor, "br1", TopicKind.DEVICE_BATTERY, m.BatteryStatus(ts=DAY, level_pct=12.0), DAY)
    assert [(h.online, h.low_battery) for h in out.health] == [(True, False), (True, True)]
    out = send(monitor, "br1", TopicKind.DEVICE_AVAILABILITY, m.Availability(online=False, since=DAY + 5), DAY + 5)
    [gone] = out.health
    assert gone.offline_reason == "last_will"


def test_night_wandering_and_bed_exit_through_the_monitor() -> None:
    monitor = HomeMonitor(HOME)
    night = T0 + 3 * 3600  # 01:13 local
    send(monitor, "bed1", TopicKind.DEVICE_OCCUPANCY, m.OccupancyReport(ts=night, place="bed", occupied=True), night)
    left = night + 600
    off_bed = m.OccupancyReport(ts=left, place="bed", occupied=False)
    send(monitor, "bed1", TopicKind.DEVICE_OCCUPANCY, off_bed, left)
    out = send(
        monitor, "pir-hall", TopicKind.DEVICE_MOTION, m.MotionReport(ts=left + 5, room="hallway", motion=True), left + 5
    )
    for k in range(2000):
        out.extend(monitor.tick(left + 5 + k))
    kinds = [e.kind for e in out.events]
    assert kinds == ["night_wandering", "bed_exit"]


# ---------------------------------------------------------------------------------------------------------------
# devices and topics
# ---------------------------------------------------------------------------------------------------------------
def test_an_unknown_bracelet_is_adopted_by_its_stream_and_its_sos_is_not_lost() -> None:
    monitor = HomeMonitor(HOME)
    [sos] = send(monitor, "br-new", TopicKind.DEVICE_SOS, m.SosPress(ts=DAY), DAY).events
    assert isinstance(sos, m.SosEvent)
    assert sos.device_id == "br-new"
    assert monitor.stats["adopted"] == 1
    out = send(monitor, "br-new", TopicKind.DEVICE_WEAR, m.WearStatus(ts=DAY + 1, worn=False), DAY + 1)
    assert out.health[-1].worn is False


def test_an_unknown_device_s_status_alone_is_counted_and_dropped() -> None:
    monitor = HomeMonitor(HOME)
    out = send(monitor, "mystery", TopicKind.DEVICE_BATTERY, m.BatteryStatus(ts=DAY, level_pct=50.0), DAY)
    assert not out
    assert monitor.stats["unknown_device_status"] == 1


def test_other_homes_and_mismatched_models_are_counted_and_dropped() -> None:
    monitor = HomeMonitor(HOME)
    other = Topic(TopicKind.DEVICE_SOS, home_id="h2", device_id="br1")
    assert not monitor.on_message(other, m.SosPress(ts=DAY), DAY)
    wrong = Topic(TopicKind.DEVICE_OK, home_id="h1", device_id="br1")
    assert not monitor.on_message(wrong, m.SosPress(ts=DAY), DAY)
    assert monitor.stats["not_this_home"] == 1
    assert monitor.stats["model_not_for_topic"] == 1


def test_a_wearable_stream_from_a_non_wearable_is_counted() -> None:
    monitor = HomeMonitor(HOME)
    reading = m.VitalsReading(ts=DAY, hr_bpm=70.0, ppg_quality=0.9)
    assert not send(monitor, "pir-hall", TopicKind.DEVICE_VITALS, reading, DAY).events
    assert monitor.stats["wearable_stream_from_pir"] == 1


# ---------------------------------------------------------------------------------------------------------------
# wearables that do not sample at the models' 50 Hz
# ---------------------------------------------------------------------------------------------------------------
BELT_HOME = HOME.model_copy(
    update={"devices": (DeviceConfig(device_id="belt1", kind="belt", resident_id="r1", placement="waist"),)}
)


def recording_at(dataset: str, trial_id: str, rate_hz: int) -> tuple[TrialInfo, Array]:
    """A shared 50-Hz recording as a device sampling at `rate_hz` would have taken it (anti-aliased resampling)."""
    info = find_trial(require_falls_dataset(dataset) / TRIALS_CSV, trial_id)
    samples = read_samples(info.file)
    ratio = Fraction(rate_hz, 50)
    resampled = signal.resample_poly(samples, ratio.numerator, ratio.denominator, axis=0)
    return info, np.clip(resampled, -m.ACCEL_LIMIT_G, m.ACCEL_LIMIT_G)


def stream_accel(monitor: HomeMonitor, device: str, samples: Array, rate_hz: float, t0: float) -> Outputs:
    """One batch per second of `samples` at `rate_hz` from t0, each received as it completes, with ticks."""
    out = Outputs()
    per = round(rate_hz)
    for first in range(0, len(samples), per):
        chunk = samples[first : first + per]
        start = t0 + first / rate_hz
        batch = m.AccelBatch(t0=start, rate_hz=float(rate_hz), samples_g=tuple(map(tuple, chunk.round(4).tolist())))
        received = start + len(chunk) / rate_hz
        out.extend(send(monitor, device, TopicKind.DEVICE_ACCEL, batch, received))
        out.extend(monitor.tick(received))
    return out


@pytest.mark.parametrize("rate_hz", [100, 25])
@pytest.mark.parametrize(
    ("dataset", "trial_id"), [("weda-fall", "weda_U01_F02_R01"), ("sisfall", "sisfall_SA02_F04_R01")]
)
def test_a_fall_recorded_at_another_rate_is_still_detected(dataset: str, trial_id: str, rate_hz: int) -> None:
    info, samples = recording_at(dataset, trial_id, rate_hz)
    wrist = info.placement == "wrist"
    monitor = HomeMonitor(HOME if wrist else BELT_HOME, fall_detector)
    [fall] = falls(stream_accel(monitor, "br1" if wrist else "belt1", samples, rate_hz, DAY))
    assert fall.placement == info.placement
    if info.fall_start_s is not None and info.fall_end_s is not None:
        assert DAY + info.fall_start_s - 0.1 <= fall.impact_ts <= DAY + info.fall_end_s + 0.5
    else:  # SisFall: no annotation; the impact is the largest |a|
        peak = float(np.argmax(np.linalg.norm(samples, axis=1))) / rate_hz
        assert fall.impact_ts == pytest.approx(DAY + peak, abs=0.3)
    assert fall.clip is not None
    assert fall.clip.rate_hz == 50.0  # the clip is the signal the detector saw
    assert fall.clip.t0 <= fall.impact_ts <= fall.clip.t0 + len(fall.clip.samples_g) / 50.0


@pytest.mark.parametrize("rate_hz", [100, 25])
@pytest.mark.parametrize(
    ("dataset", "trial_id"), [("weda-fall", "weda_U01_D10_R01"), ("sisfall", "sisfall_SA02_D19_R01")]
)
def test_a_daily_activity_recorded_at_another_rate_is_still_not_a_fall(
    dataset: str, trial_id: str, rate_hz: int
) -> None:
    info, samples = recording_at(dataset, trial_id, rate_hz)
    wrist = info.placement == "wrist"
    monitor = HomeMonitor(HOME if wrist else BELT_HOME, fall_detector)
    assert falls(stream_accel(monitor, "br1" if wrist else "belt1", samples, rate_hz, DAY)) == []


def test_a_device_that_changes_its_rate_mid_stream_is_still_watched() -> None:
    _, fall = recording_at("weda-fall", "weda_U01_F02_R01", 100)
    rng = np.random.default_rng(5)
    monitor = HomeMonitor(HOME, fall_detector)
    out = Outputs()
    t = DAY
    for rate in (50, 200, 10, 50, 25):  # ten seconds of moving about at each rate, back to back
        moving = fall[0] + rng.normal(0.0, 0.05, (10 * rate, 3))
        out.extend(stream_accel(monitor, "br1", moving, rate, t))
        t += 10.0
    assert falls(out) == []
    assert monitor.stats["accel_out_of_order"] == 0
    [event] = falls(stream_accel(monitor, "br1", fall, 100, t))  # and then she falls, at 100 Hz
    assert t <= event.impact_ts <= t + len(fall) / 100
