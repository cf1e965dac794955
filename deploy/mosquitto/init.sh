#!/bin/sh
# The compose stack's broker-init service: the schema, the cloud's MQTT service users and the
# compose edge agent from the passwords in the environment, then the broker's password, ACL
# and listener files into the shared volume (owned by mosquitto's uid 1883, which re-reads
# them on SIGHUP). Safe to run again: users get their password again, the agent is kept.
set -eu
printf '%s' "$AIOT_MQTT_INGEST_PASSWORD" |
  aiot cloud create-broker-user ingest --role ingest --password-file /dev/stdin
printf '%s' "$AIOT_MQTT_CONTROL_PASSWORD" |
  aiot cloud create-broker-user control --role control --password-file /dev/stdin
printf '%s' "$AIOT_EDGE_PASSWORD" |
  aiot cloud enroll-agent compose-edge-1 --label site=compose --exist-ok --password-file /dev/stdin
aiot cloud broker-config --out /broker --broker-dir /mosquitto/auth --owner 1883:1883
