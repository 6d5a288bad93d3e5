-- Retention (pbx_core::retention): an ARCHIVED call can lose its packets and keep the
-- rest, and old finished calls and webhook deliveries can be deleted.
--
-- A call whose packets were swept records when, how many and how many payload bytes
-- they were, and the lowest missing ranges of each channel (pbx_core::retention::
-- KEPT_MISSING_RANGES of them, plus one to tell that there were more), which the
-- snapshot can no longer compute from the packets: a JSON array of
-- [channel, first, last] triples, lowest channel and sequence first.
ALTER TABLE calls
    ADD COLUMN packets_swept_at timestamptz,
    ADD COLUMN swept_packets bigint CHECK (swept_packets >= 0),
    ADD COLUMN swept_bytes bigint CHECK (swept_bytes >= 0),
    ADD COLUMN swept_gaps jsonb,
    -- All four together, and only on an ARCHIVED call. NULL tests only: PostgreSQL
    -- evaluates every CHECK of a row on each append's update of it (see 20261125110000).
    ADD CONSTRAINT calls_swept_check CHECK (
        (packets_swept_at IS NULL) = (swept_packets IS NULL)
        AND (packets_swept_at IS NULL) = (swept_bytes IS NULL)
        AND (packets_swept_at IS NULL) = (swept_gaps IS NULL)
        AND (packets_swept_at IS NULL OR state = 'ARCHIVED'));

-- What the sweeps read: finished calls by when they finished; ARCHIVED calls that
-- still hold packets apart, so that swept calls are not read again on every sweep.
-- Neither column nor predicate changes on an append, so appends stay HOT updates
-- (20261125083000).
CREATE INDEX calls_finished_idx ON calls (finished_at, call_id) WHERE finished_at IS NOT NULL;
CREATE INDEX calls_with_packets_idx ON calls (finished_at, call_id)
    WHERE state = 'ARCHIVED' AND packets_swept_at IS NULL;

-- Finished deliveries by when they finished: what pruning reads.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at, id) WHERE status <> 'pending';
