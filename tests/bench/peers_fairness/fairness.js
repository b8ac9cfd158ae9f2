// BullMQ on imagejobs' fairness scenario (issue 18, scenario 1b): one tenant's backlog of BACKLOG images due at one
// instant LEAD s from now, then, from AFTER s past the due time, one more image job every EVERY s (LATE of them) on the
// same queue: BullMQ's own answer to fairness, groups, is BullMQ Pro's (a paid product), so a plain queue is what a
// team gets. Each late job's wait runs from just before it is enqueued to its row in peer_results (done_at), as
// imagejobs' late jobs are timed from their submit. Workers: the peer's unchanged worker.js (queue "images").
// Not one of the copied peers: tests/bench/peers_setup.sh copies it next to them for their node_modules.
// Run: PEER_DSN=postgresql://... node fairness.js BASE_URL BACKLOG LATE LEAD AFTER EVERY
const { Queue } = require("bullmq");
const { Client } = require("pg");
const base = process.argv[2];
const [n, late, lead, after, every] = process.argv.slice(3, 8).map(Number);
const sleepUntil = (t) => new Promise((r) => setTimeout(r, Math.max(0, t - Date.now())));
const pct = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

async function enqueueBacklog(q, due) {
  for (let i = 0; i < n; i += 500) {
    const chunk = [];
    for (let j = i; j < Math.min(n, i + 500); j++) {  // the delay taken when added, so all fall due at `due`
      chunk.push({ name: "img", data: { task_id: `b${j}`, url: `${base}/img/${j}.jpg`, due_ms: due },
                   opts: { delay: Math.max(0, due - Date.now()), jobId: `b${j}`, removeOnComplete: true } });
    }
    await q.addBulk(chunk);
  }
}

async function enqueueLate(q, due) {
  const enqueued = {};
  for (let k = 0; k < late; k++) {
    await sleepUntil(due + (after + k * every) * 1000);
    enqueued[`l${k}`] = Date.now();
    await q.add("img", { task_id: `l${k}`, url: `${base}/img/${n + k}.jpg`, due_ms: enqueued[`l${k}`] },
                { jobId: `l${k}`, removeOnComplete: true });
  }
  return enqueued;
}

async function waitAll(db, due) {
  for (;;) {
    const { rows } = await db.query("select count(*)::int as k from peer_results");
    if (rows[0].k >= n + late) return;
    if (Date.now() > due + 600000) { console.log("timeout", rows[0].k); process.exit(1); }
    await new Promise((r) => setTimeout(r, 50));
  }
}

(async () => {
  const db = new Client({ connectionString: process.env.PEER_DSN });
  await db.connect();
  await db.query("create table if not exists peer_results(task_id text primary key, width int, height int, perimeter int, lateness_ms float, done_at timestamptz)");
  await db.query("truncate peer_results");
  const q = new Queue("images", { connection: { host: "127.0.0.1", port: 6379, db: 6 } });
  await q.obliterate({ force: true });
  const due = Date.now() + lead * 1000;
  const t0 = Date.now();
  await enqueueBacklog(q, due);
  const enq = (Date.now() - t0) / 1000;
  if (Date.now() > due) { console.log(`enqueueing took ${enq}s, past the due time: raise LEAD`); process.exit(1); }
  const enqueued = await enqueueLate(q, due);
  await waitAll(db, due);
  const { rows } = await db.query("select task_id, extract(epoch from done_at)*1000 as done from peer_results");
  const waits = rows.filter((r) => r.task_id in enqueued).map((r) => Number(r.done) - enqueued[r.task_id]).sort((a, b) => a - b);
  const last = Math.max(...rows.filter((r) => r.task_id.startsWith("b")).map((r) => Number(r.done)));
  const span = (last - due) / 1000;
  const ms = (v) => Math.round(v * 10) / 10;
  console.log("bullmq fairness: " + JSON.stringify({
    backlog: n, enqueue_s: enq, backlog_seconds: ms(span), backlog_images_per_s: ms(n / span),
    late: { n: waits.length, p50_ms: ms(pct(waits, 0.5)), p99_ms: ms(pct(waits, 0.99)), max_ms: ms(waits[waits.length - 1]) },
    late_ms: waits.map(ms) }));
  await q.close(); await db.end();
})();
