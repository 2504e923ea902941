"""A redis-py client that finds the primary through the nodes as Sentinels
and writes fresh keys until told to stop, across failovers.

argv: the nodes' client ports, then the seconds to run. Prints "ready"
once a first write got OK, then, at the end, one JSON line: the keys that
got OK, the longest gap between two OKs in seconds, and the wall-clock
time of the last OK.

RESP2 (protocol=2): hotblock does not speak RESP3 yet, and redis-py 8
asks for it by default.
"""

import json
import sys
import time

from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError, TimeoutError
from redis.sentinel import MasterNotFoundError, Sentinel

ports = [int(p) for p in sys.argv[1:-1]]
seconds = float(sys.argv[-1])
sentinel = Sentinel(
    [("127.0.0.1", p) for p in ports],
    socket_timeout=0.5,
    protocol=2,
    sentinel_kwargs={"socket_timeout": 0.5, "protocol": 2},
)
master = sentinel.master_for("hotblock", socket_timeout=3, protocol=2)
acked, i, last_ok, gap, last_wall = [], 0, None, 0.0, 0.0
end = time.monotonic() + seconds
while time.monotonic() < end:
    i += 1
    key = f"py-{i}"
    try:
        master.set(key, i)
    except (ConnectionError, ReadOnlyError, TimeoutError, MasterNotFoundError, ResponseError):
        # Not acknowledged: its outcome is unknown. The next call asks the
        # Sentinels again.
        time.sleep(0.02)
        continue
    now = time.monotonic()
    if last_ok is None:
        print("ready", flush=True)
    else:
        gap = max(gap, now - last_ok)
    last_ok = now
    last_wall = time.time()
    acked.append(key)
print(json.dumps({"acked": acked, "gap": gap, "last_ok": last_wall}), flush=True)
