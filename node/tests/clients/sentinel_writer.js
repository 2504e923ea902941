// An ioredis client that finds the primary through the nodes as Sentinels
// (ioredis's `sentinels` option, its defaults otherwise) and writes fresh
// keys across failovers.
//
// argv: the nodes' client ports, then the seconds to run. Prints "ready"
// once a first write got OK, then one JSON line: the keys that got OK, the
// longest gap between two OKs in seconds, and the wall-clock time of the
// last OK.
const Redis = require("ioredis");

const args = process.argv.slice(2);
const seconds = Number(args.pop());
const sentinels = args.map((port) => ({ host: "127.0.0.1", port: Number(port) }));
const redis = new Redis({ sentinels, name: "hotblock", sentinelRetryStrategy: () => 20 });
redis.on("error", () => {});

async function main() {
  const acked = [];
  let lastOk = null;
  let gap = 0;
  let lastWall = 0;
  const end = Date.now() + seconds * 1000;
  for (let i = 1; Date.now() < end; i++) {
    const key = `js-${i}`;
    try {
      await redis.set(key, i);
    } catch (e) {
      // Not acknowledged: its outcome is unknown.
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    const now = Date.now();
    if (lastOk === null) console.log("ready");
    else gap = Math.max(gap, (now - lastOk) / 1000);
    lastOk = now;
    lastWall = now / 1000;
    acked.push(key);
  }
  console.log(JSON.stringify({ acked, gap, last_ok: lastWall }));
  redis.disconnect();
}

main();
