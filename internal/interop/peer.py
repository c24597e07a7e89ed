#!/usr/bin/env python3
"""A stand-in for the Python original of OMQS on the wire, for interop tests.

This is OMQS for Go's own test client (Python 3, pika 1.x). It is not the
original's code: it reproduces what the original does on the broker and on
disk, as ../../../shared/PORTING.md records it, so that the Go tests can run
a Go service beside a "Python" one:

- declarations: omqs.exchange.log (topic, durable); omqs.exchange.event
  (topic, durable) with the durable queue omqs.queue.event bound to
  omqs.key.event; consumer queues declared as its LogMsgConsumer (not durable
  unless asked) and EventMsgConsumer (durable) declared them, with no
  arguments; the publisher presets ([AsyncPublisher] ...) not durable;
- properties: events carry none at all; logs carry content_type text/plain
  and delivery_mode 1; nothing carries a message id, timestamp or app id;
  no publisher confirms;
- stop publishes the literal body "EOF" on each lane (log key "info", event
  key "" which is omqs.key.event);
- a publish that fails appends "key:body" to FOLDER/backup.log or
  FOLDER/backup.evt (the key as given: "" for a default event);
- consumers are auto-ack (no_ack=True) with no prefetch.

Usage: peer.py URL COMMAND ARGS... (see main). Consumers print one JSON line
"ready" once consuming, then one JSON line per message whose body contains
MARKER, and stop when their standard input closes. A message without MARKER
is not the test's: the consumer publishes it again to the queue it came from
with its properties (auto-ack took it off the queue), except the legacy "EOF"
sentinel, which carries nothing and is dropped as the original's consumers
dropped it.
"""

import json
import os
import sys
import threading

import pika

LOG_EXCHANGE = "omqs.exchange.log"
EVENT_EXCHANGE = "omqs.exchange.event"
EVENT_QUEUE = "omqs.queue.event"
EVENT_KEY = "omqs.key.event"
LOG_QUEUE = "omqs.queue.log"

PRESETS = [
    ("asyncPublisher", "topic"),
    ("syncPublisher", "topic"),
    ("asyncBroadcaster", "fanout"),
    ("syncBroadcaster", "fanout"),
    ("asyncRouter", "direct"),
    ("syncRouter", "direct"),
]


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def connect(url):
    return pika.BlockingConnection(pika.URLParameters(url))


def declare_event_path(ch):
    ch.exchange_declare(exchange=EVENT_EXCHANGE, exchange_type="topic", durable=True)
    ch.queue_declare(queue=EVENT_QUEUE, durable=True, auto_delete=False)
    ch.queue_bind(queue=EVENT_QUEUE, exchange=EVENT_EXCHANGE, routing_key=EVENT_KEY)


def declare_log_path(ch):
    ch.exchange_declare(exchange=LOG_EXCHANGE, exchange_type="topic", durable=True)


LOG_PROPS = pika.BasicProperties(content_type="text/plain", delivery_mode=1)


def spool(folder, lane, key, body):
    name = "backup.log" if lane == "log" else "backup.evt"
    with open(os.path.join(folder, name), "a", encoding="utf-8") as f:
        f.write(key + ":" + body + "\n")


def publish(url, lane, n, prefix, key, folder):
    """Publishes n messages PREFIX0..PREFIXn-1 on lane ("log" or "event")
    with key, as the original's workers did; what cannot be published goes
    to the spool in folder."""
    bodies = [prefix + str(i) for i in range(n)]
    try:
        conn = connect(url)
    except Exception as e:  # the broker is away: spool everything
        for b in bodies:
            spool(folder, lane, key, b)
        out({"spooled": len(bodies), "error": str(e)})
        return
    ch = conn.channel()
    if lane == "log":
        declare_log_path(ch)
        for b in bodies:
            ch.basic_publish(exchange=LOG_EXCHANGE, routing_key=key or "info",
                             body=b.encode(), properties=LOG_PROPS)
    else:
        declare_event_path(ch)
        for b in bodies:
            # No properties at all, as the original's event publisher sent.
            ch.basic_publish(exchange=EVENT_EXCHANGE, routing_key=key or EVENT_KEY,
                             body=b.encode())
    conn.close()  # the close handshake follows every publish on the socket
    out({"published": len(bodies)})


