-- pbx_append: a whole batch append in one call, so the store sends one statement per
-- batch (one round trip, one implicit transaction, one commit) whatever the batch holds:
-- new calls, closed calls, in-order, late, resent and conflicting packets, any channel.
--
-- The batch comes as parallel arrays, one element per packet in input order. Each
-- packet's answer is one row, `ord` = its 1-based position:
--   verdict 0 in order, 1 gap (gap_first = first missing sequence; the last is the
--   packet's sequence - 1), 2 out of order, 3 duplicate, 4 conflict, 5 call closed
--   (closed_state = the call's state); created = this packet created the call (the first
--   packet of a call this batch created).
--
-- The rules are pbx_core::ordering::OrderingCounters::observe, per (call, channel), in
-- input order:
-- - a packet of a call that is not IN_PROGRESS is refused (5);
-- - a packet whose (call, channel, sequence) is stored already, or was stored by an
--   earlier packet of this batch, is a duplicate (3) when kind and bytes are equal and a
--   conflict (4) otherwise; neither stores anything, a conflict counts nothing;
-- - any other packet is stored: in order (0) when it is highest + 1, a gap (1) above
--   that, out of order (2) below, where highest is the channel's highest stored sequence
--   including the packets stored before it in this batch.
--
-- Steps, each its own statement (so each sees what the one before waited for):
-- 1. Lock the calls of the batch that exist (FOR UPDATE), in byte order of their ids
--    (calls.call_id is COLLATE "C").
-- 2. Create the others, in the same order. A row another batch is inserting makes this
--    wait for that batch. Should that batch have created a call after step 1 looked,
--    the function fails with serialization_failure (40001) rather than lock the call
--    out of order, and the caller runs the batch again. No two batches ever wait for
--    each other in a cycle: step 1 takes locks in one order, and a batch waiting in
--    step 2 waits for one that inserted that id in its own step 2, which takes no
--    lock any more and only waits, in turn, for ids above it.
-- 3. One statement classifies every packet against the calls as locked, inserts the new
--    packets and updates the counters of channel 0 (in `calls`) and of other channels
--    (`call_channels`), `updated_at` (any accepted packet) and `last_packet_at` (any
--    stored packet).
-- The function runs in its caller's transaction: an error anywhere stores nothing.
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

-- pbx_open: declares a call's media format (CallStore::open) in one call. Creates the
-- call IN_PROGRESS with the format if it does not exist (waiting for, then seeing, a
-- batch that is creating it); else locks it and sets the format if none was declared.
-- Answers whether it created the call, the call's state, and the format the call had
-- before (NULL when none): the caller refuses a different one, which this left as it was.
CREATE OR REPLACE FUNCTION pbx_open(p_call_id text, p_format text, p_now timestamptz)
RETURNS TABLE (created boolean, state text, declared text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_state  text;
    v_format text;
BEGIN
    INSERT INTO calls (call_id, media_format, created_at, updated_at, last_packet_at)
    VALUES (p_call_id, p_format, p_now, p_now, p_now)
    ON CONFLICT (call_id) DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT true, 'IN_PROGRESS'::text, NULL::text;
        RETURN;
    END IF;
    SELECT c.state, c.media_format INTO v_state, v_format
    FROM calls AS c WHERE c.call_id = p_call_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pbx_open: call % neither inserted nor found', quote_literal(p_call_id);
    END IF;
    IF v_format IS NULL THEN
        UPDATE calls SET media_format = p_format, updated_at = p_now WHERE call_id = p_call_id;
    END IF;
    RETURN QUERY SELECT false, v_state, v_format;
END
$$;
