//! Pre-merging a batch's spans in memory, so the database merges each key's news once. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

use crate::thryve::Span;

/// epoch or daily: the two kinds of range, never merged with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Epoch,
    Daily,
}

crate::db::text_enum!(Granularity {
    Epoch => "epoch",
    Daily => "daily",
});

/// Where a span lies: inclusive instants or inclusive days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    Epoch(DateTime<Utc>, DateTime<Utc>),
    Daily(NaiveDate, NaiveDate),
}

/// A merged span of one (user, source, granularity), ready for `thryve.merge_dirty_ranges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedSpan {
    pub end_user_id: String,
    pub data_source_id: i32,
    /// Sorted, distinct; empty means all types.
    pub data_type_ids: Vec<i32>,
    pub extent: Extent,
    pub notification_count: i32,
    /// Whether anything in it must be fetched from Thryve (false: pushed values only).
    pub needs_fetch: bool,
}

impl MergedSpan {
    pub fn granularity(&self) -> Granularity {
        match self.extent {
            Extent::Epoch(..) => Granularity::Epoch,
            Extent::Daily(..) => Granularity::Daily,
        }
    }
}

/// The types of two merged spans: sorted and distinct, and no list (all types) if either
/// has none.
fn union_types(mut a: Vec<i32>, b: Vec<i32>) -> Vec<i32> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

/// Merges spans that overlap or touch (equal instants; adjacent days) within each
/// (user, source, granularity), the same rule the database applies, so merging the result
/// gives the same ranges as merging every span one by one. Each input counts as one
/// notification and needs a fetch (see [`coalesce_marked`]).
///
/// ```
/// use chrono::NaiveDate;
/// use thryve_bridge::ranges::{coalesce, Extent};
/// use thryve_bridge::thryve::{DaySpan, Span};
/// let day = |d| NaiveDate::from_ymd_opt(2024, 1, d).unwrap();
/// let span = |a, b, t| Span::Daily(DaySpan { data_source_id: 1, data_type_ids: vec![t], start: day(a), end: day(b) });
/// let merged = coalesce(vec![("u".into(), span(1, 2, 10)), ("u".into(), span(3, 3, 11))]);
/// assert_eq!(merged.len(), 1);
/// assert_eq!(merged[0].extent, Extent::Daily(day(1), day(3)));
/// assert_eq!(merged[0].data_type_ids, vec![10, 11]);
/// ```
pub fn coalesce(spans: impl IntoIterator<Item = (String, Span)>) -> Vec<MergedSpan> {
    coalesce_marked(spans.into_iter().map(|(user, span)| (user, span, true)))
}

/// [`coalesce`] for spans marked with whether they need a fetch: a merged span needs one when
/// any of its parts does, and names all types (no list) when any of its parts does.
pub fn coalesce_marked(spans: impl IntoIterator<Item = (String, Span, bool)>) -> Vec<MergedSpan> {
    let mut by_key: BTreeMap<(String, i32, Granularity), Vec<MergedSpan>> = BTreeMap::new();
    for (user, span, needs_fetch) in spans {
        let merged = match span {
            Span::Epoch(s) => MergedSpan {
                end_user_id: user,
                data_source_id: s.data_source_id,
                data_type_ids: s.data_type_ids,
                extent: Extent::Epoch(s.start, s.end),
                notification_count: 1,
                needs_fetch,
            },
            Span::Daily(s) => MergedSpan {
                end_user_id: user,
                data_source_id: s.data_source_id,
                data_type_ids: s.data_type_ids,
                extent: Extent::Daily(s.start, s.end),
                notification_count: 1,
                needs_fetch,
            },
        };
        by_key
            .entry((
                merged.end_user_id.clone(),
                merged.data_source_id,
                merged.granularity(),
            ))
            .or_default()
            .push(merged);
    }
    let mut out = Vec::new();
    for (_, mut spans) in by_key {
        spans.sort_by_key(|s| start_key(&s.extent));
        let mut current: Option<MergedSpan> = None;
        for span in spans {
            current = Some(match current {
                Some(mut cur) if joins(&cur.extent, &span.extent) => {
                    cur.extent = hull(&cur.extent, &span.extent);
                    cur.data_type_ids = union_types(cur.data_type_ids, span.data_type_ids);
                    cur.needs_fetch |= span.needs_fetch;
                    cur.notification_count = cur
                        .notification_count
                        .saturating_add(span.notification_count);
                    cur
                }
                Some(cur) => {
                    out.push(cur);
                    span
                }
                None => span,
            });
        }
        out.extend(current);
    }
    out
}