def stop(url):
    """What the original's manager.stop() put on the wire: "EOF" on each lane."""
    conn = connect(url)
    ch = conn.channel()
    declare_log_path(ch)
    declare_event_path(ch)
    ch.basic_publish(exchange=LOG_EXCHANGE, routing_key="info", body=b"EOF", properties=LOG_PROPS)
    ch.basic_publish(exchange=EVENT_EXCHANGE, routing_key=EVENT_KEY, body=b"EOF")
    conn.close()
    out({"published": 2})


def declare_presets(url):
    """Declares the publisher presets as the original's publishers did: not durable."""
    conn = connect(url)
    ch = conn.channel()
    for prefix, kind in PRESETS:
        base = "omqs.default." + prefix
        ch.exchange_declare(exchange=base + ".exchange", exchange_type=kind, durable=False)
        ch.queue_declare(queue=base + ".queue", durable=False, auto_delete=False)
        ch.queue_bind(queue=base + ".queue", exchange=base + ".exchange", routing_key=base + ".key")
    conn.close()
    out({"declared": len(PRESETS)})


def consume(url, lane, queue, keys, marker, durable):
    """An auto-ack consumer with no prefetch, as the original's consumers."""
    conn = connect(url)
    ch = conn.channel()
    if lane == "log":
        declare_log_path(ch)
        exchange = LOG_EXCHANGE
        queue = queue or LOG_QUEUE
    else:
        declare_event_path(ch)
        exchange = EVENT_EXCHANGE
        queue = queue or EVENT_QUEUE
        durable = True  # the original's EventMsgConsumer: always durable
    ch.queue_declare(queue=queue, durable=durable, auto_delete=False)
    for k in keys:
        ch.queue_bind(queue=queue, exchange=exchange, routing_key=k)

    def on_message(channel, method, props, body):
        text = body.decode("utf-8", "replace")
        if marker in text:
            out({
                "body": text,
                "key": method.routing_key,
                "exchange": method.exchange,
                "content_type": props.content_type or "",
                "delivery_mode": props.delivery_mode or 0,
                "message_id": props.message_id or "",
                "redelivered": bool(method.redelivered),
            })
        elif text != "EOF":
            # Not the test's: put it back where it was.
            channel.basic_publish(exchange="", routing_key=queue, body=body, properties=props)

    ch.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=True)
    out({"ready": True, "queue": queue})

    done = threading.Event()

    def wait_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    while not done.is_set():
        conn.process_data_events(time_limit=0.05)
    conn.close()


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(
            "usage: peer.py URL publish-logs|publish-events N PREFIX KEY FOLDER\n"
            "       peer.py URL stop\n"
            "       peer.py URL declare-presets\n"
            "       peer.py URL consume-logs|consume-events QUEUE KEYS MARKER [durable]\n")
        return 2
    url, cmd, args = argv[1], argv[2], argv[3:]
    if cmd in ("publish-logs", "publish-events"):
        publish(url, "log" if cmd == "publish-logs" else "event", int(args[0]), args[1], args[2], args[3])
    elif cmd == "stop":
        stop(url)
    elif cmd == "declare-presets":
        declare_presets(url)
    elif cmd in ("consume-logs", "consume-events"):
        keys = [k for k in args[1].split(",") if k]
        consume(url, "log" if cmd == "consume-logs" else "event", args[0], keys, args[2],
                len(args) > 3 and args[3] == "durable")
    else:
        sys.stderr.write("unknown command %r\n" % cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
