def f: . * 100 | round / 100;
def n: floor;
def ok(c): if c then "met" else "MISSED" end;
"machine                 \(.machine)",
"run                     \(.at), commit \(.commit), \(.seconds_per_phase) s per phase, \(.connections) connections",
"(A) pgbench 1-row       \(.anchors.a_insert_rows_per_s | n) rows/s (inbox INSERT ... ON CONFLICT + COMMIT, rows of the mix)",
"(B) pgbench 128-row     \(.anchors.b_insert128_rows_per_s | n) rows/s (128-row statements, rows of the mix)",
"(A0), (B0)              \(.anchors.a0_notification_insert_rows_per_s // 0 | n), \(.anchors.b0_notification_insert128_rows_per_s // 0 | n) rows/s (the same with one ~300-byte notification row, the first anchors)",
"(C) pgbench upserts     \(.anchors.c_value_upserts_per_s | n) values/s (\(.anchors.c_batch)-value epoch_values upserts, \(.anchors.c_clients) clients)",
"sustained rate          \(.sustained.rate_per_s // 0 | n) deliveries/s held \(.sustained.step_seconds) s = \(.ratios.sustained_over_l // 0 | f)x L [>= 0.8: \(ok((.ratios.sustained_over_l // 0) >= 0.8))], \(.ratios.sustained_over_ingest // 0 | f)x peak ingest",
"    L                   \(.sustained.l_per_s // 0 | n) deliveries/s = 1 / (1/(B) + v/(C)), v = \(.sustained.values_per_delivery // 0 | f) values per delivery sent",
"    steps               \([.sustained.steps[]? | "\(.rate_per_s | n)/s \(if .held then "held" else "not held" end) (lag p99 \(.lag_p99_ms // "-") ms, backlog \(.backlog_first_quarter // 0 | n)->\(.backlog_last_quarter // 0 | n), load \(.load))"] | join("; "))",
"receiver alone          \(.receiver_alone_notifications.rate_per_s // 0 | n) notifications/s, poller off = \(.ratios.receiver_notifications_over_a0 // 0 | f)x (A0) [>= 2.0: \(ok((.ratios.receiver_notifications_over_a0 // 0) >= 2))]; ack p99 \(.receiver_alone_notifications.p99_ms // "-") ms",
"ingest (poller on)      \(.ingest.rate_per_s | n) deliveries/s = \(.ratios.ingest_over_a | f)x (A), \(.ratios.ingest_over_b | f)x (B); \(.ratios.ingest_over_a0 // 0 | f)x (A0), \(.ratios.ingest_over_b0 // 0 | f)x (B0)",
"                        ack p50 \(.ingest.p50_ms) ms, p99 \(.ingest.p99_ms) ms, max \(.ingest.max_ms) ms; \(.ingest.values_per_s | n) values/s offered; statuses \(.ingest.statuses | tostring)",
"drain (\(.drain.pollers) x \(.drain.batch_size) rows)  \(.drain.rows_per_s | n) inbox rows/s = \(.ratios.drain_over_ingest | f)x peak ingest [>= 1.5: \(ok(.ratios.drain_over_ingest >= 1.5))] (\(.drain.rows) rows)",
"                        = \(.ratios.drain_over_ingest_rows // 0 | f)x the inbox rows the peak made (\(.ingest.rows_per_s // 0 | n)/s: twins and retries make none)",
"values written          \(.drain.values_per_s | n) values/s = \(.ratios.values_over_c | f)x (C) [>= 0.8: \(ok(.ratios.values_over_c >= 0.8))] (\(.drain.values) values)",
"half peak, poller on    \(.half_peak.rate_per_s | n)/s; ack p99 \(.half_peak.p99_ms) ms [< 25: \(ok(.half_peak.p99_ms < 25))]; lag p50 \(.half_peak.lag_p50_ms) ms, p99 \(.half_peak.lag_p99_ms) ms [< 250: \(ok((.half_peak.lag_p99_ms // 1e9) < 250))]",
"    verification        \(.half_peak.verification | tostring)",
"bridge peak RSS         \(.bridge_peak_rss_mb | n) MB [< 100: \(ok(.bridge_peak_rss_mb < 100))]",
"load generator          at peak \(.ingest.loadgen_cpu_cores | f) cores, \(.ingest.loadgen_peak_rss_mb | n) MB peak RSS; at half peak \(.half_peak.loadgen_cpu_cores | f) cores [< 0.25: \(ok(.ingest.loadgen_cpu_cores < 0.25))]"
