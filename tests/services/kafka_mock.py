"""A Kafka cluster for tests: librdkafka's built-in mock cluster, in a process of its own.

librdkafka starts a mock cluster (real Kafka protocol on loopback TCP, here 3 brokers) inside any
client configured with ``test.mock.num.brokers``; it lives as long as that client. So a small
server process holds such a client, and answers the cluster's bootstrap servers on a control
port, which doubles as its readiness signal for ``_proc.background``:

    python -m tests.services.kafka_mock serve CONTROL_PORT
    python -m tests.services.kafka_mock consume BOOTSTRAP TOPIC COUNT TIMEOUT_S

``consume`` reads a topic from the beginning in yet another process and prints one JSON line per
message, so a test checks what a real consumer receives.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services._proc import background, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MOCK_BROKERS = 3


def _serve(control_port: int) -> None:
    from confluent_kafka import Producer

    client = Producer({"test.mock.num.brokers": MOCK_BROKERS})
    brokers = client.list_topics(timeout=30).brokers.values()
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in sorted(brokers, key=lambda b: b.id))
    with socket.create_server(("127.0.0.1", control_port)) as server:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(bootstrap.encode())


def _consume(bootstrap: str, topic: str, count: int, timeout: float) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "verify", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    # Assign every partition from the start: no group rebalance to wait for.
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            raise SystemExit(f"consumer error: {msg.error()}")
        headers = {k: v.decode() for k, v in msg.headers() or []}
        line = {
            "partition": msg.partition(),
            "key": msg.key().decode(),
            "value": json.loads(msg.value()),
            "headers": headers,
        }
        print(json.dumps(line), flush=True)
        seen += 1
    # Linger briefly: a message beyond ``count`` (a duplicate) must show up in the output too.
    extra_deadline = time.monotonic() + 1.0
    while time.monotonic() < extra_deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            print(json.dumps({"unexpected": msg.value().decode()}), flush=True)
    consumer.close()


def consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[dict]:
    """What a consumer in another process reads from ``topic``: ``count`` messages, then extras."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.services.kafka_mock",
            "consume",
            bootstrap,
            topic,
            str(count),
            str(timeout),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def kafka_mock_cluster(tmp_path_factory) -> str:
    """Bootstrap servers of a 3-broker librdkafka mock cluster running in its own process."""
    port = free_port()
    log = tmp_path_factory.getbasetemp() / "logs" / "kafka_mock.log"
    cmd = [sys.executable, "-m", "tests.services.kafka_mock", "serve", str(port)]
    with background(cmd, port, log, env={"PYTHONPATH": str(PROJECT_ROOT)}):
        with socket.create_connection(("127.0.0.1", port), 10) as conn:
            bootstrap = conn.recv(4096).decode()
        yield bootstrap


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "serve":
        _serve(int(args[0]))
    elif mode == "consume":
        _consume(args[0], args[1], int(args[2]), float(args[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
