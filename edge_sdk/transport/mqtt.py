"""A thin MQTT 5 connection for nodes: persistent session, reconnect with backoff, last will,
size checks before publishing, and incoming messages handed to the node's own thread.

paho runs its network loop in a thread of its own; nothing here blocks it: messages and
publish acknowledgements go into `inbox`, a queue the node's main loop reads.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_sdk.files import write_private

log = logging.getLogger("blockfl.mqtt")
SESSION_EXPIRY_S = 3600
MQTT_OVERHEAD = 1024  # fixed header, topic and properties, generously
MAX_CONFIG_BYTES = 16 * 1024  # broker.json is a few hundred bytes


class MessageTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class BrokerConfig:
    url: str  # mqtt://host:port or mqtts://host:port
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # for mqtts
    max_message_bytes: int = 64 * 1024 * 1024

    @classmethod
    def load(cls, path: str | Path) -> BrokerConfig:
        """broker.json, as enrolment writes it (mode 0600: it holds the password)."""
        if Path(path).stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path}: over {MAX_CONFIG_BYTES} bytes; not a broker.json")
        text = Path(path).read_text()
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{path}: not JSON ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        unknown = set(data) - {"url", "username", "password", "ca_file", "max_message_bytes"}
        if unknown or "url" not in data:
            raise ValueError(f"{path}: needs 'url'; unknown keys {sorted(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        data = {"url": self.url, "username": self.username, "password": self.password}
        if self.ca_file:
            data["ca_file"] = self.ca_file
        write_private(path, json.dumps(data, indent=2))

    def __repr__(self) -> str:  # never print the password
        return f"BrokerConfig(url={self.url!r}, username={self.username!r})"


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None
    mid: int = 0  # for the acknowledgement (QoS 1)
    qos: int = 0
    connection: int = 0  # which connection of this client it arrived on


NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason: accepted, but nobody was subscribed (dropped)


@dataclass(frozen=True)
class Acked:
    mid: int
    reason: int


@dataclass(frozen=True)
class Connected:
    pass


class Connection:
    def __init__(
        self,
        config: BrokerConfig,
        *,
        client_id: str,
        subscriptions: list[str],
        will: tuple[str, bytes] | None = None,
        online: tuple[str, bytes] | None = None,
        persistent: bool = True,
        ack_when_handled: bool = False,
    ):
        """`persistent`: a session the broker keeps for SESSION_EXPIRY_S while the node is away, so
        QoS 1 messages wait for it; off for one-shot clients. `ack_when_handled`: the caller
        acknowledges each message with `ack` once it has handled it, so a caller that dies in
        between gets it again from its session (paho would acknowledge when the callback returns)."""
        self.config = config
        self.persistent = persistent
        self.inbox: queue.Queue = queue.Queue()
        self.subscriptions = subscriptions
        self.online = online
        self.manual_ack = ack_when_handled
        self.connections = 0  # counts successful connects (paho's thread writes, the node's reads)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=ack_when_handled
        )
        url = urlparse(config.url)
        if url.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker url {config.url!r}: expected mqtt://host:port or mqtts://host:port")
        self.host, self.port = url.hostname or "127.0.0.1", url.port or (8883 if url.scheme == "mqtts" else 1883)
        if url.scheme == "mqtts":
            self.client.tls_set(ca_certs=config.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if config.username:
            self.client.username_pw_set(config.username, config.password)
        self.will = will
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=5)
        self.client.max_queued_messages_set(10_000)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S if self.persistent else 0
        self.client.connect_async(self.host, self.port, keepalive=15, clean_start=not self.persistent, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect; with a last will, ask the broker to publish it (MQTT 5 reason 0x04), so peers
        learn of a clean stop as they would of a crash."""
        reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message") if self.will else None
        try:
            self.client.disconnect(reasoncode=reason)
        finally:
            self.client.loop_stop()

    def ack(self, message: Incoming) -> None:
        """Acknowledge a handled message (QoS 1); safe to call from the node's thread."""
        # a message id is only meaningful on the connection it arrived on: after a reconnect the same
        # id may name another message, and the broker redelivers this one anyway
        if self.manual_ack and message.qos > 0 and message.connection == self.connections:
            self.client.ack(message.mid, message.qos)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> int:
        """QoS 1 publish; returns the message id. Refuses what the broker would not take."""
        if len(payload) + len(topic) + MQTT_OVERHEAD > self.config.max_message_bytes:
            raise MessageTooLarge(
                f"{len(payload)} bytes to {topic} exceed the {self.config.max_message_bytes}-byte limit"
            )
        props = None
        if response_topic or correlation:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        return info.mid

    # paho callbacks: network thread; only enqueue
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        if self.online:
            client.publish(self.online[0], self.online[1], qos=1, retain=True)
        self.connections += 1
        self.inbox.put(Connected())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if reason_code != 0:
            log.info("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message):
        props = message.properties
        response = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        payload, mid, qos = bytes(message.payload), message.mid, message.qos
        self.inbox.put(Incoming(message.topic, payload, response, correlation, mid, qos, self.connections))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.inbox.put(Acked(mid, int(reason_code.value) if hasattr(reason_code, "value") else int(reason_code)))


def publish_once(
    config: BrokerConfig, client_id: str, messages: list[tuple[str, bytes]], *, retain: bool, timeout: float = 10.0
) -> None:
    """Connect, publish each message at QoS 1, wait for every acknowledgement, disconnect."""
    conn = Connection(config, client_id=client_id, subscriptions=[], persistent=False)
    conn.start()
    try:
        deadline = time.monotonic() + timeout
        pending: set[int] | None = None
        while pending is None or pending:
            try:
                item = conn.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the broker at {config.url} did not acknowledge within {timeout:.0f} s") from None
            if isinstance(item, Connected) and pending is None:
                pending = {conn.publish(topic, payload, retain=retain) for topic, payload in messages}
            elif isinstance(item, Acked) and pending is not None:
                if item.reason >= 0x80:
                    raise RuntimeError(f"the broker refused a publish (reason code {item.reason:#x})")
                pending.discard(item.mid)
    finally:
        conn.stop()
