//! Checking a run against the database: every acknowledged delivery has its row and, once the
//! poller is idle, everything it names is covered by a range.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use thryve_bridge::{
    inbox::NewDelivery,
    thryve::{self, Parsed, Span},
};

use crate::send::Sent;

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verification {
    /// Deliveries answered 200.
    pub acknowledged: u64,
    /// Of those, how many were answered `spooled` (no inbox id: written to the bridge's local
    /// spool, to be loaded once the database is back); each is looked up by its content.
    pub spooled: u64,
    /// Of those, how many have no inbox row: must be 0.
    pub missing: u64,
    /// Acknowledged rows still pending when the poller was waited for (or quarantined or
    /// ignored): their coverage is not checked, so this must be 0 for a clean run.
    pub not_processed: u64,
    /// (user, source, type, span) of processed deliveries not inside a range dirtied at or
    /// after processing: must be 0.
    pub uncovered: u64,
}

/// Checks every 200 against the database: its row exists, and once no row is pending (the
/// poller is idle, waited for up to `idle_timeout`), everything it names is covered.
pub async fn verify(
    pool: &PgPool,
    sent: &[Sent],
    idle_timeout: Duration,
) -> sqlx::Result<Verification> {
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.status == 200).collect();
    let ids: Vec<i64> = acked.iter().filter_map(|s| s.inbox_id).collect();
    let found: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT id) FROM thryve.inbox WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(pool)
            .await?;
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // A spooled 200 carries no id: its row is found by the fingerprint the receiver gives its
    // content.
    let spooled: Vec<Vec<u8>> = acked
        .iter()
        .filter(|s| s.inbox_id.is_none())
        .filter_map(|s| match s.body.json() {
            Value::Object(body) => Some(NewDelivery::from_body(&body).fingerprint.to_vec()),
            _ => None,
        })
        .collect();
    let spooled_found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::bytea[]) AS f(fp)
         WHERE EXISTS (SELECT 1 FROM thryve.inbox WHERE fingerprint = f.fp)",
    )
    .bind(&spooled)
    .fetch_one(pool)
    .await?;
    let missing = (distinct.len() as i64 - found).max(0) as u64 + (acked.len() - ids.len()) as u64
        - spooled_found.max(0) as u64;

    let waited = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE status = 'pending'")
                .fetch_one(pool)
                .await?;
        if pending == 0 || waited.elapsed() > idle_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let not_processed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM thryve.inbox WHERE id = ANY($1) AND status <> 'processed'",
    )
    .bind(&distinct)
    .fetch_one(pool)
    .await?;

    let (mut inbox_ids, mut users, mut sources, mut grans, mut types) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut starts, mut ends, mut start_days, mut end_days) = (vec![], vec![], vec![], vec![]);
    for s in &acked {
        let Some(id) = s.inbox_id else {
            continue;
        };
        let Value::Object(body) = s.body.json() else {
            continue;
        };
        let Parsed::Valid(n) = thryve::parse(&body) else {
            continue;
        };
        for span in n.effects().spans {
            let (source, ids, gran, st, et, sd, ed) = match span {
                Span::Epoch(e) => (
                    e.data_source_id,
                    e.data_type_ids,
                    "epoch",
                    Some(e.start),
                    Some(e.end),
                    None,
                    None,
                ),
                Span::Daily(d) => (
                    d.data_source_id,
                    d.data_type_ids,
                    "daily",
                    None,
                    None,
                    Some(d.start),
                    Some(d.end),
                ),
            };
            // No types means all types (legacy triggers): 0 stands for "all" below.
            let ids = if ids.is_empty() { vec![0] } else { ids };
            for t in ids {
                inbox_ids.push(id);
                users.push(n.end_user_id.clone());
                sources.push(source);
                grans.push(gran);
                types.push(t);
                starts.push(st);
                ends.push(et);
                start_days.push(sd);
                end_days.push(ed);
            }
        }
    }
    let uncovered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::int[],
                                     $6::timestamptz[], $7::timestamptz[], $8::date[], $9::date[])
                AS w(inbox_id, u, ds, g, t, st, et, sd, ed)
         JOIN thryve.inbox i ON i.id = w.inbox_id AND i.status = 'processed'
         WHERE NOT EXISTS (
             SELECT 1 FROM thryve.dirty_ranges r
             WHERE r.end_user_id = w.u AND r.data_source_id = w.ds AND r.granularity = w.g
               AND (cardinality(r.data_type_ids) = 0 OR w.t = ANY (r.data_type_ids))
               AND r.last_dirtied_at >= i.processed_at
               AND (w.g = 'epoch' AND r.start_time <= w.st AND r.end_time >= w.et
                 OR w.g = 'daily' AND r.start_day <= w.sd AND r.end_day >= w.ed))",
    )
    .bind(inbox_ids)
    .bind(users)
    .bind(sources)
    .bind(grans)
    .bind(types)
    .bind(starts)
    .bind(ends)
    .bind(start_days)
    .bind(end_days)
    .fetch_one(pool)
    .await?;
    Ok(Verification {
        acknowledged: acked.len() as u64,
        spooled: spooled.len() as u64,
        missing,
        not_processed: not_processed as u64,
        uncovered: uncovered as u64,
    })
}
