//! Thryve as its current (v6) pages document it: the documented push bodies in wire form (one
//! `data` object or an array, ISO and unix, with and without annotations and names), a push
//! of that shape the old parser quarantined, replayed; Thryve's identity of an epoch value
//! and the migration to it; names for ids; and which delivery or range wrote a value.

use std::path::Path;

use chrono::Utc;
use serde_json::{json, Value};
use thryve_bridge::{
    db,
    fetcher::Outcome,
    inbox::{self, NewDelivery, Status},
    ranges::Extent,
};

use crate::{
    cli::{bridge, json_out},
    fake_thryve::{answer, FakeThryve, Reply},
    fetcher::{add, at, config, fetch_one},
    invariants::assert_guarantees,
    poller::{poller, store},
    support::{self, migrated_before, spawn_app, thryve_wire, TestApp, TestDb, PASSWORD, USER},
    wire::post_wire,
};

const CORPUS_USER: &str = "5e1c0d9a7b3f4e2a9c8d7e6f5a4b3c2d";
/// 2025-11-14T07:00:00Z, the annotated corpus pushes' first instant.
const AT: i64 = 1_763_103_600_000;
const MINUTE: i64 = 60_000;

/// A corpus file as it goes on the wire (base64 text of a zstd frame), and the JSON it holds.
fn corpus(name: &str) -> (Vec<u8>, Value) {
    use base64::Engine as _;
    let wire = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus")
            .join(name),
    )
    .unwrap();
    let frame = base64::engine::general_purpose::STANDARD
        .decode(&wire)
        .unwrap();
    let json = serde_json::from_slice(&zstd::decode_all(&frame[..]).unwrap()).unwrap();
    (wire, json)
}

/// POSTs `body` as Thryve puts a push on the wire, signed at `signed_ms` when given (the test
/// server checks no HMAC, so a timestamp within the window is taken as the signing time).
async fn push(app: &TestApp, body: &Value, signed_ms: Option<i64>) {
    let mut request = app
        .webhook()
        .basic_auth(USER, Some(PASSWORD))
        .header("content-type", "application/json")
        .header("content-encoding", "zstd");
    if let Some(ms) = signed_ms {
        request = request.header("x-hmac-timestamp", ms.to_string());
    }
    let response = request
        .body(thryve_wire(body.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    let (status, ack) = support::answer(response).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("stored")),
        "{ack}"
    );
}

/// Every epoch value as JSON, in key order: `[user, source, type, start ms, end ms, offset,
/// value, generation, details]`.
async fn epoch_values(pool: &sqlx::PgPool) -> Value {
    sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(end_user_id, data_source_id, data_type_id,
                    (extract(epoch FROM start_time) * 1000)::bigint,
                    (extract(epoch FROM end_time) * 1000)::bigint, timezone_offset, value,
                    generation, details)
                ORDER BY end_user_id, data_source_id, data_type_id, start_time, end_key, generation),
                '[]')
         FROM thryve.epoch_values",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every daily value as JSON: `[user, source, type, day, offset, value, generation, details]`.
async fn daily_values(pool: &sqlx::PgPool) -> Value {
    sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(end_user_id, data_source_id, data_type_id,
                    day::text, timezone_offset, value, generation, details)
                ORDER BY end_user_id, data_source_id, data_type_id, day), '[]')
         FROM thryve.daily_values",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Pending ranges as JSON: `[user, source, granularity, types, start ms | day, end ms | day,
