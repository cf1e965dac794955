"""Everything bound for the cloud or a local device: the outbox, the uplink and its acks,
local actions."""
