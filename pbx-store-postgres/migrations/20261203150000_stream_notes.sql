-- What a call keeps about the media streams that fed it (pbx_core::media::notes): each
-- stream's metadata as it opened, and its DTMF digits and marks, in the order written
-- (id). A table of its own rather than a column of `calls`: every append batch
-- rewrites its calls' rows, which should stay small; notes are written a few times per
-- call and read with the call. A packets sweep leaves them; deleting the call
-- deletes them.
CREATE TABLE call_stream_notes (
    call_id text COLLATE "C" NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    id      bigserial NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('stream', 'signal')),
    note    jsonb NOT NULL CHECK (jsonb_typeof(note) = 'object'),
    PRIMARY KEY (call_id, id)
);
