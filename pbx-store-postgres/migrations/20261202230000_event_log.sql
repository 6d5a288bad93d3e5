-- The event log (pbx_core::events): every change writes its events in the same
-- transaction, here by triggers on `calls` and `call_channels`, so every path that
-- changes a call (pbx_append, pbx_open, the work statements) writes them without a
-- round trip of its own, and no path can forget to.
--
-- Rows are inserted with `position` NULL and numbered later, in commit order, by
-- pbx_sequence_events (one sequencer at a time, under an advisory lock): a reader who
-- has seen position n never later finds a smaller one appear, which a bigserial read
-- by id cannot promise (a transaction that took its id earlier may commit later).
-- `body` is the serde JSON of pbx_core::events::EventBody, its `type` tag included.

CREATE TABLE events (
    seq      bigserial PRIMARY KEY,
    position bigint UNIQUE,
    call_id  text COLLATE "C" NOT NULL,
    type     text NOT NULL,
    at       timestamptz NOT NULL,
    body     jsonb NOT NULL CHECK (jsonb_typeof(body) = 'object' AND body->>'type' = type)
);
CREATE INDEX events_unpositioned ON events (seq) WHERE position IS NULL;

-- The newest position ever assigned (it survives pruning every row).
CREATE TABLE event_log_state (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    latest   bigint NOT NULL CHECK (latest >= 0)
);
INSERT INTO event_log_state (latest) VALUES (0);

-- When each channel last wrote an ordering-anomaly event (throttling, see
-- pbx_core::events::ANOMALY_EVENT_INTERVAL_MS).
ALTER TABLE calls ADD COLUMN last_anomaly_event_at timestamptz;
ALTER TABLE call_channels ADD COLUMN last_anomaly_event_at timestamptz;

