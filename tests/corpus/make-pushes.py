#!/usr/bin/env python3
"""Writes the data-push files of this corpus in their wire form: base64 text (standard
alphabet, padded, no line breaks) of a zstd frame, as Thryve sends them under
`content-encoding: zstd`. Deterministic; needs the `zstd` and `base64` commands.
Shapes follow captures of real traffic (docs/endpoint.md): epoch pushes of 32 values (the median) and
1,000 (the page size), sparse instants over four weeks, a 1-minute point and an aggregate with
one start (type 1011), instants without endTimestamp, sleep values with an end; daily pushes of
10 values. The push-v6-* files are the shapes Thryve's current (v6) pages document (the facts'
"v6" section): `data` as one object, `timestampType` in capitals, values as JSON numbers, and
the `additionalDetails` annotations; the first is the "Data push" page's own example."""
import json, random, subprocess, pathlib

HERE = pathlib.Path(__file__).parent
USER = "5e1c0d9a7b3f4e2a9c8d7e6f5a4b3c2d"
T0 = 1763083020000  # 2025-11-14T01:17:00Z
MIN = 60_000
DAY = 86_400_000


def wire(obj):
    text = json.dumps(obj, separators=(",", ":")).encode()
    frame = subprocess.run(["zstd", "-q", "-3", "-c"], input=text, capture_output=True, check=True).stdout
    return subprocess.run(["base64", "-w0"], input=frame, capture_output=True, check=True).stdout


def push(kind, values, source=8, name="Nokia", form="unix", user=USER):
    key = "epochData" if kind == "epoch" else "dailyData"
    return {"endUserId": user, "timestampType": form, "type": f"event.data.{kind}.update",
            "data": [{"dataSourceId": source, "dataSourceName": name, key: values}]}


def epoch_values(n, rng):
    values = []
    # Sleep phases with an end (Thryve updates them when the end moves).
    for i, t in enumerate((2000, 2001, 2002, 2005)):
        start = T0 - 8 * 60 * MIN + i * 37 * MIN
        values.append({"startTimestamp": start, "endTimestamp": start + 20 * MIN,
                       "timezoneOffset": 60, "dataTypeId": t, "value": "true" if t == 2005 else str(20 + i)})
    # Type 1011: five 1-minute points and the 5-minute aggregate with the same start.
    points = [rng.randint(10, 40) for _ in range(5)]
    for i, v in enumerate(points):
        values.append({"startTimestamp": T0 + i * MIN, "endTimestamp": T0 + (i + 1) * MIN,
                       "timezoneOffset": 60, "dataTypeId": 1011, "value": str(v)})
    values.append({"startTimestamp": T0, "endTimestamp": T0 + 5 * MIN, "timezoneOffset": 60,
                   "dataTypeId": 1011, "value": str(sum(points))})
    i = 0
    while len(values) < n:
        start = T0 + 10 * MIN + i * MIN
        if i % 3 == 2:  # heart rate: an instant, no endTimestamp
            values.append({"startTimestamp": start, "timezoneOffset": 60, "dataTypeId": 3000,
                           "value": str(rng.randint(55, 140))})
        else:  # steps per minute
            values.append({"startTimestamp": start, "endTimestamp": start + MIN, "timezoneOffset": 60,
                           "dataTypeId": 1000, "value": str(rng.randint(0, 130))})
        i += 1
    return values[:n]


