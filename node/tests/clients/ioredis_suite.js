// ioredis, with its defaults, against a hotblock primary and its hot
// secondary: every everyday command hotblock has, a pipeline, a WATCH
// transaction, SCAN under concurrent writes, and key expiry on both.
//
// Run by node/tests/clients.rs: node ioredis_suite.js PRIMARY_PORT SECONDARY_PORT.
// Exits non-zero on the first failed check, naming it.
"use strict";
const assert = require("node:assert/strict");
const Redis = require("ioredis");

const [PRIMARY, SECONDARY] = process.argv.slice(2).map(Number);
const client = (port) => new Redis({ host: "127.0.0.1", port });
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function rejects(promise, text) {
  try {
    await promise;
  } catch (e) {
    assert.match(String(e.message), text);
    return;
  }
  assert.fail(`expected an error matching ${text}`);
}

async function waitReplicated(r, replica) {
  const lsn = (i) => Number(/\r?\nlsn:(\d+)/.exec(i)[1]);
  const target = lsn(await r.info("replication"));
  const deadline = Date.now() + 10000;
  while (lsn(await replica.info("replication")) < target) {
    assert.ok(Date.now() < deadline, "the secondary did not catch up");
    await sleep(10);
  }
}

async function strings(r) {
  assert.equal(await r.ping(), "PONG");
  assert.equal(await r.echo("hi"), "hi");
  assert.equal(await r.set("s", "v"), "OK");
  assert.equal(await r.get("s"), "v");
  assert.equal(await r.exists("s", "nope"), 1);
  assert.equal(await r.mset({ a: "1", b: "2" }), "OK");
  assert.deepEqual(await r.mget("a", "b", "nope"), ["1", "2", null]);
  assert.equal(await r.msetnx("a", "x", "c", "3"), 0);
  assert.equal(await r.msetnx("c", "3", "d", "4"), 1);
  assert.equal(await r.setnx("a", "x"), 0);
  assert.equal(await r.setnx("e", "5"), 1);
  assert.equal(await r.getset("a", "one"), "1");
  assert.equal(await r.getdel("e"), "5");
  assert.equal(await r.get("e"), null);
  await r.set("str", "Hello World");
  assert.equal(await r.getrange("str", 0, 4), "Hello");
  assert.equal(await r.substr("str", -5, -1), "World");
  assert.equal(await r.setrange("str", 6, "Redis"), 11);
  assert.equal(await r.append("str", "!"), 12);
  assert.equal(await r.strlen("str"), 12);
  assert.equal(await r.incr("n"), 1);
  assert.equal(await r.incrby("n", 10), 11);
  assert.equal(await r.decr("n"), 10);
  assert.equal(await r.decrby("n", 4), 6);
  assert.equal(await r.incrbyfloat("f", "1.5"), "1.5");
  await r.set("notnum", "x");
  await rejects(r.incr("notnum"), /not an integer/);
  assert.equal(await r.unlink("c", "d", "nope"), 2);
  assert.equal(await r.del("a"), 1);
  assert.equal(await r.type("s"), "string");
  assert.equal(await r.type("nope"), "none");
  assert.equal(await r.set("only", "1", "NX"), "OK");
  assert.equal(await r.set("only", "2", "NX"), null);
  assert.equal(await r.set("only", "4", "GET"), "1");
}

async function keyspace(r) {
  assert.equal(await r.flushdb(), "OK");
  assert.equal(await r.dbsize(), 0);
  await r.mset("k1", "1", "k2", "2", "other", "3");
  assert.deepEqual((await r.keys("k*")).sort(), ["k1", "k2"]);
  assert.ok(["k1", "k2", "other"].includes(await r.randomkey()));
  assert.equal(await r.rename("k1", "renamed"), "OK");
  assert.equal(await r.renamenx("renamed", "k2"), 0);
  assert.equal(await r.renamenx("renamed", "k3"), 1);
  assert.equal(await r.copy("k3", "copied"), 1);
  assert.equal(await r.copy("k3", "copied"), 0);
  assert.equal(await r.copy("k3", "copied", "REPLACE"), 1);
  await rejects(r.rename("nope", "x"), /no such key/);
  const seen = await new Promise((done, fail) => {
    const keys = [];
    r.scanStream({ match: "k*", count: 2 })
      .on("data", (batch) => keys.push(...batch))
      .on("end", () => done(keys))
      .on("error", fail);
  });
  assert.deepEqual(seen.sort(), ["k2", "k3"]);
  assert.equal(await r.flushall(), "OK");
  assert.equal(await r.dbsize(), 0);
}

