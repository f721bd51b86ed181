//! The columns a delivery writes into `thryve.inbox`, listed once: each with the type its
//! array travels as (one array per column, unnested into rows), the statements built from
//! the lists, and the one binder that fills the arrays from [`NewDelivery`]s. Adding a column
//! means a field of `NewDelivery`, a line in a list and a line in its binder.

use std::sync::LazyLock;

use sqlx::{postgres::PgArguments, Arguments};

use super::NewDelivery;
use crate::db::int_array_literal;

/// A written column: its name, the element type of the array it is bound as, and the cast
/// from that to the column's type.
struct Column {
    name: &'static str,
    bound_as: &'static str,
    cast: &'static str,
}

const fn column(name: &'static str, bound_as: &'static str, cast: &'static str) -> Column {
    Column {
        name,
        bound_as,
        cast,
    }
}

/// What parsing the body decides: the same for a first delivery and for `replay`, which
/// parses stored rows again. In the order [`Classified::push`] binds them.
const CLASSIFIED: [Column; 14] = [
    column("status", "text", ""),
    column("error", "text", ""),
    column("event_type", "text", ""),
    column("end_user_id", "text", ""),
    column("end_user_alias", "text", ""),
    column("data_source_id", "integer", ""),
    // unnest() would flatten an int[][] of ragged rows, so the arrays travel as text.
    column("data_type_ids", "text", "::integer[]"),
    column("start_time", "timestamptz", ""),
    column("end_time", "timestamptz", ""),
    column("start_day", "date", ""),
    column("end_day", "date", ""),
    column("connected", "boolean", ""),
    column("event_time", "timestamptz", ""),
    column("value_count", "integer", ""),
];

/// The rest of a new row: which content, how often, and when and how it came. In the order
/// [`Rows::arguments`] binds them; `received_at` fills both receipt times.
const RECEIVED: [Column; 6] = [
    column("fingerprint", "bytea", ""),
    column("payload", "text", "::jsonb"),
    column("delivery_count", "integer", ""),
    column("received_at", "timestamptz", ""),
    column("signed_at", "timestamptz", ""),
    column("traceparent", "text", ""),
];

/// `unnest($n::type[], ...) AS t(name, ...)` over `columns`, the first bound as `$from`.
fn unnest(columns: &[&Column], from: usize) -> String {
    let params: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", from + i, c.bound_as))
        .collect();
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    format!("unnest({}) AS t({})", params.join(", "), names.join(", "))
}

fn names(columns: &[Column]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    names.join(", ")
}

/// Each column's value in `t`, cast to the column's type.
fn values(columns: &[Column]) -> String {
    let values: Vec<String> = columns
        .iter()
        .map(|c| format!("t.{}{}", c.name, c.cast))
        .collect();
    values.join(", ")
}

/// [`super::insert_batch`]'s statement: every written column, from [`Rows::arguments`].
pub(super) static INSERT: LazyLock<String> = LazyLock::new(|| {
    let all: Vec<&Column> = RECEIVED.iter().chain(&CLASSIFIED).collect();
    format!(
        r#"
        INSERT INTO thryve.inbox AS i (
            fingerprint, payload, delivery_count, first_received_at, last_received_at,
            signed_at, traceparent, {classified})
        SELECT t.fingerprint, t.payload::jsonb, t.delivery_count, coalesce(t.received_at, now()),
               coalesce(t.received_at, now()), t.signed_at, t.traceparent, {values}
        FROM {unnest}
        ORDER BY t.fingerprint
        ON CONFLICT (fingerprint) DO UPDATE SET
            delivery_count   = i.delivery_count + EXCLUDED.delivery_count,
            -- A spooled delivery loaded late keeps the time it was received.
            first_received_at = least(i.first_received_at, EXCLUDED.first_received_at),
            last_received_at = greatest(i.last_received_at, EXCLUDED.last_received_at),
            -- The same content signed again (Thryve re-sends with a fresh signature) is not
            -- newer data: its version stays the earliest signing seen.
            signed_at        = least(i.signed_at, EXCLUDED.signed_at),
            -- The latest delivery's trace id (a spooled one loaded late does not win).
            traceparent      = CASE WHEN EXCLUDED.traceparent IS NOT NULL
                                     AND EXCLUDED.last_received_at >= i.last_received_at
                                    THEN EXCLUDED.traceparent ELSE i.traceparent END,
            -- Same fingerprint, same content: a blanked payload can be had back for free, and
            -- the poller needs it where the typed columns do not describe the event.
            payload          = CASE WHEN i.payload = 'null'::jsonb THEN EXCLUDED.payload
                                    ELSE i.payload END,
            status           = CASE WHEN i.status = 'processed' THEN 'pending' ELSE i.status END,
            processed_at     = CASE WHEN i.status = 'processed' THEN NULL ELSE i.processed_at END
        RETURNING fingerprint, id, (xmax = 0) AS inserted
        "#,
        classified = names(&CLASSIFIED),
        values = values(&CLASSIFIED),
        unnest = unnest(&all, 1),
    )
});

