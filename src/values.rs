//! `thryve.epoch_values` / `thryve.daily_values`: the values data pushes carry and the fetcher
//! fetches, upserted on their keys, newest version first, with their annotations and where
//! they came from; `thryve.data_sources` and `thryve.data_types`, the names pushes and the
//! data API give.
//!
//! Keys, as Thryve identifies a value: a daily value is (user, source, type, day). An epoch
//! value is (user, source, type, start, end, generation, third-party source), the end of an
//! instant being its start, generation and third-party source null when absent (two nulls
//! being one value): Thryve sends a 1-minute point and an aggregate with one start as two
//! values, and a manual entry beside a tracker reading of one start as two. A value that came
//! as an `update` and matches no stored end replaces the stored value of its start (and
//! generation and third-party source) with the latest end (Thryve updates a value when its end
//! moves; what moves is an open session or aggregate, the longest value at its start, never a
//! fixed-length point). Version: the signing time of the delivery, else its receipt (a fetch:
//! when its call started); a lower version never overwrites a higher one, the inbox id
//! breaking ties.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{types::Json, PgConnection, PgExecutor};

use crate::{
    ranges::Granularity,
    thryve::{api::TypeName, DailyValue, Details, EpochValue},
};

/// `value` as numeric text where it is a number, else `None` (stored as a null
/// `value_numeric`). Decided here so that no string can make the database's numeric cast fail
/// (and with it the poller's whole batch): an optional sign, digits with at most one point, an
/// exponent of at most three digits, blanks around, at most 1,000 characters (numeric holds
/// 131,072 digits before the point and 16,383 after; its exponent is bounded by 1,000).
pub fn numeric_text(value: &str) -> Option<&str> {
    // The blanks numeric's input skips: C's isspace.
    let blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    if value.len() > 1000 {
        return None;
    }
    let bytes = value.as_bytes();
    let start = bytes.iter().position(|b| !blank(b))?;
    let end = bytes.iter().rposition(|b| !blank(b))? + 1;
    let mut rest = &bytes[start..end];
    if let [b'+' | b'-', tail @ ..] = rest {
        rest = tail;
    }
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let whole = digits(rest);
    rest = &rest[whole..];
    let mut fraction = 0;
    if let [b'.', tail @ ..] = rest {
        fraction = digits(tail);
        rest = &tail[fraction..];
    }
    if whole == 0 && fraction == 0 {
        return None;
    }
    if let [b'e' | b'E', tail @ ..] = rest {
        let tail = match tail {
            [b'+' | b'-', t @ ..] => t,
            t => t,
        };
        let exponent = digits(tail);
        if !(1..=3).contains(&exponent) {
            return None;
        }
        rest = &tail[exponent..];
    }
    rest.is_empty().then_some(value)
}

/// Where a stored value came from: the delivery that carried it, or the dirty range whose
/// fetch from Thryve's data API brought it (`inbox_id` or `range_id` of its row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Delivery(i64),
    Range(i64),
}

impl Origin {
    fn inbox_id(self) -> Option<i64> {
        match self {
            Origin::Delivery(id) => Some(id),
            Origin::Range(_) => None,
        }
    }

    fn range_id(self) -> Option<i64> {
        match self {
            Origin::Range(id) => Some(id),
            Origin::Delivery(_) => None,
        }
    }
}

/// A value as it is written: whose, from where, at which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<V> {
    pub end_user_id: String,
    pub origin: Origin,
    /// `coalesce(inbox.signed_at, inbox.first_received_at)` of the delivery, or when the
    /// fetch's call started.
    pub version_at: DateTime<Utc>,
    /// The value came in an `update` push: it may move the end of the value it updates.
    pub update: bool,
    pub value: V,
}

impl<V> Versioned<V> {
    /// The version order, as the upserts compare it: `version_at`, then the inbox id (a
    /// fetched value's 0: of one version time, a delivery wins).
    fn order(&self) -> (DateTime<Utc>, i64) {
        (self.version_at, self.origin.inbox_id().unwrap_or(0))
    }
}

/// An epoch value's identity less its end: (user, source, type, start, generation,
/// third-party source).
type StartKey<'a> = (
    &'a str,
    i32,
    i32,
    DateTime<Utc>,
    Option<&'a str>,
    Option<&'a str>,
);