CREATE FUNCTION pbx_event(p_call_id text, p_at timestamptz, p_body jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO events (call_id, type, at, body) VALUES (p_call_id, p_body->>'type', p_at, p_body);
$$;

-- Whether a channel whose last anomaly event was at `last` gets one at `now`.
CREATE FUNCTION pbx_anomaly_due(p_last timestamptz, p_now timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_last IS NULL OR p_now - p_last >= interval '1000 milliseconds';
$$;

CREATE FUNCTION pbx_anomaly_body(p_channel integer, p_received bigint, p_highest bigint,
                                 p_duplicates bigint, p_out_of_order bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('type', 'ordering_anomaly', 'channel', p_channel, 'received', p_received,
                              'highest', p_highest, 'duplicates', p_duplicates,
                              'out_of_order', p_out_of_order, 'missing', p_highest - p_received);
$$;

-- A new call: call_created.
CREATE FUNCTION pbx_calls_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pbx_event(NEW.call_id, NEW.created_at, '{"type":"call_created"}');
    RETURN NULL;
END
$$;
CREATE TRIGGER calls_created AFTER INSERT ON calls FOR EACH ROW EXECUTE FUNCTION pbx_calls_created();

-- Channel 0's ordering anomalies (its counters live in `calls`): a BEFORE trigger, so
-- that it can stamp the throttle without a second update of the row.
CREATE FUNCTION pbx_calls_anomaly() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pbx_anomaly_due(OLD.last_anomaly_event_at, NEW.updated_at) THEN
        NEW.last_anomaly_event_at := NEW.updated_at;
        PERFORM pbx_event(NEW.call_id, NEW.updated_at,
                          pbx_anomaly_body(0, NEW.received, NEW.highest_sequence, NEW.duplicates, NEW.out_of_order));
    END IF;
    RETURN NEW;
END
$$;
-- A batch had an anomaly on the channel exactly when it resent a packet, filled a gap,
-- or opened one (the WHEN is evaluated without calling the function: in-order batches
-- pay nothing).
CREATE TRIGGER calls_anomaly BEFORE UPDATE OF received, highest_sequence, duplicates, out_of_order ON calls
FOR EACH ROW WHEN (NEW.duplicates > OLD.duplicates OR NEW.out_of_order > OLD.out_of_order
                   OR NEW.highest_sequence - NEW.received > OLD.highest_sequence - OLD.received)
EXECUTE FUNCTION pbx_calls_anomaly();

-- Other channels' anomalies (call_channels rows appear with a channel's first packet).
CREATE FUNCTION pbx_channels_anomaly() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := COALESCE(NULLIF(current_setting('pbx.now', true), '')::timestamptz, now());
    v_last timestamptz;
BEGIN
    IF TG_OP = 'INSERT' AND EXISTS (SELECT 1 FROM call_channels AS x
                                    WHERE x.call_id = NEW.call_id AND x.channel = NEW.channel) THEN
        -- INSERT ... ON CONFLICT proposes a row of deltas first; the UPDATE that
        -- follows fires this trigger again with the real counters.
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NOT (NEW.duplicates > OLD.duplicates OR NEW.out_of_order > OLD.out_of_order
                OR NEW.highest_sequence - NEW.received > OLD.highest_sequence - OLD.received) THEN
            RETURN NEW;
        END IF;
        v_last := OLD.last_anomaly_event_at;
    ELSIF NOT (NEW.duplicates > 0 OR NEW.out_of_order > 0 OR NEW.highest_sequence > NEW.received) THEN
        RETURN NEW;
    END IF;
    IF pbx_anomaly_due(v_last, v_now) THEN
        NEW.last_anomaly_event_at := v_now;
        PERFORM pbx_event(NEW.call_id, v_now,
                          pbx_anomaly_body(NEW.channel, NEW.received, NEW.highest_sequence, NEW.duplicates,
                                           NEW.out_of_order));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER channels_anomaly BEFORE INSERT OR UPDATE ON call_channels
FOR EACH ROW EXECUTE FUNCTION pbx_channels_anomaly();

-- Lifecycle events, in the order pbx_core's contract gives within one operation:
-- attempt_started, attempt_failed, attempt_succeeded + transcript_ready, redriven,
-- then state_changed. `at` is the operation's time (every operation sets updated_at).
CREATE FUNCTION pbx_calls_lifecycle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.attempts > OLD.attempts THEN
        PERFORM pbx_event(NEW.call_id, NEW.updated_at, jsonb_build_object(
            'type', 'attempt_started', 'attempt', NEW.attempts,
            'rescued', OLD.state = 'PROCESSING_AI' AND OLD.lease_owner IS NOT NULL));
    END IF;
    IF NEW.failures > OLD.failures THEN
        PERFORM pbx_event(NEW.call_id, NEW.updated_at, jsonb_build_object(
            'type', 'attempt_failed', 'attempt', NEW.attempts, 'error', COALESCE(NEW.last_error, ''),
            'retry_at', CASE WHEN NEW.state = 'PROCESSING_AI' THEN to_jsonb(NEW.next_attempt_at) ELSE 'null'::jsonb END));
    END IF;
    IF OLD.state = 'PROCESSING_AI' AND NEW.state = 'ARCHIVED' THEN
        PERFORM pbx_event(NEW.call_id, NEW.updated_at,
                          jsonb_build_object('type', 'attempt_succeeded', 'attempt', NEW.attempts));
        PERFORM pbx_event(NEW.call_id, NEW.updated_at, jsonb_build_object(
            'type', 'transcript_ready', 'text', NEW.transcript,
            'sentiment', jsonb_build_object('label', NEW.sentiment_label, 'score', NEW.sentiment_score),
            'segments', COALESCE(NEW.ai_details->'segments', '[]'::jsonb),
            'channel_sentiment', COALESCE(NEW.ai_details->'channel_sentiment', '[]'::jsonb)));
    END IF;
    IF OLD.state = 'FAILED' AND NEW.state = 'COMPLETED' THEN
        PERFORM pbx_event(NEW.call_id, NEW.updated_at, '{"type":"redriven"}');
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        PERFORM pbx_event(NEW.call_id, NEW.updated_at,
                          jsonb_build_object('type', 'state_changed', 'from', OLD.state, 'to', NEW.state));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER calls_lifecycle AFTER UPDATE ON calls
FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state OR NEW.attempts > OLD.attempts
                   OR NEW.failures > OLD.failures)
EXECUTE FUNCTION pbx_calls_lifecycle();

-- The sequencer: numbers up to p_limit committed, unnumbered rows in insertion order,
-- after the newest position, and notifies `pbx_events` with the new newest position.
-- Returns the newest position, or NULL when another sequencer holds the lock (it will
-- number these rows; its notification wakes every reader). The advisory lock is held
-- until commit, and each run starts from the committed newest position, so positions
-- are contiguous, only grow, and become visible in order.
-- p_wait: wait for a sequencer running elsewhere and then number what is left (a
-- reader, who must see everything committed before it asked), or give up at once
-- (the background task, which runs again on the next poke or poll).
CREATE FUNCTION pbx_sequence_events(p_limit integer, p_wait boolean) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_base bigint;
    v_n    bigint;
BEGIN
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock(7420113);
    ELSIF NOT pg_try_advisory_xact_lock(7420113) THEN
        RETURN NULL;
    END IF;
    SELECT s.latest INTO v_base FROM event_log_state AS s FOR UPDATE;
    WITH todo AS (
        SELECT e.seq, row_number() OVER (ORDER BY e.seq) AS rn
        FROM (SELECT seq FROM events WHERE position IS NULL ORDER BY seq LIMIT p_limit) AS e
    ), numbered AS (
        UPDATE events AS e SET position = v_base + t.rn FROM todo AS t WHERE e.seq = t.seq RETURNING 1
    )
    SELECT count(*) INTO v_n FROM numbered;
    IF v_n > 0 THEN
        UPDATE event_log_state SET latest = v_base + v_n;
        PERFORM pg_notify('pbx_events', (v_base + v_n)::text);
    END IF;
    RETURN v_base + v_n;
END
$$;

-- pbx_append, unchanged but for stamping the batch's time for the triggers.
CREATE OR REPLACE FUNCTION pbx_append(
    p_call_ids   text[],
    p_channels   smallint[],
    p_sequences  bigint[],
    p_data       bytea[],
    p_is_text    boolean[],
    p_timestamps double precision[],
    p_now        timestamptz
)
RETURNS TABLE (ord bigint, verdict smallint, created boolean, gap_first bigint, closed_state text)
LANGUAGE plpgsql
-- Every table access of a batch is through a primary key: a probe per call or per
-- packet. The planner would otherwise scan `calls` or `packets` whole while its
-- statistics say they are small (a fresh table is not analyzed for up to a minute),
-- and the function's cached plans would keep doing so as the tables grow: measured, a
-- run creating 10,000 calls slowed to a fifth. One generic plan per statement, planned
-- once per connection, with these settings.
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_locked  text[];
    v_missing text[];
    v_created text[];
BEGIN
    IF cardinality(p_call_ids) IS DISTINCT FROM cardinality(p_channels)
       OR cardinality(p_call_ids) IS DISTINCT FROM cardinality(p_sequences)
       OR cardinality(p_call_ids) IS DISTINCT FROM cardinality(p_data)
       OR cardinality(p_call_ids) IS DISTINCT FROM cardinality(p_is_text)
       OR cardinality(p_call_ids) IS DISTINCT FROM cardinality(p_timestamps) THEN
        RAISE EXCEPTION 'pbx_append: the batch arrays differ in length' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The batch's time, for the event triggers of call_channels (which has no
    -- timestamp of its own); transaction-local.
    PERFORM set_config('pbx.now', p_now::text, true);

    -- 1. Lock the batch's calls that exist, in byte order of their ids (the index scan
    --    returns them in key order and rows are locked as they come), and list the ids
    --    that do not exist, in the same order.
    WITH locked AS (
        SELECT c.call_id FROM calls AS c WHERE c.call_id = ANY (p_call_ids) ORDER BY c.call_id FOR UPDATE
    )
    SELECT COALESCE((SELECT array_agg(l.call_id) FROM locked AS l), '{}'),
           COALESCE((SELECT array_agg(m.id ORDER BY m.id)
                     FROM (SELECT DISTINCT t.id COLLATE "C" AS id FROM unnest(p_call_ids) AS t(id)
                           WHERE t.id NOT IN (SELECT l.call_id FROM locked AS l)) AS m), '{}')
    INTO v_locked, v_missing;

    -- 2. Create the missing calls, in the same order.
    IF cardinality(v_missing) > 0 THEN
        WITH ins AS (
            INSERT INTO calls (call_id, created_at, updated_at, last_packet_at)
            SELECT t.id, p_now, p_now, p_now
            FROM unnest(v_missing) WITH ORDINALITY AS t(id, n)
            ORDER BY t.n
            ON CONFLICT (call_id) DO NOTHING
            RETURNING call_id
        )
        SELECT COALESCE(array_agg(ins.call_id), '{}') INTO v_created FROM ins;
        IF cardinality(v_created) < cardinality(v_missing) THEN
            -- Another batch created one of them after step 1 looked. Locking it now
            -- would break the lock order; the caller retries the whole batch instead
            -- (nothing of it is stored), and then finds the call.
            RAISE EXCEPTION 'pbx_append: a call of the batch was created concurrently'
                USING ERRCODE = 'serialization_failure';
        END IF;
    ELSE
        v_created := '{}';
    END IF;

    -- 3. Classify, store, count.
    RETURN QUERY
    WITH cs AS MATERIALIZED (
        -- The batch's calls as locked (or created): one primary-key probe per call.
        SELECT c.call_id, c.state, c.highest_sequence FROM calls AS c WHERE c.call_id = ANY (p_call_ids)
    ), b AS (
        -- Narrow rows: the payloads stay in p_data (read by position, `p_data[ord]`),
        -- so the sorts below move a few fixed-size columns (first, where they are
        -- cheapest to read), not the audio; ids compare byte-wise (COLLATE "C").
        SELECT t.ord, t.channel, t.sequence, t.is_text,
               CASE WHEN t.channel = 0 THEN cs.highest_sequence
                    ELSE COALESCE((SELECT x.highest_sequence FROM call_channels AS x
                                   WHERE x.call_id = t.call_id AND x.channel = t.channel), 0)
               END AS hi,
               t.call_id COLLATE "C" AS call_id, cs.state
        FROM unnest(p_call_ids, p_channels, p_sequences, p_is_text)
             WITH ORDINALITY AS t(call_id, channel, sequence, is_text, ord)
        JOIN cs ON cs.call_id = t.call_id
    ), looked AS (
        -- The stored copy, looked up only at or below the channel's highest sequence
        -- (a packet above it cannot be stored), and the batch's first copy. LIMIT keeps
        -- the lookup a primary-key probe per packet: without it the planner may
        -- flatten it into a hash join over the whole table, which it prefers while its
        -- statistics still say the table is small, and a cached plan keeps that
        -- choice as the table grows.
        SELECT b.*, s.found, s.same,
               first_value(b.ord) OVER w AS f_ord,
               row_number() OVER w AS key_rn,
               row_number() OVER (PARTITION BY b.call_id ORDER BY b.ord) AS call_rn
        FROM b
        LEFT JOIN LATERAL (
            SELECT true AS found, p.data_is_text = b.is_text AND p.data = p_data[b.ord] AS same
            FROM packets AS p
            WHERE b.sequence <= b.hi
              AND p.call_id = b.call_id AND p.channel = b.channel AND p.sequence = b.sequence
            LIMIT 1
        ) AS s ON true
        WINDOW w AS (PARTITION BY b.call_id, b.channel, b.sequence ORDER BY b.ord)
    ), judged AS (
        SELECT l.*,
               CASE
                   WHEN l.state <> 'IN_PROGRESS' THEN 5
                   WHEN l.found THEN CASE WHEN l.same THEN 3 ELSE 4 END
                   WHEN l.key_rn > 1 THEN
                       CASE WHEN p_is_text[l.f_ord] = l.is_text AND p_data[l.f_ord] = p_data[l.ord] THEN 3 ELSE 4 END
                   ELSE -1 -- stored: which kind depends on the packets stored before it
               END AS v
        FROM looked AS l
    ), placed AS (
        -- hb: the channel's highest sequence before this packet.
        SELECT j.*,
               GREATEST(j.hi, max(j.sequence) FILTER (WHERE j.v = -1) OVER (
                   PARTITION BY j.call_id, j.channel ORDER BY j.ord
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS hb
        FROM judged AS j
    ), verdicts AS (
        SELECT p.*,
               CASE
                   WHEN p.v <> -1 THEN p.v
                   -- sequence - 1, not hb + 1: hb may be the largest bigint.
                   WHEN p.sequence > p.hb THEN CASE WHEN p.sequence - 1 = p.hb THEN 0 ELSE 1 END
                   ELSE 2
               END AS verdict
        FROM placed AS p
    ), inserted AS (
        INSERT INTO packets (call_id, channel, sequence, data, data_is_text, sender_timestamp, received_at)
        SELECT r.call_id, r.channel, r.sequence, p_data[r.ord], r.is_text, p_timestamps[r.ord], p_now
        FROM verdicts AS r
        WHERE r.verdict IN (0, 1, 2)
    ), per_channel AS (
        SELECT r.call_id, r.channel,
               count(*) FILTER (WHERE r.verdict IN (0, 1, 2)) AS n_new,
               count(*) FILTER (WHERE r.verdict = 2) AS n_late,
               count(*) FILTER (WHERE r.verdict = 3) AS n_dup,
               -- Late packets lie below the highest sequence, so including them changes
               -- nothing but keeps a proposed call_channels row valid (received <= highest).
               max(r.sequence) FILTER (WHERE r.verdict IN (0, 1, 2)) AS top
        FROM verdicts AS r
        WHERE r.verdict IN (0, 1, 2, 3)
        GROUP BY r.call_id, r.channel
    ), per_call AS (
        SELECT pc.call_id,
               bool_or(pc.n_new > 0) AS stored,
               max(pc.n_new) FILTER (WHERE pc.channel = 0) AS n_new,
               max(pc.n_late) FILTER (WHERE pc.channel = 0) AS n_late,
               max(pc.n_dup) FILTER (WHERE pc.channel = 0) AS n_dup,
               max(pc.top) FILTER (WHERE pc.channel = 0) AS top
        FROM per_channel AS pc
        GROUP BY pc.call_id
    ), calls_updated AS (
        UPDATE calls AS c
        SET received = c.received + COALESCE(u.n_new, 0),
            highest_sequence = GREATEST(c.highest_sequence, u.top),
            duplicates = c.duplicates + COALESCE(u.n_dup, 0),
            out_of_order = c.out_of_order + COALESCE(u.n_late, 0),
            updated_at = p_now,
            last_packet_at = CASE WHEN u.stored THEN p_now ELSE c.last_packet_at END
        FROM per_call AS u
        -- `= ANY`: an index scan of the batch's calls, never a scan of the table.
        WHERE c.call_id = ANY (p_call_ids) AND c.call_id = u.call_id
    ), channels_updated AS (
        INSERT INTO call_channels AS x (call_id, channel, received, highest_sequence, duplicates, out_of_order)
        SELECT pc.call_id, pc.channel, pc.n_new, COALESCE(pc.top, 0), pc.n_dup, pc.n_late
        FROM per_channel AS pc
        WHERE pc.channel <> 0
        ON CONFLICT (call_id, channel) DO UPDATE
        SET received = x.received + EXCLUDED.received,
            highest_sequence = GREATEST(x.highest_sequence, EXCLUDED.highest_sequence),
            duplicates = x.duplicates + EXCLUDED.duplicates,
            out_of_order = x.out_of_order + EXCLUDED.out_of_order
    )
    SELECT r.ord,
           r.verdict::smallint,
           r.call_id = ANY (v_created) AND r.call_rn = 1,
           CASE WHEN r.verdict = 1 THEN r.hb + 1 END,
           CASE WHEN r.verdict = 5 THEN r.state END
    FROM verdicts AS r
    ORDER BY r.ord;
END
$$;