/// needs_fetch]`.
async fn pending_ranges(pool: &sqlx::PgPool) -> Value {
    sqlx::query_scalar(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(end_user_id, data_source_id, granularity,
                    data_type_ids,
                    coalesce(to_jsonb((extract(epoch FROM start_time) * 1000)::bigint), to_jsonb(start_day::text)),
                    coalesce(to_jsonb((extract(epoch FROM end_time) * 1000)::bigint), to_jsonb(end_day::text)),
                    needs_fetch)
                ORDER BY end_user_id, data_source_id, granularity), '[]')
         FROM thryve.dirty_ranges WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn thryves_documented_pushes_in_wire_form_store_values_details_and_ranges() {
    let app = spawn_app().await;
    for name in [
        "push-v6-epoch-iso-object.zst.b64",
        "push-v6-epoch-unix-annotated.zst.b64",
        "push-v6-daily-iso-object.zst.b64",
        "push-v6-epoch-unix-object-plain.zst.b64",
    ] {
        let (wire, _) = corpus(name);
        let (status, ack) = post_wire(&app, "zstd", wire).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some("stored")),
            "{name}: {ack}"
        );
    }
    app.wait_processed().await;

    let doc_at = 1_748_668_273_000_i64; // 2025-05-31T11:11:13+06:00
    let u = CORPUS_USER;
    assert_eq!(
        epoch_values(&app.db.pool).await,
        json!([
            // The "Data push" page's example: type 0, a numeric value, empty annotations.
            ["123accessToken", 5, 0, doc_at, doc_at, 240, "0", null, null],
            [u, 1, 1000, AT, AT + MINUTE, 60, "87", null, null],
            [u, 1, 1000, AT + MINUTE, AT + 2 * MINUTE, 60, "112", null, null],
            // A manual measurement and the tracker's reading of one start: two values.
            [u, 8, 3000, AT + 10 * MINUTE, AT + 11 * MINUTE, 60, "64", "manual_measurement",
             {"generation": "manual_measurement", "chronologicalExactness": 5}],
            [u, 8, 3000, AT + 10 * MINUTE, AT + 11 * MINUTE, 60, "61", "tracker",
             {"generation": "tracker"}],
            [u, 8, 5020, AT, null, 60, "71.9", "automated_measurement",
             {"generation": "automated_measurement", "medicalGrade": true,
              "trustworthiness": "verified_from_device_source"}],
            [u, 8, 5020, AT, null, 60, "71.4", "manual_entry",
             {"generation": "manual_entry", "trustworthiness": "doubt_from_user"}],
        ])
    );
    assert_eq!(
        daily_values(&app.db.pool).await,
        json!([
            [u, 1, 1000, "2025-11-13", 60, "9120", "tracker", {"generation": "tracker"}],
            [u, 1, 3001, "2025-11-13", 60, "58", "calculation", {"generation": "calculation"}],
        ])
    );
    // Push-only ranges over what the values cover, nothing to fetch.
    assert_eq!(
        pending_ranges(&app.db.pool).await,
        json!([
            ["123accessToken", 5, "epoch", [0], doc_at, doc_at, false],
            [
                u,
                1,
                "daily",
                [1000, 3001],
                "2025-11-13",
                "2025-11-13",
                false
            ],
            [u, 1, "epoch", [1000], AT, AT + 2 * MINUTE, false],
            [u, 8, "epoch", [3000, 5020], AT, AT + 11 * MINUTE, false],
        ])
    );
    // A push's dataSourceName beats the seeded name; one that agrees with the seed, or none,
    // leaves it.
    let names: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT data_source_id, name, split_part(source, ':', 1) FROM thryve.data_sources
         WHERE data_source_id IN (1, 5, 8) ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        names,
        vec![
            (1, "Fitbit".into(), "seed".into()),
            (5, "Apple".into(), "push".into()),
            (8, "Withings".into(), "seed".into()),
        ]
    );
    assert_guarantees(&app.db.pool).await;
}

#[tokio::test]
async fn a_push_the_old_parser_quarantined_is_replayed_into_values_and_ranges() {
    let db = TestDb::new().await;
    let (_, body) = corpus("push-v6-epoch-iso-object.zst.b64");
    // Stored as the bridge before v6 support stored it: quarantined, with its reason.
    let mut old = NewDelivery::from_body(body.as_object().unwrap());
    old.status = Status::Quarantined;
    old.error = Some("data: expected an array of data-source elements, got an object".into());
    let id = inbox::insert_batch(&db.pool, &[(&old, 1)]).await.unwrap()[0].id;

    let out = json_out(&bridge(&db.url(), &["inbox", "replay"], &[]));
    assert_eq!(
        out["counts"],
        json!({"pending": 1, "quarantined": 0, "ignored": 0})
    );
    assert_eq!(out["ids"]["pending"], json!([id]));
    poller(&db).drain().await.unwrap();

    let doc_at = 1_748_668_273_000_i64;
    assert_eq!(
        epoch_values(&db.pool).await,
        json!([["123accessToken", 5, 0, doc_at, doc_at, 240, "0", null, null]])
    );
    assert_eq!(
        pending_ranges(&db.pool).await,
        json!([["123accessToken", 5, "epoch", [0], doc_at, doc_at, false]])
    );
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM thryve.inbox WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), error), ("processed", None));
}

