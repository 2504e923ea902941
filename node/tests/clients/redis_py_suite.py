"""redis-py, with its defaults (RESP3 since 8.0), against a hotblock primary
and its hot secondary: every everyday command hotblock has, a pipeline, a
WATCH transaction, SCAN under concurrent writes, and key expiry on both.

Run by node/tests/clients.rs: python3 redis_py_suite.py PRIMARY_PORT SECONDARY_PORT.
Exits non-zero on the first failed check, naming it.
"""

import sys
import threading
import time

import redis

PRIMARY, SECONDARY = int(sys.argv[1]), int(sys.argv[2])


def client(port):
    # Defaults only: the protocol is whatever redis-py picks (RESP3).
    return redis.Redis(host="127.0.0.1", port=port)


r = client(PRIMARY)
replica = client(SECONDARY)


def wait_replicated():
    """Waits until the secondary applied everything the primary committed."""
    lsn = int(r.info("replication")["lsn"])
    deadline = time.time() + 10
    while int(replica.info("replication")["lsn"]) < lsn:
        assert time.time() < deadline, "the secondary did not catch up"
        time.sleep(0.01)


def strings():
    assert r.ping()
    assert r.echo("hi") == b"hi"
    assert r.set("s", "v") and r.get("s") == b"v"
    assert r.exists("s", "nope") == 1
    assert r.mset({"a": "1", "b": "2"}) and r.mget("a", "b", "nope") == [b"1", b"2", None]
    assert r.msetnx({"a": "x", "c": "3"}) is False and r.get("c") is None
    assert r.msetnx({"c": "3", "d": "4"}) is True
    assert r.setnx("a", "x") is False and r.setnx("e", "5") is True
    assert r.getset("a", "one") == b"1" and r.get("a") == b"one"
    assert r.getdel("e") == b"5" and r.get("e") is None
    assert r.set("str", "Hello World") and r.getrange("str", 0, 4) == b"Hello"
    assert r.getrange("str", -5, -1) == b"World"
    assert r.setrange("str", 6, "Redis") == 11 and r.get("str") == b"Hello Redis"
    assert r.append("str", "!") == 12 and r.strlen("str") == 12 and r.strlen("nope") == 0
    assert r.incr("n") == 1 and r.incrby("n", 10) == 11
    assert r.decr("n") == 10 and r.decrby("n", 4) == 6
    assert abs(r.incrbyfloat("f", 1.5) - 1.5) < 1e-9
    assert r.set("notnum", "x")
    try:
        r.incr("notnum")
        raise AssertionError("INCR of a non-integer succeeded")
    except redis.ResponseError as e:
        assert "not an integer" in str(e), e
    assert r.unlink("c", "d", "nope") == 2
    assert r.delete("a") == 1
    assert r.type("s") == b"string" and r.type("nope") == b"none"
    assert r.set("only", "1", nx=True) and r.set("only", "2", nx=True) is None
    assert r.set("only", "3", xx=True) and r.set("never", "1", xx=True) is None
    assert r.set("only", "4", get=True) == b"3"


def keyspace():
    assert r.flushdb()
    assert r.dbsize() == 0
    r.mset({"k1": "1", "k2": "2", "other": "3"})
    assert sorted(r.keys("k*")) == [b"k1", b"k2"]
    assert sorted(r.keys()) == [b"k1", b"k2", b"other"]
    assert r.randomkey() in (b"k1", b"k2", b"other")
    assert r.rename("k1", "renamed") and r.get("renamed") == b"1" and r.get("k1") is None
    assert r.renamenx("renamed", "k2") is False and r.renamenx("renamed", "k3") is True
    assert r.copy("k3", "copied") is True and r.get("copied") == b"1"
    assert r.copy("k3", "copied") is False and r.copy("k3", "copied", replace=True) is True
    try:
        r.rename("nope", "x")
        raise AssertionError("RENAME of a missing key succeeded")
    except redis.ResponseError as e:
        assert "no such key" in str(e), e
    found = set()
    for key in r.scan_iter(match="k*", count=2):
        found.add(key)
    assert found == {b"k2", b"k3"}, found
    assert set(r.scan_iter(_type="string")) == {b"k2", b"k3", b"other", b"copied"}
    assert r.flushall()
    assert r.dbsize() == 0