async function expiry(r, replica) {
  assert.equal(await r.set("t", "v", "EX", 100), "OK");
  assert.ok((await r.ttl("t")) >= 99);
  assert.ok((await r.pttl("t")) > 99000);
  const at = Math.floor(Date.now() / 1000) + 1000;
  assert.equal(await r.set("t3", "v", "EXAT", at), "OK");
  assert.equal(await r.expiretime("t3"), at);
  assert.equal(await r.set("t3", "w", "KEEPTTL"), "OK");
  assert.equal(await r.expiretime("t3"), at);
  assert.equal(await r.setex("t4", 100, "v"), "OK");
  assert.equal(await r.psetex("t5", 100000, "v"), "OK");
  assert.equal(await r.getex("t4", "PERSIST"), "v");
  assert.equal(await r.ttl("t4"), -1);
  await r.set("p", "v");
  assert.equal(await r.expire("p", 100, "XX"), 0);
  assert.equal(await r.expire("p", 100, "NX"), 1);
  assert.equal(await r.expire("p", 50, "GT"), 0);
  assert.equal(await r.expire("p", 150, "LT"), 0);
  assert.equal(await r.pexpire("p", 120000), 1);
  assert.equal(await r.expireat("p", at), 1);
  assert.equal(await r.pexpireat("p", at * 1000 + 500), 1);
  assert.equal(await r.pexpiretime("p"), at * 1000 + 500);
  assert.equal(await r.persist("p"), 1);
  assert.equal(await r.ttl("p"), -1);
  assert.equal(await r.ttl("nope"), -2);
  assert.match(await r.info("keyspace"), /\r\ndb0:keys=\d+,expires=3,avg_ttl=\d+/);

  assert.equal(await r.set("short", "v", "EX", 1), "OK");
  await waitReplicated(r, replica);
  assert.equal(await replica.get("short"), "v");
  await sleep(1500);
  assert.equal(await r.get("short"), null);
  assert.equal(await replica.get("short"), null);
  assert.equal(await replica.exists("short"), 0);
  await r.flushdb();
}

async function pipelineAndTransactions(r) {
  const pipe = r.pipeline();
  for (let i = 0; i < 100; i++) pipe.set(`pipe${i}`, i);
  pipe.get("pipe7").incr("pipe7");
  const results = await pipe.exec();
  assert.ok(results.every(([err]) => err === null));
  assert.deepEqual(results.slice(100).map(([, v]) => v), ["7", 8]);

  assert.deepEqual(await r.multi().set("tx", "1").incr("tx").get("tx").exec(), [
    [null, "OK"],
    [null, 2],
    [null, "2"],
  ]);

  // WATCH needs its own connection: ioredis shares one per client.
  const tx = client(PRIMARY);
  const other = client(PRIMARY);
  await r.set("balance", 100);
  assert.equal(await tx.watch("balance"), "OK");
  const seen = Number(await tx.get("balance"));
  await other.set("balance", 0);
  assert.equal(await tx.multi().set("balance", seen - 30).exec(), null);
  assert.equal(await r.get("balance"), "0");
  await tx.watch("balance");
  await other.set("unrelated", 1);
  assert.deepEqual(await tx.multi().incr("balance").exec(), [[null, 1]]);
  await tx.watch("balance");
  assert.equal(await tx.unwatch(), "OK");
  await other.set("balance", 5);
  assert.deepEqual(await tx.multi().incr("balance").exec(), [[null, 6]]);
  tx.disconnect();
  other.disconnect();
  await rejects(r.multi().set("x", 1).lpush("list", 1).exec(), /EXECABORT|not supported/);
  assert.equal(await r.get("x"), null);
}