fn start_key(v: &Versioned<EpochValue>) -> StartKey<'_> {
    let e = &v.value;
    (
        v.end_user_id.as_str(),
        e.data_source_id,
        e.data_type_id,
        e.start,
        e.details.generation.as_deref(),
        e.details.third_party_data_source_id.as_deref(),
    )
}

/// Splits epoch values into statements that each hold at most one value per start key
/// ([`StartKey`]), oldest version first, after keeping only the newest of each full key: one
/// statement cannot see its own writes, so two values of one start (a point and an
/// aggregate, or an update of a value created in the same batch) go one after the other.
/// By one sort rather than hashing: the values of one start key, then of one full key, lie
/// next to each other (a batch's thousands of string keys made hashing the poller's largest
/// own cost).
fn epoch_rounds(values: &[Versioned<EpochValue>]) -> Vec<Vec<&Versioned<EpochValue>>> {
    let end = |v: &Versioned<EpochValue>| v.value.end.unwrap_or(v.value.start);
    let mut sorted: Vec<&Versioned<EpochValue>> = values.iter().collect();
    // Stable: of one key and one version, the later in `values` stays last, and wins.
    sorted
        .sort_by(|a, b| (start_key(a), end(a), a.order()).cmp(&(start_key(b), end(b), b.order())));
    let mut rounds: Vec<Vec<&Versioned<EpochValue>>> = Vec::new();
    // The newest of each full key of one start key: the last of its end's versions.
    let mut newest = Vec::new();
    for run in sorted.chunk_by(|a, b| start_key(a) == start_key(b)) {
        newest.extend(
            run.chunk_by(|a, b| end(a) == end(b))
                .filter_map(|versions| versions.last().copied()),
        );
        newest.sort_by_key(|v| v.order());
        for (round, v) in newest.drain(..).enumerate() {
            if rounds.len() <= round {
                rounds.push(Vec::new());
            }
            rounds[round].push(v);
        }
    }
    rounds
}

/// The full key in the unique index's column order, for sorting a statement's rows.
type FullKey<'a> = (
    &'a str,
    i32,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<&'a str>,
    Option<&'a str>,
);

fn epoch_key(v: &Versioned<EpochValue>) -> FullKey<'_> {
    let (user, source, data_type, start, generation, third_party) = start_key(v);
    let end = v.value.end.unwrap_or(start);
    (user, source, data_type, start, end, generation, third_party)
}

