# Shared by bench/run, bench/growth and bench/scale-out: databases, the bridge's processes,
# pgbench anchors. Sourced, not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ADMIN_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
CONNECTIONS="${CONNECTIONS:-32}"
PHASE="${SECONDS_PER_PHASE:-15}"
PORT="${BENCH_PORT:-18181}"
TARGET="${CARGO_TARGET_DIR:-target}"
case "$TARGET" in /*) ;; *) TARGET="$PWD/$TARGET" ;; esac
BIN="$TARGET/release/thryve-bridge"
LOADGEN="$TARGET/release/thryve-loadgen"
WORK="$TARGET/bench"
OUT_DIR=bench/results
mkdir -p "$OUT_DIR" "$WORK"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# The default deployment's poller: POLL_CONCURRENCY batches of POLL_BATCH_SIZE rows at once.
POLLERS="${POLLERS:-2}"
POLL_BATCH="${POLL_BATCH:-100}"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# The bridge and the load generator read a `.env` in their working directory, and a developer's
# (an HMAC secret, SPOOL_DIR, POLLER_ENABLED=false) would change what is measured: both run in
# $WORK, which has none, and get every setting from the variables given here.
in_work() { (cd "$WORK" && exec "$@"); }
db_url() { echo "${ADMIN_URL%/*}/$1"; }
machine() {
    echo "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r), Postgres $(psql -At -d "$ADMIN_URL" -c 'show server_version' | cut -d' ' -f1)"
}

build() {
    log "building release binaries"
    cargo build --release --locked --bins -q
}

fresh_db() { # $1 = database name
    psql -q -d "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
    DATABASE_URL="$(db_url "$1")" in_work "$BIN" migrate >/dev/null
    checkpoint
}

# Every phase starts right after a checkpoint, so none pays for another's dirty pages or
# gets a cheaper stretch without full-page writes: the phases stay comparable.
checkpoint() { psql -q -d "$ADMIN_URL" -c "CHECKPOINT" >/dev/null; }

drop_db() { psql -q -d "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true; }

declare -a BRIDGE_PIDS=()
# start_bridge DB PORT [VAR=value ...]: one bridge process, default deployment unless the
# variables say otherwise; waits until it is ready.
start_bridge() {
    local db=$1 port=$2
    shift 2
    # One subshell that execs the binary, so that $! is the bridge's own pid (its RSS is read).
    (cd "$WORK" && exec env DATABASE_URL="$(db_url "$db")" BIND_ADDR="127.0.0.1:$port" \
        WEBHOOK_BASIC_AUTH="bench:bench" RUST_LOG=warn DATABASE_MAX_CONNECTIONS=16 "$@" "$BIN" serve) &
    BRIDGE_PIDS+=($!)
    for _ in $(seq 1 100); do
        in_work "$BIN" healthcheck --url "http://127.0.0.1:$port/readyz" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bridge did not become ready" >&2
    exit 1
}

# Stops every bridge started and waits until each has exited; prints the largest peak RSS
# among them, in kB, and leaves it in STOPPED_KB. Call it without `$(...)` where more bridges
# follow: in a subshell the list of bridges is not emptied for the caller.
stop_bridges() {
    local max=0 pid rss
    for pid in "${BRIDGE_PIDS[@]}"; do
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ "${rss:-0}" -gt "$max" ] && max=$rss
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BRIDGE_PIDS[@]}"; do
        # `wait` only works in the shell that started it; in a subshell, watch /proc until the
        # process is gone or a zombie.
        wait "$pid" 2>/dev/null ||
            while [ -e "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; do
                sleep 0.05
            done
    done
    BRIDGE_PIDS=()
    STOPPED_KB=$max
    echo "$max"
}

kill_bridges() { for pid in "${BRIDGE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }

send_any() { # send_any PORT(S) SECONDS EXTRA-ARGS...: the load generator, whatever the answers
    local urls="" p
    for p in ${1//,/ }; do urls="${urls:+$urls,}http://127.0.0.1:$p/webhooks/thryve"; done
    local seconds=$2
    shift 2
    in_work "$LOADGEN" send --url "$urls" --basic-auth bench:bench --concurrency "$CONNECTIONS" --seconds "$seconds" "$@"
}

send() { # send PORT(S) EXTRA-ARGS...: the load generator against one or more local bridges
    local ports=$1 out
    shift
    out=$(send_any "$ports" "$PHASE" "$@")
    # A rate is a rate of stored deliveries only if every answer was 200.
    jq -e '(.statuses | keys) == ["200"]' <<<"$out" >/dev/null ||
        die "not every answer was 200 ($(jq -c .statuses <<<"$out")): no rate printed. A 401 means the bridge was not started with bench's credential; see the bridge's log above"
    printf '%s\n' "$out"
}

# An anchor that measured nothing (pgbench failed) would make every ratio a division by zero.
require_rate() { # NAME VALUE
    awk -v v="$2" 'BEGIN { exit !(v + 0 > 0) }' || die "$1 measured no rate (got '${2}'): is pgbench installed and the database reachable?"
}

pgbench_tps() { # pgbench_tps DB CLIENTS SCRIPT
    pgbench -n -c "$2" -j 2 -T "$PHASE" -f "$3" "$(db_url "$1")" 2>/dev/null | awk '/^tps = / {print $3; exit}'
}

# The real mix's inbox rows as the receiver writes them (decoded body as jsonb, typed
# columns), made once per run by the load generator's fill: what anchors (A) and (B) insert,
# so that a bridge figure and its anchor write the same rows (90% pushes of ~5 KB JSON).
MIX_ROWS="${MIX_ROWS:-4000}"
mix_rows() { # -> $WORK/mix-rows.copy
    local db="thryve_bench_rows_$$"
    fresh_db "$db"
    DATABASE_URL="$(db_url "$db")" in_work "$LOADGEN" drain --rows "$MIX_ROWS" --pollers 1 --batch-size 500 >/dev/null
    psql -q -d "$(db_url "$db")" -c "COPY (SELECT row_number() OVER (ORDER BY id), event_type,
        end_user_id, end_user_alias, payload::text, data_source_id, data_type_ids, start_time,
        end_time, start_day, end_day, connected, event_time FROM thryve.inbox) TO STDOUT" \
        > "$WORK/mix-rows.copy"
    drop_db "$db"
}

load_mix_rows() { # DB: public.bench_rows from mix_rows' file; prints how many
    psql -q -d "$(db_url "$1")" -c "CREATE TABLE public.bench_rows (n bigint PRIMARY KEY,
        event_type text, end_user_id text, end_user_alias text, payload text, data_source_id int,
        data_type_ids int[], start_time timestamptz, end_time timestamptz, start_day date,
        end_day date, connected boolean, event_time timestamptz)"
    psql -q -d "$(db_url "$1")" -c "COPY public.bench_rows FROM STDIN" < "$WORK/mix-rows.copy"
    psql -q -d "$(db_url "$1")" -c "ANALYZE public.bench_rows"
    psql -At -d "$(db_url "$1")" -c "SELECT count(*) FROM public.bench_rows"
}

# One mix row (or ROWS consecutive ones) inserted as the receiver does: body text cast to
# jsonb, a fresh fingerprint.
mix_insert_sql() { # ROWS COUNT
    cat <<SQL
\\set r random(1, $(( $2 - $1 + 1 )))
INSERT INTO thryve.inbox (fingerprint, event_type, end_user_id, end_user_alias, payload, status,
    data_source_id, data_type_ids, start_time, end_time, start_day, end_day, connected, event_time)
SELECT sha256(convert_to(random()::text || clock_timestamp()::text || n, 'UTF8')), event_type,
    end_user_id, end_user_alias, payload::jsonb, 'pending', data_source_id, data_type_ids,
    start_time, end_time, start_day, end_day, connected, event_time
FROM public.bench_rows WHERE n BETWEEN :r AND :r + $(( $1 - 1 ))
ORDER BY 1
ON CONFLICT (fingerprint) DO UPDATE SET delivery_count = thryve.inbox.delivery_count + 1;
SQL
}

# ROWS mix rows per INSERT ... ON CONFLICT and transaction, into a fresh DB: rows/s.
mix_anchor() { # DB ROWS -> rows/s
    local count
    count=$(load_mix_rows "$1")
    checkpoint
    mix_insert_sql "$2" "$count" > "$WORK/insert-mix-$2.sql"
    jq -n "$(pgbench_tps "$1" "$CONNECTIONS" "$WORK/insert-mix-$2.sql") * $2"
}

# (A) one mix row per statement; (B) 128 (the receiver's largest group commit).
anchor_a() { mix_anchor "$1" 1; }
anchor_b() { mix_anchor "$1" 128; }

# (A0) the first anchors, kept for comparison with earlier results: a notification row
# (~300 bytes) per INSERT ... ON CONFLICT and transaction.
anchor_a0() { # DB -> tx/s (= rows/s)
    cat > "$WORK/insert.sql" <<'SQL'
\set u random(1, 2000)
INSERT INTO thryve.inbox (fingerprint, event_type, end_user_id, payload, status,
    data_source_id, data_type_ids, start_time, end_time)
VALUES (sha256(convert_to(random()::text || clock_timestamp()::text, 'UTF8')),
    'notification.data.epoch.createupdate', 'user-' || :u,
    ('{"data":{"dataSourceId":8,"dataTypeIds":[1000,3000],"endTimestamp":1763973450000,"startTimestamp":1763973390000},"endUserId":"user-' || :u || '","timestampType":"unix","type":"notification.data.epoch.createupdate"}')::jsonb,
    'pending', 8, '{1000,3000}', '2025-11-24 08:36:30+00', '2025-11-24 08:37:30+00')
ON CONFLICT (fingerprint) DO UPDATE SET delivery_count = thryve.inbox.delivery_count + 1;
SQL
    pgbench_tps "$1" "$CONNECTIONS" "$WORK/insert.sql"
}

# (B0) the same notification rows, 128 per statement: rows/s.
anchor_b0() { # DB -> rows/s
    cat > "$WORK/insert128.sql" <<'SQL'
\set u random(1, 2000)
INSERT INTO thryve.inbox (fingerprint, event_type, end_user_id, payload, status,
    data_source_id, data_type_ids, start_time, end_time)
SELECT sha256(convert_to(random()::text || clock_timestamp()::text || g, 'UTF8')),
    'notification.data.epoch.createupdate', 'user-' || (:u + g),
    ('{"data":{"dataSourceId":8,"dataTypeIds":[1000,3000],"endTimestamp":1763973450000,"startTimestamp":1763973390000},"endUserId":"user-' || (:u + g) || '","timestampType":"unix","type":"notification.data.epoch.createupdate"}')::jsonb,
    'pending', 8, '{1000,3000}', '2025-11-24 08:36:30+00', '2025-11-24 08:37:30+00'
FROM generate_series(1, 128) g
ON CONFLICT (fingerprint) DO UPDATE SET delivery_count = thryve.inbox.delivery_count + 1;
SQL
    jq -n "$(pgbench_tps "$1" "$CONNECTIONS" "$WORK/insert128.sql") * 128"
}

# (C) batched upserts into thryve.epoch_values, 1,000 values per statement (a poller batch's
# worth), consecutive minutes of one user and source as pushes carry them: values/s.
VALUE_BATCH="${VALUE_BATCH:-1000}"
VALUE_CLIENTS="${VALUE_CLIENTS:-4}"
anchor_c() { # DB -> values/s
    # The conflict target is the table's key as migrated (its primary key, or since
    # 20261203000001 the unique constraint that holds nullable columns), whatever its columns.
    local key
    key=$(psql -At -d "$(db_url "$1")" -c "
        SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
        FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord), pg_attribute a
        WHERE c.conrelid = 'thryve.epoch_values'::regclass AND c.contype IN ('p', 'u')
          AND a.attrelid = c.conrelid AND a.attnum = k.attnum")
    cat > "$WORK/values.sql" <<SQL
\\set u random(1, 2000)
\\set s random(1, 14)
\\set m random(0, 43200)
INSERT INTO thryve.epoch_values AS t (end_user_id, data_source_id, data_type_id, start_time,
    end_time, timezone_offset, value, value_numeric, inbox_id)
SELECT 'user-' || :u, :s, 1000 + g % 2, at, at + interval '1 minute', 60, v::text, v, 1
FROM generate_series(1, $VALUE_BATCH) g,
     LATERAL (SELECT timestamptz '2025-10-25 00:00+00' + (:m + g) * interval '1 minute' AS at,
                     (random() * 130)::int AS v) x
ORDER BY 1, 2, 3, 4
ON CONFLICT ($key) DO UPDATE SET
    end_time = EXCLUDED.end_time, value = EXCLUDED.value, value_numeric = EXCLUDED.value_numeric,
    inbox_id = EXCLUDED.inbox_id, updated_at = now()
WHERE (t.end_time, t.value) IS DISTINCT FROM (EXCLUDED.end_time, EXCLUDED.value);
SQL
    jq -n "$(pgbench_tps "$1" "$VALUE_CLIENTS" "$WORK/values.sql") * $VALUE_BATCH"
}
