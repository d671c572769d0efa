"""MQTT: the connection every node uses and the topic layout of a task."""