/// Upserts epoch values (see the module's key and version rules); returns rows written.
pub async fn apply_epoch(
    conn: &mut PgConnection,
    values: &[Versioned<EpochValue>],
) -> sqlx::Result<u64> {
    let mut written = 0;
    for mut round in epoch_rounds(values) {
        // In key order, as the index is written: sorted here rather than by the database,
        // whose core is the scarcer one.
        round.sort_unstable_by(|a, b| epoch_key(a).cmp(&epoch_key(b)));
        // A round holds one value per start key, so its creates and its updates touch
        // disjoint keys and may go in two statements: a create replaces only its own key,
        // which the conflict clause finds, and needs none of an update's lookup.
        let (updates, creates): (Vec<_>, Vec<_>) = round.into_iter().partition(|v| v.update);
        if !creates.is_empty() {
            written += bind_epoch(sqlx::query(CREATE_EPOCH), &creates)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        if !updates.is_empty() {
            written += bind_epoch(sqlx::query(UPDATE_EPOCH), &updates)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
    }
    Ok(written)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds what both value tables share, `$1`..`$12`: user, source, type, offset, value,
/// numeric text, inbox id, version, annotations, generation, third-party source, range id.
fn bind_common<'q, V: 'q>(
    query: PgQuery<'q>,
    values: &[&'q Versioned<V>],
    part: impl Fn(&'q V) -> (i32, i32, Option<i32>, &'q str, &'q Details),
) -> PgQuery<'q> {
    let parts: Vec<_> = values.iter().map(|v| part(&v.value)).collect();
    query
        .bind(
            values
                .iter()
                .map(|v| v.end_user_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(parts.iter().map(|p| p.0).collect::<Vec<_>>())
        .bind(parts.iter().map(|p| p.1).collect::<Vec<_>>())
        .bind(parts.iter().map(|p| p.2).collect::<Vec<_>>())
        .bind(parts.iter().map(|p| p.3).collect::<Vec<_>>())
        .bind(parts.iter().map(|p| numeric_text(p.3)).collect::<Vec<_>>())
        .bind(
            values
                .iter()
                .map(|v| v.origin.inbox_id())
                .collect::<Vec<_>>(),
        )
        .bind(values.iter().map(|v| v.version_at).collect::<Vec<_>>())
        .bind(
            parts
                .iter()
                .map(|p| p.4.annotations.as_ref().map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(
            parts
                .iter()
                .map(|p| p.4.generation.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            parts
                .iter()
                .map(|p| p.4.third_party_data_source_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            values
                .iter()
                .map(|v| v.origin.range_id())
                .collect::<Vec<_>>(),
        )
}

/// Binds `$1`..`$14` of [`CREATE_EPOCH`] and [`UPDATE_EPOCH`].
fn bind_epoch<'q>(query: PgQuery<'q>, values: &[&'q Versioned<EpochValue>]) -> PgQuery<'q> {
    bind_common(query, values, |e| {
        (
            e.data_source_id,
            e.data_type_id,
            e.timezone_offset,
            e.value.as_str(),
            &e.details,
        )
    })
    .bind(values.iter().map(|v| v.value.start).collect::<Vec<_>>())
    .bind(values.iter().map(|v| v.value.end).collect::<Vec<_>>())
}

/// The rows of a value statement: `unnest` of the bound arrays ([`bind_common`]'s twelve,
/// then the table's own two).
macro_rules! value_rows {
    ($own:literal, $names:literal) => {
        concat!(
            "unnest($1::text[], $2::integer[], $3::integer[], $4::integer[], $5::text[],
                    $6::text[], $7::bigint[], $8::timestamptz[], $9::jsonb[], $10::text[],
                    $11::text[], $12::bigint[], ",
            $own,
            ")
             AS v(u, ds, dt, tz, value, num, inbox_id, version_at, details, gen, tp, range_id, ",
            $names,
            ")"
        )
    };
}

/// What an epoch upsert writes over a stored row of its key, and when: the newer version
/// (`version_at`, then the inbox id, a fetch's counting as 0) that says something else.
macro_rules! epoch_conflict {
    () => {
        "ON CONFLICT (end_user_id, data_source_id, data_type_id, start_time, end_key, generation,
                     third_party_data_source_id) DO UPDATE SET
            end_time = EXCLUDED.end_time, timezone_offset = EXCLUDED.timezone_offset,
            value = EXCLUDED.value, value_numeric = EXCLUDED.value_numeric,
            details = EXCLUDED.details, inbox_id = EXCLUDED.inbox_id,
            range_id = EXCLUDED.range_id, version_at = EXCLUDED.version_at, updated_at = now()
        WHERE (EXCLUDED.version_at, coalesce(EXCLUDED.inbox_id, 0))
              > (t.version_at, coalesce(t.inbox_id, 0))
          -- The same data again (a re-fetch of what a push stored) rewrites nothing.
          AND (t.value, t.end_time, t.timezone_offset, t.details)
              IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.end_time, EXCLUDED.timezone_offset,
                                EXCLUDED.details)"
    };
}

/// Epoch values from `create` pushes (and fetches): each is written over the stored value of
/// its own key when it is newer and says something else.
const CREATE_EPOCH: &str = concat!(
    "INSERT INTO thryve.epoch_values AS t (end_user_id, data_source_id, data_type_id,
        start_time, end_time, timezone_offset, value, value_numeric, inbox_id, version_at,
        details, generation, third_party_data_source_id, range_id)
    SELECT v.u, v.ds, v.dt, v.st, v.et, v.tz, v.value, v.num::numeric, v.inbox_id,
           v.version_at, v.details, v.gen, v.tp, v.range_id
    FROM ",
    value_rows!("$13::timestamptz[], $14::timestamptz[]", "st, et"),
    "
    ",
    epoch_conflict!()
);

/// Epoch values from `update` pushes: each replaces the stored value of its key, or where its
/// end matches none, the value of its start key with the latest end (deleted, the update
/// written at its own key), when it is newer.
const UPDATE_EPOCH: &str = concat!(
    "WITH v AS (
        SELECT *, coalesce(et, st) AS ek FROM ",
    value_rows!("$13::timestamptz[], $14::timestamptz[]", "st, et"),
    "),
    target AS (
        SELECT v.*, t.end_key AS t_end, t.version_at AS t_version, t.inbox_id AS t_inbox
        FROM v LEFT JOIN LATERAL (
            SELECT e.end_key, e.version_at, e.inbox_id FROM thryve.epoch_values e
            WHERE e.end_user_id = v.u AND e.data_source_id = v.ds
              AND e.data_type_id = v.dt AND e.start_time = v.st
              AND e.generation IS NOT DISTINCT FROM v.gen
              AND e.third_party_data_source_id IS NOT DISTINCT FROM v.tp
            ORDER BY e.end_key = v.ek DESC, e.end_key DESC
            LIMIT 1) t ON true),
    winners AS (
        SELECT * FROM target
        WHERE t_end IS NULL
           OR (version_at, coalesce(inbox_id, 0)) > (t_version, coalesce(t_inbox, 0))),
    moved AS (
        DELETE FROM thryve.epoch_values e USING winners w
        WHERE w.t_end <> w.ek AND e.end_user_id = w.u AND e.data_source_id = w.ds
          AND e.data_type_id = w.dt AND e.start_time = w.st AND e.end_key = w.t_end
          AND e.generation IS NOT DISTINCT FROM w.gen
          AND e.third_party_data_source_id IS NOT DISTINCT FROM w.tp)
    INSERT INTO thryve.epoch_values AS t (end_user_id, data_source_id, data_type_id,
        start_time, end_time, timezone_offset, value, value_numeric, inbox_id, version_at,
        details, generation, third_party_data_source_id, range_id)
    SELECT v.u, v.ds, v.dt, v.st, v.et, v.tz, v.value, v.num::numeric, v.inbox_id,
           v.version_at, v.details, v.gen, v.tp, v.range_id
    FROM winners v
    ",
    epoch_conflict!()
);

/// Upserts daily values, keyed (user, source, type, day), the newest version winning.
pub async fn apply_daily(
    executor: impl PgExecutor<'_>,
    values: &[Versioned<DailyValue>],
) -> sqlx::Result<u64> {
    let mut newest: HashMap<(&str, i32, i32, NaiveDate), &Versioned<DailyValue>> = HashMap::new();
    for v in values {
        let key = (
            v.end_user_id.as_str(),
            v.value.data_source_id,
            v.value.data_type_id,
            v.value.day,
        );
        if newest.get(&key).is_none_or(|old| v.order() >= old.order()) {
            newest.insert(key, v);
        }
    }
    if newest.is_empty() {
        return Ok(0);
    }
    let mut kept: Vec<_> = newest.into_iter().collect();
    kept.sort_unstable_by_key(|(key, _)| *key);
    let kept: Vec<&Versioned<DailyValue>> = kept.into_iter().map(|(_, v)| v).collect();
    let done = bind_common(sqlx::query(UPSERT_DAILY), &kept, |d| {
        (
            d.data_source_id,
            d.data_type_id,
            d.timezone_offset,
            d.value.as_str(),
            &d.details,
        )
    })
    .bind(kept.iter().map(|v| v.value.day).collect::<Vec<_>>())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

const UPSERT_DAILY: &str = concat!(
    "INSERT INTO thryve.daily_values AS t (end_user_id, data_source_id, data_type_id, day,
        timezone_offset, value, value_numeric, inbox_id, version_at, details, generation,
        third_party_data_source_id, range_id)
    SELECT v.u, v.ds, v.dt, v.day, v.tz, v.value, v.num::numeric, v.inbox_id, v.version_at,
           v.details, v.gen, v.tp, v.range_id
    FROM ",
    value_rows!("$13::date[]", "day"),
    "
    ON CONFLICT (end_user_id, data_source_id, data_type_id, day) DO UPDATE SET
        timezone_offset = EXCLUDED.timezone_offset, value = EXCLUDED.value,
        value_numeric = EXCLUDED.value_numeric, details = EXCLUDED.details,
        generation = EXCLUDED.generation,
        third_party_data_source_id = EXCLUDED.third_party_data_source_id,
        inbox_id = EXCLUDED.inbox_id, range_id = EXCLUDED.range_id,
        version_at = EXCLUDED.version_at, updated_at = now()
    WHERE (EXCLUDED.version_at, coalesce(EXCLUDED.inbox_id, 0))
          > (t.version_at, coalesce(t.inbox_id, 0))
      AND (t.value, t.timezone_offset, t.details, t.third_party_data_source_id)
          IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.timezone_offset, EXCLUDED.details,
                            EXCLUDED.third_party_data_source_id)"
);

/// Records `dataSourceName`s: `(data_source_id, name, inbox_id)`, the highest inbox id winning
/// over other pushes and over the names the migrations seeded. A name already stored is left
/// alone before the upsert sees it: `ON CONFLICT DO UPDATE` locks the row it meets even when
/// its `WHERE` skips the update, and every push names its source, so concurrent pollers would
/// otherwise queue on one row until each other's commit.
pub async fn apply_source_names(
    executor: impl PgExecutor<'_>,
    names: &[(i32, String, i64)],
) -> sqlx::Result<u64> {
    if names.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO thryve.data_sources AS s (data_source_id, name, inbox_id, source)
         SELECT n.id, n.name, n.inbox_id, 'push'
         FROM unnest($1::integer[], $2::text[], $3::bigint[]) AS n(id, name, inbox_id)
         WHERE NOT EXISTS (SELECT 1 FROM thryve.data_sources d
                           WHERE d.data_source_id = n.id AND d.name = n.name)
         ORDER BY 1
         ON CONFLICT (data_source_id) DO UPDATE SET
             name = EXCLUDED.name, inbox_id = EXCLUDED.inbox_id, source = EXCLUDED.source,
             updated_at = now()
         WHERE (s.inbox_id IS NULL OR EXCLUDED.inbox_id > s.inbox_id) AND EXCLUDED.name <> s.name",
    )
    .bind(names.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
    .bind(names.iter().map(|(_, n, _)| n.as_str()).collect::<Vec<_>>())
    .bind(names.iter().map(|(_, _, i)| *i).collect::<Vec<_>>())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Records the names (and value types) a data-API answer gave its data types, as of that
/// `granularity`: what Thryve answers beats what the migrations seeded and what an earlier
/// answer said. Unchanged names are left alone before the upsert (see
/// [`apply_source_names`] for why); the seeded unit stays, as the answers carry none.
pub async fn learn_type_names(
    executor: impl PgExecutor<'_>,
    granularity: Granularity,
    types: &[TypeName],
) -> sqlx::Result<u64> {
    // One row per type (an upsert may touch a row once), the latest answer's name winning.
    let types: std::collections::BTreeMap<i32, &TypeName> =
        types.iter().map(|t| (t.data_type_id, t)).collect();
    if types.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO thryve.data_types AS t (data_type_id, granularity, name, value_type, source)
         SELECT n.id, $4, n.name, n.value_type, 'data-api'
         FROM unnest($1::integer[], $2::text[], $3::text[]) AS n(id, name, value_type)
         WHERE NOT EXISTS (
             SELECT 1 FROM thryve.data_types d
             WHERE d.data_type_id = n.id AND d.granularity = $4 AND d.source = 'data-api'
               AND d.name = n.name AND d.value_type IS NOT DISTINCT FROM n.value_type)
         ORDER BY 1
         ON CONFLICT (data_type_id, granularity) DO UPDATE SET
             name = EXCLUDED.name, value_type = coalesce(EXCLUDED.value_type, t.value_type),
             source = EXCLUDED.source, updated_at = now()",
    )
    .bind(types.keys().copied().collect::<Vec<_>>())
    .bind(types.values().map(|t| t.name.as_str()).collect::<Vec<_>>())
    .bind(
        types
            .values()
            .map(|t| t.value_type.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(granularity.as_str())
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Writes values fetched from Thryve's data API for `end_user_id` by the range `range_id`,
/// with the rules of a push ([`apply_epoch`], [`apply_daily`]), as of `version_at` (when the
/// call started): a fetched value replaces what pushes stored before the call, and a push
/// signed after it replaces the fetched value. Fetched values are written like a `create`:
/// Thryve answers with its current data, where a 1-minute point and an aggregate of one start
/// are both current, so none replaces a value of another end. One key given twice (a value
/// overlapping two calls' spans comes back in both) is written once, the later copy winning.
/// Returns the rows inserted or changed.
pub async fn apply_fetched(
    conn: &mut sqlx::PgConnection,
    end_user_id: &str,
    range_id: i64,
    version_at: DateTime<Utc>,
    epoch: Vec<EpochValue>,
    daily: Vec<DailyValue>,
) -> sqlx::Result<u64> {
    use chrono::Datelike;
    fn versioned<V>(end_user_id: &str, range_id: i64, at: DateTime<Utc>, value: V) -> Versioned<V> {
        Versioned {
            end_user_id: end_user_id.to_owned(),
            origin: Origin::Range(range_id),
            version_at: at,
            update: false,
            value,
        }
    }
    let epoch: Vec<_> = last_per_key(epoch, |v| {
        (
            v.data_source_id,
            v.data_type_id,
            v.start.timestamp_micros(),
            v.end.unwrap_or(v.start).timestamp_micros(),
            v.details.generation.clone(),
            v.details.third_party_data_source_id.clone(),
        )
    })
    .into_iter()
    .map(|v| versioned(end_user_id, range_id, version_at, v))
    .collect();
    let daily: Vec<_> = last_per_key(daily, |v| {
        (v.data_source_id, v.data_type_id, v.day.num_days_from_ce())
    })
    .into_iter()
    .map(|v| versioned(end_user_id, range_id, version_at, v))
    .collect();
    Ok(apply_epoch(&mut *conn, &epoch).await? + apply_daily(&mut *conn, &daily).await?)
}

fn last_per_key<V, K: Ord>(values: Vec<V>, key: impl Fn(&V) -> K) -> Vec<V> {
    let mut by_key = std::collections::BTreeMap::new();
    for v in values {
        by_key.insert(key(&v), v);
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn value(inbox_id: i64, start: i64, end: Option<i64>, update: bool) -> Versioned<EpochValue> {
        let at = |s| Utc.timestamp_opt(s, 0).unwrap();
        Versioned {
            end_user_id: "u".into(),
            origin: Origin::Delivery(inbox_id),
            version_at: at(1000 + inbox_id),
            update,
            value: EpochValue {
                data_source_id: 1,
                data_type_id: 1011,
                start: at(start),
                end: end.map(at),
                timezone_offset: None,
                value: inbox_id.to_string(),
                details: Details::default(),
            },
        }
    }

    #[test]
    fn numeric_text_takes_what_the_numeric_cast_takes_and_nothing_else() {
        for n in [
            "59", "-1.5", "+.5", "5.", " 7 ", "1e3", "2.5E-300", "\t12\n", "0012",
        ] {
            assert_eq!(numeric_text(n), Some(n), "{n:?}");
        }
        let long = "9".repeat(1001);
        for n in [
            "true",
            "",
            " ",
            ".",
            "-",
            "1e",
            "1e1000",
            "1.2.3",
            "1 2",
            "0x10",
            "NaN",
            "Infinity",
            "\u{a0}5",
            "5\u{2003}",
            "1_000",
            long.as_str(),
        ] {
            assert_eq!(numeric_text(n), None, "{n:?}");
        }
    }

    #[test]
    fn values_of_one_start_go_in_separate_statements_oldest_first() {
        let values = [
            value(3, 0, Some(600), true),
            value(1, 0, Some(60), false),
            value(2, 0, Some(300), false),
            value(4, 60, Some(120), false),
            // The same key as inbox 1, newer: replaces it before any statement.
            value(5, 0, Some(60), false),
        ];
        let rounds: Vec<Vec<i64>> = epoch_rounds(&values)
            .iter()
            .map(|r| r.iter().map(|v| v.order().1).collect())
            .collect();
        assert_eq!(rounds, vec![vec![2, 4], vec![3], vec![5]]);
    }

    #[test]
    fn of_one_key_and_one_version_the_later_value_is_the_one_written() {
        // One delivery naming a value twice: the second says what it is now.
        let mut first = value(7, 0, Some(60), false);
        first.value.value = "old".into();
        let mut second = value(7, 0, Some(60), false);
        second.value.value = "new".into();
        let values = [first, value(6, 0, Some(600), false), second];
        let rounds: Vec<Vec<&str>> = epoch_rounds(&values)
            .iter()
            .map(|r| r.iter().map(|v| v.value.value.as_str()).collect())
            .collect();
        assert_eq!(rounds, vec![vec!["6"], vec!["new"]]);
    }
}