def expiry():
    assert r.set("t", "v", ex=100) and 99 <= r.ttl("t") <= 100
    assert 99_000 <= r.pttl("t") <= 100_000
    assert r.set("t2", "v", px=5000) and 0 < r.pttl("t2") <= 5000
    at = int(time.time()) + 1000
    assert r.set("t3", "v", exat=at) and r.expiretime("t3") == at
    assert r.set("t3", "w", keepttl=True) and r.expiretime("t3") == at
    assert r.execute_command("SETEX", "t4", 100, "v") and r.psetex("t5", 100_000, "v")
    assert r.getex("t4", persist=True) == b"v" and r.ttl("t4") == -1
    assert r.getex("t4", ex=50) == b"v" and 49 <= r.ttl("t4") <= 50
    assert r.set("p", "v") and r.ttl("p") == -1 and r.ttl("nope") == -2
    assert r.expire("p", 100, xx=True) is False
    assert r.expire("p", 100, nx=True) is True and r.expire("p", 200, nx=True) is False
    assert r.expire("p", 50, gt=True) is False and r.expire("p", 200, gt=True) is True
    assert r.expire("p", 300, lt=True) is False and r.expire("p", 150, lt=True) is True
    assert r.pexpire("p", 120_000) and 119 <= r.ttl("p") <= 120
    assert r.expireat("p", at) and r.expiretime("p") == at
    assert r.pexpireat("p", at * 1000 + 500) and r.pexpiretime("p") == at * 1000 + 500
    assert r.persist("p") is True and r.ttl("p") == -1 and r.persist("p") is False
    keyspace_line = r.info("keyspace")["db0"]
    assert keyspace_line["expires"] == 5, keyspace_line
    assert keyspace_line["avg_ttl"] > 0, keyspace_line

    # A key with a 1 s TTL is gone after 1.5 s on the primary and on the
    # hot secondary; the secondary holds it (answering it absent) until the
    # primary's expiry reaches it as a delete.
    assert r.set("short", "v", ex=1)
    wait_replicated()
    assert replica.get("short") == b"v"
    assert 0 < replica.pttl("short") <= 1000
    time.sleep(1.5)
    assert r.get("short") is None and r.exists("short") == 0
    assert replica.get("short") is None and replica.exists("short") == 0
    assert r.info("stats")["expired_keys"] >= 1
    r.flushdb()


def pipeline_and_transactions():
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.set(f"pipe{i}", i)
    pipe.get("pipe7")
    pipe.incr("pipe7")
    results = pipe.execute()
    assert results[:100] == [True] * 100 and results[100:] == [b"7", 8], results[100:]

    # MULTI/EXEC through redis-py's transaction pipeline.
    with r.pipeline() as tx:
        tx.set("tx", "1").incr("tx").get("tx")
        assert tx.execute() == [True, 2, b"2"]

    # The check-and-set recipe: r.transaction() WATCHes, reads, MULTI/EXECs
    # and retries on WatchError.
    r.set("balance", 100)

    def spend(pipe):
        balance = int(pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", balance - 30)

    r.transaction(spend, "balance")
    assert r.get("balance") == b"70"

    # Another client's write between WATCH and EXEC fails the EXEC.
    other = client(PRIMARY)
    with r.pipeline() as tx:
        tx.watch("balance")
        seen = int(tx.get("balance"))
        other.set("balance", 0)
        tx.multi()
        tx.set("balance", seen - 30)
        try:
            tx.execute()
            raise AssertionError("EXEC ran although a watched key changed")
        except redis.WatchError:
            pass
    assert r.get("balance") == b"0"

    # A write to an unwatched key does not; UNWATCH forgets.
    with r.pipeline() as tx:
        tx.watch("balance")
        other.set("unrelated", 1)
        tx.multi()
        tx.incr("balance")
        assert tx.execute() == [1]
    with r.pipeline() as tx:
        tx.watch("balance")
        tx.unwatch()
        other.set("balance", 5)
        tx.multi()
        tx.incr("balance")
        assert tx.execute() == [6]

    # Contended increments through the recipe lose nothing.
    r.set("counter", 0)

    def bump(_):
        c = client(PRIMARY)
        for _ in range(50):
            c.transaction(lambda p: (p.get("counter"), p.multi(), p.incr("counter")), "counter")

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.get("counter") == b"200", r.get("counter")

    try:
        with r.pipeline() as tx:
            tx.set("x", 1)
            tx.lpush("list", 1)
            tx.execute()
        raise AssertionError("a transaction with an unsupported command ran")
    except redis.ResponseError as e:
        assert "not supported" in str(e) or "EXECABORT" in str(e), e
    assert r.get("x") is None


def scan_under_writes():
    """SCAN returns every key present throughout, while others come and go."""
    r.flushdb()
    stable = [f"stable:{i}" for i in range(10_000)]
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(stable), 500):
        pipe.mset({k: "v" for k in stable[i : i + 500]})
    pipe.execute()
    stop = threading.Event()
    writes = [0]

    def churn():
        c = client(PRIMARY)
        i = 0
        while not stop.is_set():
            c.set(f"churn:{i}", "x")
            if i >= 50:
                c.delete(f"churn:{i - 50}")
            i += 1
        writes[0] = i

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        seen = set()
        for key in r.scan_iter(count=100):
            seen.add(key)
    finally:
        stop.set()
        writer.join()
    missing = [k for k in stable if k.encode() not in seen]
    assert not missing, f"SCAN skipped {len(missing)} keys, e.g. {missing[:3]}"
    assert writes[0] > 0
    r.flushdb()


