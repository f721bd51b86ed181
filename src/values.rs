//! `thryve.epoch_values` / `thryve.daily_values`: the values data-push webhooks carry, upserted
//! on Thryve's uniqueness keys.

use sqlx::{postgres::PgArguments, query::Query, PgExecutor, Postgres};

use crate::thryve::{DailyValue, EpochValue};

/// `value` as a number where it is one; the pattern bounds the exponent and the length bounds
/// the digits (numeric holds 131,072 before the point and 16,383 after), so that no string
/// can make the numeric cast fail and with it the poller's whole batch.
const NUMERIC: &str = r"CASE WHEN length(v.value) <= 1000
    AND v.value ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?\s*$'
    THEN v.value::numeric END";

/// The upsert of one value table. `own` are the table's own columns after the shared ones
/// (`$7` onwards, with their array types), the first of them the last column of the key.
/// A newer delivery (higher inbox id) replaces a value; an older one, or a replay of the same
/// content, changes nothing.
fn upsert_sql(table: &str, own: &[(&str, &str)]) -> String {
    let own_columns: Vec<&str> = own.iter().map(|(c, _)| *c).collect();
    let own_params: Vec<String> = own
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{ty}[]", i + 7))
        .collect();
    let key = own_columns[0];
    let changed: Vec<&str> = own_columns[1..]
        .iter()
        .copied()
        .chain(["timezone_offset", "value"])
        .collect();
    let set: Vec<String> = changed
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let old: Vec<String> = changed.iter().map(|c| format!("t.{c}")).collect();
    let new: Vec<String> = changed.iter().map(|c| format!("EXCLUDED.{c}")).collect();
    format!(
        "INSERT INTO thryve.{table} AS t (end_user_id, data_source_id, data_type_id, timezone_offset,
             value, inbox_id, {own_columns}, value_numeric)
         SELECT v.u, v.ds, v.dt, v.tz, v.value, v.inbox_id, {own_values}, {NUMERIC}
         FROM unnest($1::text[], $2::integer[], $3::integer[], $4::integer[], $5::text[],
                     $6::bigint[], {own_params})
              AS v(u, ds, dt, tz, value, inbox_id, {own_columns})
         ORDER BY v.u, v.ds, v.dt, v.{key}
         ON CONFLICT (end_user_id, data_source_id, data_type_id, {key}) DO UPDATE SET
             {set}, value_numeric = EXCLUDED.value_numeric, inbox_id = EXCLUDED.inbox_id,
             updated_at = now()
         WHERE EXCLUDED.inbox_id >= t.inbox_id
           AND ({old}) IS DISTINCT FROM ({new})",
        own_columns = own_columns.join(", "),
        own_values = own_columns
            .iter()
            .map(|c| format!("v.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        own_params = own_params.join(", "),
        set = set.join(", "),
        old = old.join(", "),
        new = new.join(", "),
    )
}

/// What the two value tables share besides the user and the delivery: source, data type,
/// timezone offset and value.
type Shared<'q> = (i32, i32, Option<i32>, &'q str);