/// [`super::replay`]'s statement: the classified columns of rows by id, from
/// [`Classified::arguments`] after the ids.
pub(super) static REPLAY: LazyLock<String> = LazyLock::new(|| {
    let id = column("id", "bigint", "");
    let all: Vec<&Column> = std::iter::once(&id).chain(&CLASSIFIED).collect();
    format!(
        "UPDATE thryve.inbox i SET ({names}) = ({values}) FROM {unnest} WHERE i.id = t.id",
        names = names(&CLASSIFIED),
        values = values(&CLASSIFIED),
        unnest = unnest(&all, 1),
    )
});

/// The [`CLASSIFIED`] columns of deliveries, one array each.
#[derive(Default)]
pub(super) struct Classified<'a> {
    status: Vec<&'static str>,
    error: Vec<Option<&'a str>>,
    event_type: Vec<Option<&'a str>>,
    end_user_id: Vec<Option<&'a str>>,
    end_user_alias: Vec<Option<&'a str>>,
    data_source_id: Vec<Option<i32>>,
    data_type_ids: Vec<Option<String>>,
    start_time: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    end_time: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    start_day: Vec<Option<chrono::NaiveDate>>,
    end_day: Vec<Option<chrono::NaiveDate>>,
    connected: Vec<Option<bool>>,
    event_time: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    value_count: Vec<Option<i32>>,
}

impl<'a> Classified<'a> {
    pub(super) fn push(&mut self, d: &'a NewDelivery) {
        let t = &d.typed;
        self.status.push(d.status.as_str());
        self.error.push(d.error.as_deref());
        self.event_type.push(d.event_type.as_deref());
        self.end_user_id.push(d.end_user_id.as_deref());
        self.end_user_alias.push(d.end_user_alias.as_deref());
        self.data_source_id.push(t.data_source_id);
        self.data_type_ids
            .push(t.data_type_ids.as_deref().map(int_array_literal));
        self.start_time.push(t.start_time);
        self.end_time.push(t.end_time);
        self.start_day.push(t.start_day);
        self.end_day.push(t.end_day);
        self.connected.push(t.connected);
        self.event_time.push(t.event_time);
        self.value_count.push(d.value_count);
    }

    /// Binds the arrays after what `args` holds, in [`CLASSIFIED`]'s order.
    pub(super) fn arguments(self, args: &mut PgArguments) -> Result<(), sqlx::Error> {
        let add = |r: Result<(), sqlx::error::BoxDynError>| r.map_err(sqlx::Error::Encode);
        add(args.add(self.status))?;
        add(args.add(self.error))?;
        add(args.add(self.event_type))?;
        add(args.add(self.end_user_id))?;
        add(args.add(self.end_user_alias))?;
        add(args.add(self.data_source_id))?;
        add(args.add(self.data_type_ids))?;
        add(args.add(self.start_time))?;
        add(args.add(self.end_time))?;
        add(args.add(self.start_day))?;
        add(args.add(self.end_day))?;
        add(args.add(self.connected))?;
        add(args.add(self.event_time))?;
        add(args.add(self.value_count))
    }
}

/// Every written column of new rows: [`RECEIVED`], then [`CLASSIFIED`].
#[derive(Default)]
pub(super) struct Rows<'a> {
    fingerprint: Vec<&'a [u8]>,
    payload: Vec<&'a str>,
    delivery_count: Vec<i32>,
    received_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    signed_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    traceparent: Vec<Option<&'a str>>,
    classified: Classified<'a>,
}

impl<'a> Rows<'a> {
    pub(super) fn push(&mut self, d: &'a NewDelivery, count: i32) {
        self.fingerprint.push(d.fingerprint.as_slice());
        self.payload.push(&d.payload);
        self.delivery_count.push(count);
        self.received_at.push(d.received_at);
        self.signed_at.push(d.signed_at);
        self.traceparent.push(d.traceparent.as_deref());
        self.classified.push(d);
    }

    /// The arguments of [`INSERT`].
    pub(super) fn arguments(self) -> Result<PgArguments, sqlx::Error> {
        let mut args = PgArguments::default();
        let add = |r: Result<(), sqlx::error::BoxDynError>| r.map_err(sqlx::Error::Encode);
        add(args.add(self.fingerprint))?;
        add(args.add(self.payload))?;
        add(args.add(self.delivery_count))?;
        add(args.add(self.received_at))?;
        add(args.add(self.signed_at))?;
        add(args.add(self.traceparent))?;
        self.classified.arguments(&mut args)?;
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_binds_every_written_column_once_in_order() {
        let all: Vec<&str> = RECEIVED.iter().chain(&CLASSIFIED).map(|c| c.name).collect();
        let unnest = &INSERT[INSERT.find("unnest(").unwrap()..];
        for (i, name) in all.iter().enumerate() {
            assert!(unnest.contains(&format!("${}::", i + 1)), "{name}");
        }
        assert!(!unnest.contains(&format!("${}::", all.len() + 1)));
        assert!(REPLAY.contains("SET (status, error, event_type"));
        assert!(REPLAY.contains("unnest($1::bigint[], $2::text[]"));
    }
}