fn start_key(extent: &Extent) -> i64 {
    match extent {
        Extent::Epoch(start, _) => start.timestamp_micros(),
        Extent::Daily(start, _) => i64::from(start.num_days_from_ce()),
    }
}

/// Whether `next` (starting no earlier than `cur`) overlaps or touches `cur`.
fn joins(cur: &Extent, next: &Extent) -> bool {
    match (cur, next) {
        (Extent::Epoch(_, end), Extent::Epoch(start, _)) => start <= end,
        (Extent::Daily(_, end), Extent::Daily(start, _)) => end
            .checked_add_days(Days::new(1))
            .is_none_or(|after| *start <= after),
        _ => false,
    }
}

fn hull(a: &Extent, b: &Extent) -> Extent {
    match (a, b) {
        (Extent::Epoch(s1, e1), Extent::Epoch(s2, e2)) => Extent::Epoch(*s1.min(s2), *e1.max(e2)),
        (Extent::Daily(s1, e1), Extent::Daily(s2, e2)) => Extent::Daily(*s1.min(s2), *e1.max(e2)),
        _ => *a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thryve::{DaySpan, InstantSpan};
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(s, 0).unwrap()
    }

    fn epoch(user: &str, a: i64, b: i64, types: &[i32]) -> (String, Span) {
        (
            user.to_owned(),
            Span::Epoch(InstantSpan {
                data_source_id: 1,
                data_type_ids: types.to_vec(),
                start: at(a),
                end: at(b),
            }),
        )
    }

    #[test]
    fn a_span_of_all_types_keeps_its_merge_all_types() {
        for spans in [
            vec![epoch("u", 10, 20, &[2, 1]), epoch("u", 15, 30, &[])],
            vec![epoch("u", 10, 20, &[]), epoch("u", 15, 30, &[3])],
        ] {
            let merged = coalesce(spans);
            assert_eq!(merged.len(), 1);
            assert!(merged[0].data_type_ids.is_empty(), "{merged:?}");
        }
    }

    #[test]
    fn equal_instants_join_and_gaps_do_not() {
        let merged = coalesce(vec![
            epoch("u", 10, 20, &[2]),
            epoch("u", 20, 30, &[1]),
            epoch("u", 31, 40, &[1]),
            epoch("v", 0, 100, &[1]),
        ]);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].extent, Extent::Epoch(at(10), at(30)));
        assert_eq!(merged[0].data_type_ids, vec![1, 2]);
        assert_eq!(merged[0].notification_count, 2);
        assert_eq!(merged[1].extent, Extent::Epoch(at(31), at(40)));
        assert_eq!(merged[2].end_user_id, "v");
    }

    #[test]
    fn all_types_absorbs_typed_spans_and_a_fetch_marks_the_merge() {
        let (u, typed) = epoch("u", 10, 20, &[2]);
        let (_, all) = epoch("u", 15, 30, &[]);
        let (_, pushed) = epoch("u", 30, 40, &[3]);
        let (_, apart) = epoch("u", 50, 60, &[3]);
        let merged = coalesce_marked(vec![
            (u.clone(), typed, false),
            (u.clone(), all, true),
            (u.clone(), pushed, false),
            (u, apart, false),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].extent, Extent::Epoch(at(10), at(40)));
        assert!(
            merged[0].data_type_ids.is_empty(),
            "all types stays all types"
        );
        assert!(merged[0].needs_fetch);
        assert_eq!(merged[1].data_type_ids, vec![3]);
        assert!(!merged[1].needs_fetch);
    }

    #[test]
    fn adjacent_days_join_but_epoch_and_daily_never_do() {
        let d = |n| NaiveDate::from_ymd_opt(2024, 2, n).unwrap();
        let daily = |a, b| {
            (
                "u".to_owned(),
                Span::Daily(DaySpan {
                    data_source_id: 1,
                    data_type_ids: vec![5],
                    start: d(a),
                    end: d(b),
                }),
            )
        };
        let merged = coalesce(vec![
            daily(3, 4),
            daily(1, 2),
            daily(6, 6),
            epoch("u", 0, 1, &[5]),
        ]);
        let extents: Vec<Extent> = merged.iter().map(|m| m.extent).collect();
        assert_eq!(
            extents,
            vec![
                Extent::Epoch(at(0), at(1)),
                Extent::Daily(d(1), d(4)),
                Extent::Daily(d(6), d(6))
            ]
        );
    }
}