/// `sql` (from [`upsert_sql`]) with the shared columns bound as `$1`..`$6`; `shared` reads
/// them off one value.
fn bind_shared<'q, V>(
    sql: &'q str,
    values: &'q [(String, i64, V)],
    shared: impl Fn(&'q V) -> Shared<'q>,
) -> Query<'q, Postgres, PgArguments> {
    let shared: Vec<Shared<'q>> = values.iter().map(|(_, _, v)| shared(v)).collect();
    sqlx::query(sql)
        .bind(
            values
                .iter()
                .map(|(u, _, _)| u.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(shared.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(shared.iter().map(|s| s.1).collect::<Vec<_>>())
        .bind(shared.iter().map(|s| s.2).collect::<Vec<_>>())
        .bind(shared.iter().map(|s| s.3).collect::<Vec<_>>())
        .bind(values.iter().map(|(_, id, _)| *id).collect::<Vec<_>>())
}

/// Upserts epoch values, keyed on (user, source, type, `start_time`). One entry per key.
pub async fn apply_epoch(
    executor: impl PgExecutor<'_>,
    values: &[(String, i64, EpochValue)],
) -> sqlx::Result<u64> {
    if values.is_empty() {
        return Ok(0);
    }
    let sql = upsert_sql(
        "epoch_values",
        &[("start_time", "timestamptz"), ("end_time", "timestamptz")],
    );
    let done = bind_shared(&sql, values, |v| {
        (
            v.data_source_id,
            v.data_type_id,
            v.timezone_offset,
            &v.value,
        )
    })
    .bind(values.iter().map(|(_, _, v)| v.start).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.end).collect::<Vec<_>>())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Upserts daily values, keyed on (user, source, type, `day`), with the rules of [`apply_epoch`].
pub async fn apply_daily(
    executor: impl PgExecutor<'_>,
    values: &[(String, i64, DailyValue)],
) -> sqlx::Result<u64> {
    if values.is_empty() {
        return Ok(0);
    }
    let sql = upsert_sql("daily_values", &[("day", "date")]);
    let done = bind_shared(&sql, values, |v| {
        (
            v.data_source_id,
            v.data_type_id,
            v.timezone_offset,
            &v.value,
        )
    })
    .bind(values.iter().map(|(_, _, v)| v.day).collect::<Vec<_>>())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// The ordering version of values fetched from Thryve's data API now: the inbox's high-water
/// mark, read before the call. It stands for the time of the fetch in the inbox-id ordering
/// ([`upsert_sql`]): every push stored before the call is older than the fetch's answer (so
/// the answer replaces it), every push stored after it is newer (so it wins).
pub async fn fetch_version(executor: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('thryve.inbox', 'id')::regclass), 0)",
    )
    .fetch_one(executor)
    .await
}

/// Writes values fetched from Thryve's data API for `end_user_id` with the rules of a push
/// ([`apply_epoch`], [`apply_daily`]), as of `version` ([`fetch_version`]). One key given
/// twice (a value overlapping two calls' spans comes back in both) is written once, the later
/// copy winning. Returns the rows inserted or changed.
pub async fn apply_fetched(
    conn: &mut sqlx::PgConnection,
    end_user_id: &str,
    version: i64,
    epoch: Vec<EpochValue>,
    daily: Vec<DailyValue>,
) -> sqlx::Result<u64> {
    use chrono::Datelike;
    let epoch: Vec<_> = last_per_key(epoch, |v| {
        (v.data_source_id, v.data_type_id, v.start.timestamp_micros())
    })
    .into_iter()
    .map(|v| (end_user_id.to_owned(), version, v))
    .collect();
    let daily: Vec<_> = last_per_key(daily, |v| {
        (
            v.data_source_id,
            v.data_type_id,
            v.day.num_days_from_ce().into(),
        )
    })
    .into_iter()
    .map(|v| (end_user_id.to_owned(), version, v))
    .collect();
    Ok(apply_epoch(&mut *conn, &epoch).await? + apply_daily(&mut *conn, &daily).await?)
}

fn last_per_key<V>(values: Vec<V>, key: impl Fn(&V) -> (i32, i32, i64)) -> Vec<V> {
    let mut by_key = std::collections::BTreeMap::new();
    for v in values {
        by_key.insert(key(&v), v);
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_upsert_keys_on_day_and_compares_what_a_delivery_can_change() {
        let sql = upsert_sql("daily_values", &[("day", "date")]);
        assert!(sql.contains("ON CONFLICT (end_user_id, data_source_id, data_type_id, day)"));
        assert!(sql.contains("$7::date[]"));
        assert!(sql.contains(
            "(t.timezone_offset, t.value) IS DISTINCT FROM (EXCLUDED.timezone_offset, EXCLUDED.value)"
        ));
    }

    #[test]
    fn the_epoch_upsert_also_compares_end_time() {
        let sql = upsert_sql(
            "epoch_values",
            &[("start_time", "timestamptz"), ("end_time", "timestamptz")],
        );
        assert!(sql.contains("data_type_id, start_time) DO UPDATE SET"));
        assert!(sql
            .contains("end_time = EXCLUDED.end_time, timezone_offset = EXCLUDED.timezone_offset"));
        assert!(sql.contains("(t.end_time, t.timezone_offset, t.value) IS DISTINCT FROM"));
    }
}
