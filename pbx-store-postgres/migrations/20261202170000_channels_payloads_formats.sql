-- The call media model: packets carry a channel and a byte payload, calls a declared
-- media format and the AI result's details.
--
-- ## Payloads: bytea plus a kind
-- A payload is audio bytes or text that was not base64 (pbx_core::packet::Payload);
-- two payloads are equal when both kind and bytes are. `data` becomes bytea and
-- `data_is_text` says which kind it is. Existing rows held the JSON `data` string as
-- sent, and the gateway now reads such a string with one rule: canonical base64 (padded,
-- no stray bits) is audio, anything else text. Existing rows are converted with that
-- same rule, so that a sender retransmitting a packet after the upgrade is answered
-- `Duplicate`, not `Conflict`. Either kind reads back as exactly the string that was
-- stored (base64 of the bytes, or the text), which is all the API ever showed.
--
-- ## Channels: counters of channel 0 stay in `calls`
-- Each channel has its own sequence space and ordering counters. Channel 0's stay in
-- `calls`, where they were: nearly every call is mono, and its append keeps updating one
-- row per call per batch, listings keep reading one row per call, and nothing about the
-- hot path changes. Channels 1 and up get a row in `call_channels` when their first
-- packet is stored. Moving every channel's counters into one per-(call, channel) table
-- would be more uniform, but would cost each mono batch a second row update (the call's
-- `updated_at`/`last_packet_at` still live in `calls`) and every listing a join.

ALTER TABLE packets ADD COLUMN channel smallint NOT NULL DEFAULT 0 CHECK (channel >= 0 AND channel < 2);
ALTER TABLE packets ADD COLUMN data_is_text boolean NOT NULL DEFAULT true;

UPDATE packets SET data_is_text = false
WHERE data ~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$'
  -- Canonical: encoding the decoded bytes again gives the string back (no stray bits).
  -- PostgreSQL's encoder breaks lines every 76 characters.
  AND replace(encode(decode(data, 'base64'), 'base64'), E'\n', '') = data;

ALTER TABLE packets
    ALTER COLUMN data TYPE bytea
        USING CASE WHEN data_is_text THEN convert_to(data, 'UTF8') ELSE decode(data, 'base64') END,
    ALTER COLUMN data_is_text DROP DEFAULT,
    ALTER COLUMN channel DROP DEFAULT,
    DROP CONSTRAINT packets_pkey,
    ADD PRIMARY KEY (call_id, channel, sequence);

-- Ordering counters of channels 1 and up (channel 0's are in `calls`): a row exists once
-- the channel has a stored packet.
CREATE TABLE call_channels (
    call_id          text COLLATE "C" NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    channel          smallint NOT NULL CHECK (channel >= 1 AND channel < 2),
    received         bigint NOT NULL CHECK (received >= 0),
    highest_sequence bigint NOT NULL CHECK (highest_sequence >= 0),
    duplicates       bigint NOT NULL CHECK (duplicates >= 0),
    out_of_order     bigint NOT NULL CHECK (out_of_order >= 0),
    CHECK (received <= highest_sequence),
    CHECK (out_of_order <= received),
    PRIMARY KEY (call_id, channel)
);

-- The declared media format, as pbx_core::media::MediaFormat displays it
-- (`mulaw/8000/1`); NULL until declared. Checked by a trigger on writes of the column
-- rather than a CHECK, which PostgreSQL would evaluate on every append's update of the
-- row (see 20261125110000).
ALTER TABLE calls ADD COLUMN media_format text;

CREATE OR REPLACE FUNCTION pbx_check_media_format() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.media_format IS NOT NULL
       AND NEW.media_format !~ '^(mulaw|alaw|l16)/(8000|12000|16000|24000|32000|44100|48000)/[12]$' THEN
        RAISE EXCEPTION 'media format % is not ENCODING/RATE/CHANNELS', quote_literal(NEW.media_format)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'calls_media_format_check', TABLE = 'calls';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER calls_media_format_check
    BEFORE INSERT OR UPDATE OF media_format ON calls
    FOR EACH ROW EXECUTE FUNCTION pbx_check_media_format();

-- The AI result's details (pbx_core::ai::AiResult's segments, channel_sentiment and
-- audio), as one JSON object. Only with a result; NULL for results stored before
-- details existed, which read back with none.
ALTER TABLE calls ADD COLUMN ai_details jsonb
    CHECK (ai_details IS NULL OR (transcript IS NOT NULL AND jsonb_typeof(ai_details) = 'object'));
