#!/usr/bin/env node
// graphile-worker side-by-side benchmark for Herald.
//
// Phase 1 (drain): bulk-enqueue JOBS no-op jobs *before* the worker starts, then
//   start a worker (CONCURRENCY) and time from start until the job table is empty.
// Phase 2 (latency): with the worker running, addJob() LAT_JOBS jobs one at a
//   time at LAT_RATE/s; each payload carries its enqueue time and the task
//   records (start - enqueue). Reports p50/p99 in ms.
//
// The worker runs *unbatched*: localQueue.size = -1, completeJobBatchDelay = -1,
// failJobBatchDelay = -1 (these are also the 0.17 defaults; set explicitly here),
// so every worker slot does its own get-job query (batch size 1) and every job
// is completed with its own complete-jobs query. The script aborts if a
// local queue is ever initialised.
//
// Options: --key=value args or env vars (args win):
//   DATABASE_URL  postgres://postgres@127.0.0.1:5432/herald_bench_graphile
//   JOBS 100000   CONCURRENCY 10   LAT_JOBS 2000   LAT_RATE 500
//   KEEP_DB=1     keep the benchmark database (default: drop it at the end)
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { Logger, run, runMigrations, makeWorkerUtils } from "graphile-worker";

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const [k, ...v] = a.replace(/^--/, "").split("=");
    return [k.toUpperCase().replace(/-/g, "_"), v.join("=")];
  }),
);
const opt = (k, d) => args[k] ?? process.env[k] ?? d;
const DATABASE_URL = opt("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/herald_bench_graphile");
const JOBS = parseInt(opt("JOBS", "100000"), 10);
const CONCURRENCY = parseInt(opt("CONCURRENCY", "10"), 10);
const LAT_JOBS = parseInt(opt("LAT_JOBS", "2000"), 10);
const LAT_RATE = parseFloat(opt("LAT_RATE", "500"));
const KEEP_DB = opt("KEEP_DB", "") === "1";
const VERSION = createRequire(import.meta.url)("graphile-worker/package.json").version;

// --- database setup -------------------------------------------------------
const dbName = decodeURIComponent(new URL(DATABASE_URL).pathname.slice(1));
const adminUrl = Object.assign(new URL(DATABASE_URL), { pathname: "/postgres" }).toString();
async function admin(fn) {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try { return await fn(c); } finally { await c.end(); }
}
const ident = (s) => '"' + s.replace(/"/g, '""') + '"';
await admin(async (c) => {
  const { rowCount } = await c.query("select 1 from pg_database where datname = $1", [dbName]);
  if (!rowCount) await c.query(`create database ${ident(dbName)}`);
});

const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile-worker ${level}] ${message}`);
});
// One pool, owned by us, for everything (graphile-worker does not await the
// end() of pools it creates itself, which races with the final DROP DATABASE).
// One connection per worker slot + LISTEN client + addJob + our own queries.
const db = new pg.Pool({ connectionString: DATABASE_URL, max: CONCURRENCY + 3 });
db.on("error", (e) => console.error(`idle pg client error: ${e.message}`));
db.on("connect", (c) => c.on("error", (e) => console.error(`pg client error: ${e.message}`)));
await runMigrations({ pgPool: db, logger: quiet });
const countJobs = async () =>
  (await db.query("select count(*)::int as n from graphile_worker._private_jobs")).rows[0].n;
if ((await countJobs()) !== 0) {
  console.error(`graphile_worker._private_jobs in ${dbName} is not empty (left over from an aborted run?); drop the database and retry.`);
  process.exit(1);
}

// --- phase 1: bulk enqueue (one statement, server-side generate_series) ---
const tEnq = performance.now();
const { rows: [{ n: enqueued }] } = await db.query(
  `select count(*)::int as n from graphile_worker.add_jobs(array(
     select row('noop', '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec
     from generate_series(1, $1::int)))`,
  [JOBS],
);
const enqueueSeconds = (performance.now() - tEnq) / 1000;
if (enqueued !== JOBS) throw new Error(`enqueued ${enqueued} != ${JOBS}`);
await db.query("analyze graphile_worker._private_jobs");

// --- worker -----------------------------------------------------------------
let done = 0;
let allDone;
const drained = new Promise((r) => (allDone = r));
const latencies = [];
let latDone;
const latFinished = new Promise((r) => (latDone = r));

const events = new EventEmitter();
events.on("localQueue:init", () => {
  console.error("local queue was enabled; benchmark would be batched. Aborting.");
  process.exit(2);
});

const taskList = {
  noop: async () => {
    if (++done === JOBS) allDone();
  },
  lat: async (payload) => {
    latencies.push(performance.timeOrigin + performance.now() - payload.t);
    if (latencies.length === LAT_JOBS) latDone();
  },
};

const t0 = performance.now();
const runner = await run({
  pgPool: db,
  taskList,
  noHandleSignals: true,
  events,
  preset: {
    worker: {
      concurrentJobs: CONCURRENCY,
      logger: quiet,
      localQueue: { size: -1 },     // unbatched: no pool-level job prefetch
      completeJobBatchDelay: -1,    // unbatched: complete each job individually
      failJobBatchDelay: -1,        // unbatched: fail each job individually
    },
  },
});
await drained; // all task bodies ran; completions may still be in flight
while ((await countJobs()) !== 0) await sleep(2);
const seconds = (performance.now() - t0) / 1000;

// --- phase 2: enqueue-to-start latency ---------------------------------------
const utils = await makeWorkerUtils({ pgPool: db, logger: quiet });
const tLat = performance.now();
for (let i = 0; i < LAT_JOBS; i++) {
  const due = tLat + (i * 1000) / LAT_RATE;
  const wait = due - performance.now();
  if (wait > 0) await sleep(wait);
  await utils.addJob("lat", { t: performance.timeOrigin + performance.now() });
}
await latFinished;
latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)];
const r3 = (x) => Math.round(x * 1000) / 1000;

await utils.release();
await runner.stop();
await db.end();
if (!KEEP_DB) await admin((c) => c.query(`drop database ${ident(dbName)} with (force)`));

console.log(JSON.stringify({
  system: "graphile-worker",
  version: VERSION,
  jobs: JOBS,
  concurrency: CONCURRENCY,
  seconds: r3(seconds),
  jobs_per_sec: Math.round(JOBS / seconds),
  enqueue_seconds: r3(enqueueSeconds),
  latency_jobs: LAT_JOBS,
  latency_rate_per_sec: LAT_RATE,
  latency_p50_ms: r3(pct(50)),
  latency_p99_ms: r3(pct(99)),
  latency_max_ms: r3(latencies[latencies.length - 1]),
}));
