//! `thryve.epoch_values` / `thryve.daily_values`: the values data-push webhooks carry, upserted
//! on Thryve's uniqueness keys.

use sqlx::PgExecutor;

use crate::thryve::{DailyValue, EpochValue};

/// `value` as a number where it is one; the pattern bounds the exponent and the length bounds
/// the digits (numeric holds 131,072 before the point and 16,383 after), so that no string
/// can make the numeric cast fail and with it the poller's whole batch.
const NUMERIC: &str = r"CASE WHEN length(v.value) <= 1000
    AND v.value ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?\s*$'
    THEN v.value::numeric END";

/// Upserts epoch values: a newer delivery (higher inbox id) replaces a value, an older one or a
/// replay of the same content changes nothing. One entry per key.
pub async fn apply_epoch(
    executor: impl PgExecutor<'_>,
    values: &[(String, i64, EpochValue)],
) -> sqlx::Result<u64> {
    if values.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(&format!(
        "INSERT INTO thryve.epoch_values AS e (end_user_id, data_source_id, data_type_id, start_time,
             end_time, timezone_offset, value, value_numeric, inbox_id)
         SELECT v.u, v.ds, v.dt, v.st, v.et, v.tz, v.value, {NUMERIC}, v.inbox_id
         FROM unnest($1::text[], $2::integer[], $3::integer[], $4::timestamptz[], $5::timestamptz[],
                     $6::integer[], $7::text[], $8::bigint[]) AS v(u, ds, dt, st, et, tz, value, inbox_id)
         ORDER BY 1, 2, 3, 4
         ON CONFLICT (end_user_id, data_source_id, data_type_id, start_time) DO UPDATE SET
             end_time = EXCLUDED.end_time, timezone_offset = EXCLUDED.timezone_offset,
             value = EXCLUDED.value, value_numeric = EXCLUDED.value_numeric,
             inbox_id = EXCLUDED.inbox_id, updated_at = now()
         WHERE EXCLUDED.inbox_id >= e.inbox_id
           AND (e.end_time, e.timezone_offset, e.value)
               IS DISTINCT FROM (EXCLUDED.end_time, EXCLUDED.timezone_offset, EXCLUDED.value)"
    ))
    .bind(values.iter().map(|(u, _, _)| u.as_str()).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.data_source_id).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.data_type_id).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.start).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.end).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.timezone_offset).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.value.as_str()).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, id, _)| *id).collect::<Vec<_>>())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Upserts daily values, with the same rules as [`apply_epoch`].
pub async fn apply_daily(
    executor: impl PgExecutor<'_>,
    values: &[(String, i64, DailyValue)],
) -> sqlx::Result<u64> {
    if values.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(&format!(
        "INSERT INTO thryve.daily_values AS d (end_user_id, data_source_id, data_type_id, day,
             timezone_offset, value, value_numeric, inbox_id)
         SELECT v.u, v.ds, v.dt, v.day, v.tz, v.value, {NUMERIC}, v.inbox_id
         FROM unnest($1::text[], $2::integer[], $3::integer[], $4::date[], $5::integer[], $6::text[],
                     $7::bigint[]) AS v(u, ds, dt, day, tz, value, inbox_id)
         ORDER BY 1, 2, 3, 4
         ON CONFLICT (end_user_id, data_source_id, data_type_id, day) DO UPDATE SET
             timezone_offset = EXCLUDED.timezone_offset, value = EXCLUDED.value,
             value_numeric = EXCLUDED.value_numeric, inbox_id = EXCLUDED.inbox_id, updated_at = now()
         WHERE EXCLUDED.inbox_id >= d.inbox_id
           AND (d.timezone_offset, d.value) IS DISTINCT FROM (EXCLUDED.timezone_offset, EXCLUDED.value)"
    ))
    .bind(values.iter().map(|(u, _, _)| u.as_str()).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.data_source_id).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.data_type_id).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.day).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.timezone_offset).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, _, v)| v.value.as_str()).collect::<Vec<_>>())
    .bind(values.iter().map(|(_, id, _)| *id).collect::<Vec<_>>())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}
