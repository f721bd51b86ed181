// A downstream worker for thryve-bridge, in Node with `pg`.
//
// It LISTENs on `thryve_dirty_ranges`, claims ranges with `thryve.claim_dirty_ranges`, does the
// work for each (here: prints the Thryve data request it would make), and marks each done with
// `thryve.complete_dirty_range` or retries it later with `thryve.fail_dirty_range`. It also
// claims every POLL_SECONDS without a notification: retried ranges and expired leases send none.
//
//   DATABASE_URL=postgres://... node worker.js [--exit-when-idle SECONDS]
//
// Environment: DATABASE_URL (required), WORKER_NAME (default: host:pid), BATCH (10),
// LEASE_SECONDS (300), RETRY_SECONDS (60), POLL_SECONDS (30), FAIL_END_USERS (comma-separated
// end users whose ranges this demo fails, to show the retry path).
'use strict';

const os = require('node:os');
const { Client } = require('pg');

const CHANNEL = 'thryve_dirty_ranges';
const env = process.env;
const WORKER = env.WORKER_NAME || `${os.hostname()}:${process.pid}`;
const BATCH = Number(env.BATCH || 10);
const LEASE_SECONDS = Number(env.LEASE_SECONDS || 300);
const RETRY_SECONDS = Number(env.RETRY_SECONDS || 60);
const POLL_SECONDS = Number(env.POLL_SECONDS || 30);
const FAIL_END_USERS = new Set((env.FAIL_END_USERS || '').split(',').filter(Boolean));

/** Your work: re-fetch the range's data from Thryve and store it. Throw to fail it. */
async function fetchFromThryve(r) {
  if (FAIL_END_USERS.has(r.end_user_id)) {
    throw new Error(`demo failure for ${r.end_user_id}`);
  }
  const span = r.granularity === 'epoch'
    ? `startTimestamp=${r.start_time.toISOString()} endTimestamp=${r.end_time.toISOString()}`
    // `date` columns come back as text (see the type parser below): no time zone shifts.
    : `startDay=${r.start_day} endDay=${r.end_day}`;
  console.log(`fetch ${r.granularity} endUserId=${r.end_user_id} dataSourceId=${r.data_source_id} `
    + `dataTypeIds=${JSON.stringify(r.data_type_ids)} ${span}`);
}

/** Claims one batch and settles every range in it; resolves to how many it claimed. */
async function workOnce(client) {
  const { rows } = await client.query(
    'SELECT * FROM thryve.claim_dirty_ranges($1, $2, make_interval(secs => $3))',
    [WORKER, BATCH, LEASE_SECONDS],
  );
  for (const r of rows) {
    try {
      await fetchFromThryve(r);
    } catch (error) {
      const held = await client.query(
        'SELECT thryve.fail_dirty_range($1, $2, $3, make_interval(secs => $4), $5) AS held',
        [r.id, WORKER, String(error.message || error), RETRY_SECONDS, r.claim_token],
      );
      console.log(`failed range ${r.id}: ${error.message} (still held: ${held.rows[0].held})`);
      continue;
    }
    // The claim token: only this claim may settle the range, even if this worker's lease
    // expired and the same worker name claimed it again meanwhile.
    const held = await client.query('SELECT thryve.complete_dirty_range($1, $2, $3) AS held', [
      r.id,
      WORKER,
      r.claim_token,
    ]);
    // false: the lease expired and another claim holds the range; it does the work.
    console.log(`completed range ${r.id} (still held: ${held.rows[0].held})`);
  }
  return rows.length;
}

async function main() {
  const idleArg = process.argv.indexOf('--exit-when-idle');
  const exitWhenIdle = idleArg >= 0 ? Number(process.argv[idleArg + 1]) : null;
  // `date` as its text (2025-11-24), not a JS Date at local midnight.
  require('pg').types.setTypeParser(1082, (text) => text);
  const client = new Client({ connectionString: env.DATABASE_URL });
  await client.connect();
  // A notification that arrives while claiming must not be lost: remember it.
  let notified = false;
  let wake = null;
  client.on('notification', () => {
    notified = true;
    if (wake) wake();
  });
  await client.query(`LISTEN ${CHANNEL}`);
  console.log(`worker ${WORKER} listening on ${CHANNEL}`);
  let idleSince = Date.now();
  for (;;) {
    notified = false;
    while (await workOnce(client) > 0) {
      idleSince = Date.now();
    }
    if (notified) continue;
    let timeout = POLL_SECONDS * 1000;
    if (exitWhenIdle !== null) {
      const left = exitWhenIdle * 1000 - (Date.now() - idleSince);
      if (left <= 0) break;
      timeout = Math.min(timeout, left);
    }
    // Sleep until a NOTIFY (or the timeout); what it says does not matter.
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, timeout);
      wake = () => { clearTimeout(timer); resolve(); };
    });
    wake = null;
  }
  await client.end();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
