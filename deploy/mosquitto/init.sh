#!/bin/sh
# The compose stack's broker-init service: the schema, the cloud's MQTT service users and the
# compose edge agent from the passwords in the environment, then the broker's password, ACL
# and listener files into the shared volume (owned by mosquitto's uid 1883, which re-reads
# them on SIGHUP), and the model signing key with its public half for the agent. Safe to run
# again: users get their password again, the agent and the key are kept.
set -eu
printf '%s' "$AIOT_MQTT_INGEST_PASSWORD" |
  aiot cloud create-broker-user ingest --role ingest --password-file /dev/stdin
printf '%s' "$AIOT_MQTT_CONTROL_PASSWORD" |
  aiot cloud create-broker-user control --role control --password-file /dev/stdin
printf '%s' "$AIOT_EDGE_PASSWORD" |
  aiot cloud enroll-agent compose-edge-1 --label site=compose --exist-ok --password-file /dev/stdin
aiot cloud broker-config --out /broker --broker-dir /mosquitto/auth --owner 1883:1883
# The model signing key, made here before the API starts (the API loads it from its data
# volume), and its public half for the edge agent's cloud.public_key_file.
python -c 'import pathlib, sys
from cloud_api.registry import load_or_create_signing_key
from shared.signing import encode_public_key
key = load_or_create_signing_key(pathlib.Path(sys.argv[1]))
print(encode_public_key(key.public_key()))' /api-data > /trust/signing-key.pub
chown aiot /api-data /api-data/signing-key.pem  # the API runs as aiot and writes artifacts there