/// A sleep session of `generation` from `start` to `end` minutes after T0, and its value.
fn sleep(generation: &str, end_min: i64, value: &str) -> Value {
    json!({"startTimestamp": AT, "endTimestamp": AT + end_min * MINUTE, "timezoneOffset": 60,
           "dataTypeId": 2000, "value": value, "additionalDetails": {"generation": generation}})
}

fn epoch_push(kind: &str, items: Vec<Value>) -> Value {
    json!({"endUserId": "u1", "timestampType": "unix", "type": format!("event.data.epoch.{kind}"),
           "data": {"dataSourceId": 8, "dataSourceName": "Withings", "epochData": items}})
}

/// `[generation, end minutes after T0, value]` of each stored epoch value, in key order.
async fn sessions(pool: &sqlx::PgPool) -> Vec<(Option<String>, i64, String)> {
    sqlx::query_as(
        "SELECT generation, (extract(epoch FROM end_time - start_time) / 60)::bigint, value
         FROM thryve.epoch_values ORDER BY generation, end_key",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_manual_entry_and_a_tracker_reading_of_one_start_are_two_values_and_an_update_moves_one()
{
    let app = spawn_app().await;
    let now = Utc::now().timestamp_millis();
    // The tracker's session, a 1-minute point of it, and a manual entry, all of one start.
    push(
        &app,
        &epoch_push(
            "create",
            vec![
                sleep("tracker", 360, "360"),
                sleep("tracker", 1, "1"),
                sleep("manual_entry", 400, "400"),
            ],
        ),
        Some(now - 3_000),
    )
    .await;
    app.wait_processed().await;
    let tracker = |end, v: &str| (Some("tracker".to_owned()), end, v.to_owned());
    let manual = |end, v: &str| (Some("manual_entry".to_owned()), end, v.to_owned());
    assert_eq!(
        sessions(&app.db.pool).await,
        vec![manual(400, "400"), tracker(1, "1"), tracker(360, "360")]
    );
    // The tracker's session grows: it replaces the tracker's longest value of that start,
    // leaving its point and the manual entry.
    push(
        &app,
        &epoch_push("update", vec![sleep("tracker", 420, "420")]),
        Some(now - 2_000),
    )
    .await;
    // The manual entry is corrected, then an older signing of another correction arrives.
    push(
        &app,
        &epoch_push("update", vec![sleep("manual_entry", 410, "410")]),
        Some(now - 1_000),
    )
    .await;
    push(
        &app,
        &epoch_push("update", vec![sleep("manual_entry", 405, "405")]),
        Some(now - 2_500),
    )
    .await;
    app.wait_processed().await;
    assert_eq!(
        sessions(&app.db.pool).await,
        vec![manual(410, "410"), tracker(1, "1"), tracker(420, "420")]
    );
    assert_guarantees(&app.db.pool).await;
}

#[tokio::test]
async fn values_stored_under_the_old_key_are_carried_over_none_merged_or_lost() {
    let db = migrated_before(20261203000001).await;
    sqlx::raw_sql(
        r#"INSERT INTO thryve.inbox (id, fingerprint, event_type, end_user_id, payload, status,
               first_received_at, processed_at)
           OVERRIDING SYSTEM VALUE
           VALUES (1, sha256('push'), 'event.data.epoch.create', 'u1', '{}', 'processed',
                   '2025-11-14T01:00:00Z', now()),
                  (2, sha256('notice'), 'notification.data.epoch.createupdate', 'u2', '{}',
                   'processed', '2025-11-14T02:00:00Z', now());
           -- A point and the aggregate of its start, an instant: pushed (inbox 1). A sleep
           -- session fetched when the inbox's last id was 2 (another user's notification);
           -- a value whose delivery is gone (99).
           INSERT INTO thryve.epoch_values (end_user_id, data_source_id, data_type_id,
               start_time, end_time, timezone_offset, value, value_numeric, inbox_id, version_at)
           VALUES ('u1', 8, 1011, '2025-11-14T01:17:00Z', '2025-11-14T01:18:00Z', 60, '10', 10, 1, '2025-11-14T01:00:00Z'),
                  ('u1', 8, 1011, '2025-11-14T01:17:00Z', '2025-11-14T01:22:00Z', 60, '50', 50, 1, '2025-11-14T01:00:00Z'),
                  ('u1', 8, 3000, '2025-11-14T01:17:00Z', NULL, 60, '61', 61, 1, '2025-11-14T01:00:00Z'),
                  ('u1', 8, 2000, '2025-11-13T23:00:00Z', '2025-11-14T05:00:00Z', 60, '360', 360, 2, '2025-11-14T06:00:00Z'),
                  ('u1', 8, 5020, '2025-11-14T07:00:00Z', NULL, 60, '71.4', 71.4, 99, '2025-11-14T07:00:00Z');
           INSERT INTO thryve.daily_values (end_user_id, data_source_id, data_type_id, day,
               timezone_offset, value, value_numeric, inbox_id, version_at)
           VALUES ('u1', 8, 1000, '2025-11-14', 60, '5000', 5000, 1, '2025-11-14T01:00:00Z'),
                  ('u1', 8, 1001, '2025-11-14', 60, '3100', 3100, 2, '2025-11-14T06:00:00Z');
           SELECT setval(pg_get_serial_sequence('thryve.inbox', 'id'), 2);"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let content = "SELECT jsonb_agg(to_jsonb(v) - 'inbox_id' ORDER BY data_type_id, end_key)
                   FROM (SELECT end_user_id, data_source_id, data_type_id, start_time, end_time,
                                end_key, timezone_offset, value, value_numeric, version_at,
                                updated_at, inbox_id FROM thryve.epoch_values) v";
    let daily = "SELECT jsonb_agg(to_jsonb(v) - 'inbox_id' ORDER BY data_type_id)
                 FROM (SELECT end_user_id, data_source_id, data_type_id, day, timezone_offset,
                              value, value_numeric, version_at, updated_at
                       FROM thryve.daily_values) v";
    let query = |sql| sqlx::query_scalar::<_, Value>(sql).fetch_one(&db.pool);
    let (epoch_before, daily_before) = (query(content).await.unwrap(), query(daily).await.unwrap());

    db::migrate(&db.pool).await.unwrap();

    assert_eq!(
        query(content).await.unwrap(),
        epoch_before,
        "every epoch row, unchanged"
    );
    assert_eq!(
        query(daily).await.unwrap(),
        daily_before,
        "every daily row, unchanged"
    );
    let provenance: Vec<(i32, Option<i64>, bool)> = sqlx::query_as(
        "SELECT data_type_id, inbox_id, generation IS NULL AND details IS NULL
             AND third_party_data_source_id IS NULL AND range_id IS NULL
         FROM thryve.epoch_values ORDER BY data_type_id, end_key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        provenance,
        vec![
            (1011, Some(1), true),
            (1011, Some(1), true),
            // The fetched row no longer names another user's notification.
            (2000, None, true),
            (3000, Some(1), true),
            // Its delivery is gone: nothing tells, the pointer stays.
            (5020, Some(99), true),
        ]
    );
    let daily_inbox: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT inbox_id FROM thryve.daily_values ORDER BY data_type_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(daily_inbox, vec![Some(1), None]);

    // Today's rules hold on the migrated rows: an update moving the end of the session
    // replaces it; a tracker reading of the instant's start is a value beside it.
    store(
        &db,
        &[json!({"endUserId": "u1", "timestampType": "iso", "type": "event.data.epoch.update",
                 "data": {"dataSourceId": 8, "epochData": [
                     {"startTimestamp": "2025-11-13T23:00:00Z", "endTimestamp": "2025-11-14T06:00:00Z",
                      "dataTypeId": 2000, "value": "420"},
                     {"startTimestamp": "2025-11-14T01:17:00Z", "dataTypeId": 3000, "value": "63",
                      "additionalDetails": {"generation": "tracker"}}]}})],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let after: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT data_type_id, value, generation FROM thryve.epoch_values
         WHERE data_type_id IN (2000, 3000) ORDER BY data_type_id, generation NULLS FIRST",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        after,
        vec![
            (2000, "420".into(), None),
            (3000, "61".into(), None),
            (3000, "63".into(), Some("tracker".into())),
        ]
    );
}

#[tokio::test]
async fn the_named_views_show_names_units_and_unknown_ids() {
    let app = spawn_app().await;
    push(
        &app,
        &json!({"endUserId": "u1", "timestampType": "unix", "type": "event.data.epoch.create",
                "data": [{"dataSourceId": 8, "dataSourceName": "Withings", "epochData": [
                    {"startTimestamp": AT, "dataTypeId": 3000, "value": 61,
                     "additionalDetails": {"generation": "tracker"}},
                    {"startTimestamp": AT, "endTimestamp": AT + 20 * MINUTE, "dataTypeId": 2005, "value": "true"},
                    {"startTimestamp": AT, "endTimestamp": AT + 20 * MINUTE, "dataTypeId": 1001, "value": "1520"},
                    {"startTimestamp": AT, "dataTypeId": 77777, "value": "x"}]},
                         {"dataSourceId": 99, "epochData": [
                    {"startTimestamp": AT, "dataTypeId": 3000, "value": "70"}]}]}),
        None,
    )
    .await;
    push(
        &app,
        &json!({"endUserId": "u1", "timestampType": "iso", "type": "event.data.daily.create",
                "data": {"dataSourceId": 1, "dailyData": [
                    {"day": "2025-11-13", "dataTypeId": 2000, "value": "431"},
                    {"day": "2025-11-13", "dataTypeId": 1000, "value": "9120"}]}}),
        None,
    )
    .await;
    app.wait_processed().await;

    type Named = (
        i32,
        Option<String>,
        i32,
        Option<String>,
        Option<String>,
        String,
        Option<f64>,
    );
    let epoch: Vec<Named> = sqlx::query_as(
        "SELECT data_source_id, data_source_name, data_type_id, data_type_name, unit, value,
                value_numeric::float8
         FROM thryve.epoch_values_named ORDER BY data_source_id, data_type_id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let row = |s, sn: Option<&str>, t, tn: Option<&str>, unit: Option<&str>, v: &str, n| {
        (
            s,
            sn.map(str::to_owned),
            t,
            tn.map(str::to_owned),
            unit.map(str::to_owned),
            v.to_owned(),
            n,
        )
    };
    assert_eq!(
        epoch,
        vec![
            row(
                8,
                Some("Withings"),
                1001,
                Some("CoveredDistance"),
                Some("m"),
                "1520",
                Some(1520.0)
            ),
            // true/false read as 1/0.
            row(
                8,
                Some("Withings"),
                2005,
                Some("SleepLight"),
                None,
                "true",
                Some(1.0)
            ),
            row(
                8,
                Some("Withings"),
                3000,
                Some("HeartRate"),
                Some("bpm"),
                "61",
                Some(61.0)
            ),
            // Unknown ids store and show, unnamed.
            row(8, Some("Withings"), 77777, None, None, "x", None),
            row(
                99,
                None,
                3000,
                Some("HeartRate"),
                Some("bpm"),
                "70",
                Some(70.0)
            ),
        ]
    );
    let daily: Vec<(Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT data_source_name, data_type_name, value FROM thryve.daily_values_named
         ORDER BY data_type_id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        daily,
        vec![
            (Some("Fitbit".into()), Some("Steps".into()), "9120".into()),
            (
                Some("Fitbit".into()),
                Some("SleepDuration".into()),
                "431".into()
            ),
        ]
    );

    // The README's example runs, and its output shows the view's columns.
    let sql = support::sql_block("README.md", "FROM thryve.epoch_values_named");
    let statement = sql
        .lines()
        .find(|l| l.contains("thryve.epoch_values_named"))
        .unwrap();
    let rows = sqlx::query(statement)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute
         WHERE attrelid = 'thryve.epoch_values_named'::regclass AND attnum > 0 ORDER BY attnum",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let header = sql
        .lines()
        .find(|l| l.contains("data_source_name"))
        .expect("the README shows the output's header");
    let shown: Vec<&str> = header
        .trim_start_matches("--")
        .split('|')
        .map(str::trim)
        .collect();
    assert_eq!(shown, columns);
}

#[tokio::test]
async fn a_fetched_value_keeps_its_annotations_names_its_range_and_teaches_type_names() {
    let db = TestDb::new().await;
    // A pushed value of the same user, for the provenance query to tell apart.
    let pushed = store(
        &db,
        &[
            json!({"endUserId": "f1", "timestampType": "unix", "type": "event.data.epoch.create",
                 "data": {"dataSourceId": 8, "epochData": [
                     {"startTimestamp": AT - 60 * MINUTE, "dataTypeId": 5020, "value": "71.4"}]}}),
        ],
    )
    .await[0];
    poller(&db).drain().await.unwrap();
    add(
        &db,
        "f1",
        8,
        &[],
        Extent::Epoch(at("2025-11-14T07:00:00Z"), at("2025-11-14T08:00:00Z")),
    )
    .await;
    let range_id: i64 = sqlx::query_scalar(
        "SELECT id FROM thryve.dirty_ranges WHERE needs_fetch AND status = 'pending'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let fake = FakeThryve::start(|_, _| {
        Reply::ok(answer(
            "f1",
            &[&[(
                8,
                vec![
                    json!({"startTimestampUnix": AT, "endTimestampUnix": AT + MINUTE,
                           "dynamicValueType": 3000, "dynamicValueTypeName": "HeartRate",
                           "valueType": "LONG", "value": "61",
                           "details": {"timezoneOffset": 60, "generation": "tracker",
                                       "trustworthiness": "verified_from_device_source"}}),
                    json!({"startTimestampUnix": AT, "endTimestampUnix": AT + MINUTE,
                           "dynamicValueType": 1000, "dynamicValueTypeName": "Steps",
                           "valueType": "LONG", "value": "87", "details": {"timezoneOffset": 60}}),
                    json!({"startTimestampUnix": AT, "dynamicValueType": 9999,
                           "dynamicValueTypeName": "SomethingNew", "valueType": "DOUBLE",
                           "value": "0.5"}),
                ],
            )]],
        ))
    })
    .await;
    assert_eq!(
        fetch_one(&db, &config(&fake)).await,
        Outcome::Done { values_written: 3 }
    );

    /// (type, inbox id, range id, offset, generation, details)
    type Fetched = (
        i32,
        Option<i64>,
        Option<i64>,
        Option<i32>,
        Option<String>,
        Option<Value>,
    );
    let fetched: Vec<Fetched> = sqlx::query_as(
        "SELECT data_type_id, inbox_id, range_id, timezone_offset, generation, details
             FROM thryve.epoch_values WHERE data_type_id <> 5020 ORDER BY data_type_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        fetched,
        vec![
            (1000, None, Some(range_id), Some(60), None, None),
            (
                3000,
                None,
                Some(range_id),
                Some(60),
                Some("tracker".into()),
                Some(
                    json!({"generation": "tracker", "trustworthiness": "verified_from_device_source"})
                )
            ),
            (9999, None, Some(range_id), None, None, None),
        ]
    );
    // Learned names beat seeded ones (Steps had no value type) and name new ids.
    let types: Vec<(i32, String, Option<String>, String)> = sqlx::query_as(
        "SELECT data_type_id, name, value_type, source FROM thryve.data_types
         WHERE granularity = 'epoch' AND data_type_id IN (1000, 3000, 9999) ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let learned = |id, name: &str, value_type: &str| {
        (
            id,
            name.to_owned(),
            Some(value_type.to_owned()),
            "data-api".to_owned(),
        )
    };
    assert_eq!(
        types,
        vec![
            learned(1000, "Steps", "LONG"),
            learned(3000, "HeartRate", "LONG"),
            learned(9999, "SomethingNew", "DOUBLE"),
        ]
    );

    // The README's "which delivery or range wrote a value" query names each truthfully.
    let sql = support::sql_block("docs/values.md", "which delivery or range wrote a value");
    let statement = sql
        .split(';')
        .find(|s| s.contains("which delivery or range wrote a value"))
        .unwrap()
        .replace("'u1'", "'f1'");
    /// (value, inbox id, range id, the delivery's event type)
    type Provenance = (String, Option<i64>, Option<i64>, Option<String>);
    let rows: Vec<Provenance> = sqlx::query(&statement)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|row: sqlx::postgres::PgRow| {
            use sqlx::Row;
            (
                row.get("value"),
                row.get("inbox_id"),
                row.get("range_id"),
                row.get("event_type"),
            )
        })
        .collect();
    let by_value = |v: &str| {
        rows.iter()
            .find(|r| r.0 == v)
            .cloned()
            .unwrap_or_else(|| panic!("{v} in {rows:?}"))
    };
    assert_eq!(
        by_value("71.4"),
        (
            "71.4".into(),
            Some(pushed),
            None,
            Some("event.data.epoch.create".into())
        )
    );
    assert_eq!(by_value("61"), ("61".into(), None, Some(range_id), None));
}