def v6_pushes():
    # 2025-11-14T07:00:00Z, a morning weigh-in and heart-rate readings.
    at = 1763103600000
    return {
        # Thryve's "Data push" example, verbatim.
        "push-v6-epoch-iso-object.zst.b64": {
            "endUserId": "123accessToken", "endUserAlias": "YourEndUserAlias", "timestampType": "ISO",
            "type": "event.data.epoch.create",
            "data": {"dataSourceId": 5, "dataSourceName": "Apple", "epochData": [
                {"startTimestamp": "2025-05-31T11:11:13+06:00", "endTimestamp": "2025-05-31T11:11:13+06:00",
                 "timezoneOffset": 240, "dataTypeId": 0, "value": 0, "additionalDetails": {}}]}},
        # An array, unix, named, annotated: a manual weight entry and the scale's reading of
        # one instant, a manual heart-rate measurement beside the tracker's of one start, the
        # offset beside the annotations or inside them.
        "push-v6-epoch-unix-annotated.zst.b64": {
            "endUserId": USER, "timestampType": "unix", "type": "event.data.epoch.create",
            "data": [{"dataSourceId": 8, "dataSourceName": "Withings", "epochData": [
                {"startTimestamp": at, "timezoneOffset": 60, "dataTypeId": 5020, "value": 71.4,
                 "additionalDetails": {"generation": "manual_entry", "trustworthiness": "doubt_from_user"}},
                {"startTimestamp": at, "timezoneOffset": 60, "dataTypeId": 5020, "value": 71.9,
                 "additionalDetails": {"generation": "automated_measurement", "medicalGrade": True,
                                       "trustworthiness": "verified_from_device_source"}},
                {"startTimestamp": at + 10 * MIN, "endTimestamp": at + 11 * MIN, "dataTypeId": 3000, "value": 64,
                 "additionalDetails": {"timezoneOffset": 60, "generation": "manual_measurement",
                                       "chronologicalExactness": 5}},
                {"startTimestamp": at + 10 * MIN, "endTimestamp": at + 11 * MIN, "dataTypeId": 3000, "value": 61,
                 "additionalDetails": {"timezoneOffset": 60, "generation": "tracker"}}]}]},
        # One object, ISO in capitals, no dataSourceName, daily values with the offset inside.
        "push-v6-daily-iso-object.zst.b64": {
            "endUserId": USER, "timestampType": "ISO", "type": "event.data.daily.update",
            "data": {"dataSourceId": 1, "dailyData": [
                {"day": "2025-11-13", "dataTypeId": 1000, "value": 9120,
                 "additionalDetails": {"timezoneOffset": 60, "generation": "tracker"}},
                {"day": "2025-11-13", "dataTypeId": 3001, "value": 58,
                 "additionalDetails": {"timezoneOffset": 60, "generation": "calculation"}}]}},
        # One object, unix, neither a name nor annotations, values as strings.
        "push-v6-epoch-unix-object-plain.zst.b64": {
            "endUserId": USER, "timestampType": "Unix", "type": "event.data.epoch.update",
            "data": {"dataSourceId": 1, "epochData": [
                {"startTimestamp": at, "endTimestamp": at + MIN, "timezoneOffset": 60, "dataTypeId": 1000, "value": "87"},
                {"startTimestamp": at + MIN, "endTimestamp": at + 2 * MIN, "timezoneOffset": 60, "dataTypeId": 1000, "value": "112"}]}},
    }


def main():
    rng = random.Random(11)
    files = {
        "push-epoch-unix.zst.b64": push("epoch", epoch_values(32, rng)),
        "push-epoch-page-1000.zst.b64": push("epoch", epoch_values(1000, rng), source=1, name="Fitbit"),
        # Nine instants spread over 28 days (weight, from a scale).
        "push-epoch-sparse.zst.b64": push("epoch", [
            {"startTimestamp": T0 + d * DAY + 7 * 3_600_000, "timezoneOffset": 60, "dataTypeId": 5020,
             "value": f"{71 + d / 10:.1f}"} for d in (0, 3, 5, 9, 12, 16, 20, 24, 27)]),
        "push-daily-unix.zst.b64": push("daily", [
            {"day": 1765584000000 - d * DAY, "timezoneOffset": 60, "dataTypeId": t, "value": str(v)}
            for d, (t, v) in enumerate([(1000, 8214), (3001, 59), (1000, 10403), (3001, 61), (2000, 431),
                                        (1000, 6120), (3001, 58), (2000, 402), (1010, 2412), (1001, 6204)])]),
        "push-daily-iso.zst.b64": push("daily", [
            {"day": "2025-12-13", "timezoneOffset": 0, "dataTypeId": 3001, "value": "59"},
            {"day": "2025-12-12", "timezoneOffset": 0, "dataTypeId": 1000, "value": "4200"}], form="iso"),
    }
    files.update(v6_pushes())
    for name, obj in files.items():
        (HERE / name).write_bytes(wire(obj))


if __name__ == "__main__":
    main()