def records():
    dbs = r.execute_command("DB.LIST")
    if b"people" not in dbs:
        assert r.execute_command("DB.CREATE", "people", "city") == b"OK"
    assert r.execute_command("REC.PUT", "people", "ann", "x", "city", "oslo") == b"OK"
    assert r.execute_command("REC.PUT", "people", "bob", "y", "city", "oslo", "EX", "100")
    rec = r.execute_command("REC.GET", "people", "ann")
    # A map under RESP3.
    assert isinstance(rec, dict) and rec[b"payload"] == b"x", rec
    assert sorted(r.execute_command("REC.FIND", "people", "city", "oslo")) == [b"ann", b"bob"]
    assert 99 <= r.execute_command("REC.TTL", "people", "bob") <= 100
    assert r.execute_command("REC.EXPIRE", "people", "ann", "100") == 1
    got = r.execute_command("REC.MGET", "people", "ann", "nobody")
    assert len(got) == 2 and got[1] is None, got
    cursor, keys = r.execute_command("REC.SCAN", "people", "0", "COUNT", "10")
    while cursor != b"0":
        cursor, more = r.execute_command("REC.SCAN", "people", cursor)
        keys += more
    assert sorted(keys) == [b"ann", b"bob"], keys
    # One transaction across the selected database and a record database.
    with r.pipeline() as tx:
        tx.set("moved", "1")
        tx.execute_command("REC.DEL", "people", "ann")
        tx.execute_command("REC.DEL", "people", "bob")
        assert tx.execute() == [True, 1, 1]
    assert r.get("moved") == b"1" and r.delete("moved") == 1
    db_line = r.info("keyspace").get("dbpeople")
    assert db_line is None or db_line["keys"] == 0, db_line


def server():
    info = r.info()
    for field in ("redis_version", "used_memory", "used_memory_human", "used_memory_rss",
                  "maxmemory_policy", "instantaneous_ops_per_sec", "total_net_input_bytes",
                  "keyspace_hits", "keyspace_misses", "expired_keys", "evicted_keys",
                  "connected_clients", "role"):
        assert field in info, field
    assert isinstance(r.time(), tuple)
    assert r.lastsave()
    assert r.bgsave() or True
    assert r.config_set("maxmemory", "0")
    assert r.config_get("maxmemory") == {"maxmemory": "0"}
    assert r.config_resetstat()
    assert r.client_setname("suite") and r.client_getname() == "suite"
    me = r.client_info()
    assert me["name"] == "suite" and int(me["resp"]) == 3, me
    assert any(c["name"] == "suite" for c in r.client_list())
    assert r.client_no_evict("on")
    victim = client(PRIMARY)
    victim.client_setname("victim")
    victim_id = victim.client_id()
    assert r.client_kill_filter(_id=victim_id) == 1
    assert r.command_count() > 50
    assert b"get" in [c.lower() for c in r.command_list()] or "get" in r.command_list()
    r.set("m", "v" * 100)
    assert r.memory_usage("m") >= 100
    assert r.object("encoding", "m") in (b"raw", b"embstr", "raw", "embstr")
    assert r.execute_command("LATENCY", "LATEST") == []
    try:
        r.lpush("list", 1)
        raise AssertionError("LPUSH succeeded")
    except redis.ResponseError as e:
        assert "not supported" in str(e), e
    r.flushdb()


for check in (strings, keyspace, expiry, pipeline_and_transactions, scan_under_writes,
              records, server):
    started = time.time()
    check()
    print(f"redis-py {check.__name__}: ok ({time.time() - started:.2f} s)", flush=True)
