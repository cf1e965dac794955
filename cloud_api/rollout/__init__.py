"""Model rollouts: the deployment state machine (pure), its rows (SQL), and the MQTT worker."""