async function scanUnderWrites(r) {
  await r.flushdb();
  const stable = Array.from({ length: 10000 }, (_, i) => `stable:${i}`);
  for (let i = 0; i < stable.length; i += 500) {
    await r.mset(...stable.slice(i, i + 500).flatMap((k) => [k, "v"]));
  }
  const writer = client(PRIMARY);
  let stop = false;
  let writes = 0;
  const churn = (async () => {
    for (let i = 0; !stop; i++) {
      await writer.set(`churn:${i}`, "x");
      if (i >= 50) await writer.del(`churn:${i - 50}`);
      writes++;
    }
  })();
  const seen = new Set();
  let cursor = "0";
  do {
    const [next, keys] = await r.scan(cursor, "COUNT", 100);
    keys.forEach((k) => seen.add(k));
    cursor = next;
  } while (cursor !== "0");
  stop = true;
  await churn;
  writer.disconnect();
  const missing = stable.filter((k) => !seen.has(k));
  assert.deepEqual(missing.slice(0, 3), [], `SCAN skipped ${missing.length} keys`);
  assert.ok(writes > 0);
  await r.flushdb();
}

async function records(r) {
  const dbs = await r.call("DB.LIST");
  if (!dbs.includes("things")) assert.equal(await r.call("DB.CREATE", "things", "color"), "OK");
  assert.equal(await r.call("REC.PUT", "things", "a", "x", "color", "red"), "OK");
  assert.equal(await r.call("REC.PUT", "things", "b", "y", "color", "red", "EX", "100"), "OK");
  assert.deepEqual((await r.call("REC.FIND", "things", "color", "red")).sort(), ["a", "b"]);
  assert.ok((await r.call("REC.TTL", "things", "b")) >= 99);
  const got = await r.call("REC.MGET", "things", "a", "none");
  assert.equal(got.length, 2);
  assert.equal(got[1], null);
  // One transaction across the selected database and a record database.
  assert.deepEqual(
    await r.multi().set("across", "1").call("REC.PUT", "things", "c", "z", "color", "blue").exec(),
    [
      [null, "OK"],
      [null, "OK"],
    ],
  );
  assert.equal(await r.call("REC.DEL", "things", "c"), 1);
  assert.equal(await r.del("across"), 1);
  const [cursor, keys] = await r.call("REC.SCAN", "things", "0", "COUNT", "100");
  assert.equal(cursor, "0");
  assert.deepEqual(keys.sort(), ["a", "b"]);
  assert.equal(await r.call("REC.EXPIRE", "things", "a", "100"), 1);
}

async function server(r) {
  const info = await r.info();
  for (const field of ["redis_version", "used_memory_human", "used_memory_rss",
    "maxmemory_policy", "instantaneous_ops_per_sec", "total_net_input_bytes",
    "keyspace_hits", "expired_keys", "evicted_keys"]) {
    assert.match(info, new RegExp(`\\r\\n${field}:`), field);
  }
  assert.equal((await r.time()).length, 2);
  assert.ok((await r.lastsave()) > 0);
  assert.deepEqual(await r.config("GET", "maxmemory"), ["maxmemory", "0"]);
  assert.equal(await r.config("SET", "maxmemory", "0"), "OK");
  assert.equal(await r.config("RESETSTAT"), "OK");
  assert.equal(await r.client("SETNAME", "suite"), "OK");
  assert.match(await r.client("INFO"), /name=suite/);
  assert.match(await r.client("LIST"), /name=suite/);
  assert.equal(await r.client("NO-EVICT", "on"), "OK");
  const victim = client(PRIMARY);
  const id = await victim.client("ID");
  assert.equal(await r.client("KILL", "ID", id), 1);
  victim.disconnect();
  assert.ok((await r.command("COUNT")) > 50);
  assert.ok((await r.command("LIST")).includes("get"));
  assert.equal((await r.command("INFO", "get"))[0][0], "get");
  await r.set("m", "v".repeat(100));
  assert.ok((await r.memory("USAGE", "m")) >= 100);
  assert.ok(["raw", "embstr"].includes(await r.object("ENCODING", "m")));
  assert.deepEqual(await r.latency("LATEST"), []);
  await rejects(r.lpush("list", 1), /not supported/);
  await r.flushdb();
}

(async () => {
  const r = client(PRIMARY);
  const replica = client(SECONDARY);
  const checks = [
    ["strings", () => strings(r)],
    ["keyspace", () => keyspace(r)],
    ["expiry", () => expiry(r, replica)],
    ["pipeline_and_transactions", () => pipelineAndTransactions(r)],
    ["scan_under_writes", () => scanUnderWrites(r)],
    ["records", () => records(r)],
    ["server", () => server(r)],
  ];
  for (const [name, check] of checks) {
    const started = Date.now();
    await check();
    console.log(`ioredis ${name}: ok (${((Date.now() - started) / 1000).toFixed(2)} s)`);
  }
  r.disconnect();
  replica.disconnect();
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
