-- pbx: calls, their packets and their AI results.
--
-- The database guards every invariant it can see on its own, so a bug (or a person
-- with psql) cannot store a row the code would refuse. The application keeps the
-- state machine; these constraints keep each row self-consistent.

CREATE TABLE calls (
    -- COLLATE "C": ids compare byte by byte, exactly like Rust's String ordering, and
    -- the primary key index serves `ORDER BY call_id` for listings.
    call_id          text COLLATE "C" PRIMARY KEY
                     CHECK (call_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    state            text NOT NULL DEFAULT 'IN_PROGRESS'
                     CHECK (state IN ('IN_PROGRESS', 'COMPLETED', 'PROCESSING_AI', 'ARCHIVED', 'FAILED')),

    -- Ordering counters (pbx_core::ordering::OrderingCounters).
    received         bigint NOT NULL DEFAULT 0 CHECK (received >= 0),
    highest_sequence bigint NOT NULL DEFAULT 0 CHECK (highest_sequence >= 0),
    duplicates       bigint NOT NULL DEFAULT 0 CHECK (duplicates >= 0),
    out_of_order     bigint NOT NULL DEFAULT 0 CHECK (out_of_order >= 0),
    CHECK (received <= highest_sequence),
    CHECK (out_of_order <= received),

    -- AI work: attempts is the fencing token and never goes down.
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    failures         integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    lease_owner      text,
    lease_expires_at timestamptz,
    next_attempt_at  timestamptz,
    last_error       text,
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CHECK (lease_owner IS NULL OR state = 'PROCESSING_AI'),
    CHECK (lease_owner IS NULL OR attempts >= 1),
    -- Pending work always has a due time (or a lease whose expiry is one).
    CHECK (state <> 'COMPLETED' OR next_attempt_at IS NOT NULL),
    CHECK (state <> 'PROCESSING_AI' OR lease_owner IS NOT NULL OR next_attempt_at IS NOT NULL),
    CHECK (state NOT IN ('IN_PROGRESS', 'ARCHIVED', 'FAILED') OR next_attempt_at IS NULL),

    -- The AI result, present exactly when ARCHIVED.
    transcript       text,
    sentiment_label  text CHECK (sentiment_label IN ('POSITIVE', 'NEUTRAL', 'NEGATIVE')),
    sentiment_score  double precision,
    CHECK ((transcript IS NULL) = (sentiment_label IS NULL)
       AND (transcript IS NULL) = (sentiment_score IS NULL)),
    CHECK ((transcript IS NOT NULL) = (state = 'ARCHIVED')),

    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_packet_at   timestamptz NOT NULL,
    completed_at     timestamptz,
    finished_at      timestamptz,
    CHECK ((completed_at IS NULL) = (state = 'IN_PROGRESS')),
    CHECK ((finished_at IS NOT NULL) = (state IN ('ARCHIVED', 'FAILED')))
);

-- Due AI work, oldest first: what `claim` and `next_due_at` read. A leased call falls
-- due when its lease expires, an unleased one at next_attempt_at.
CREATE INDEX calls_due_idx ON calls ((COALESCE(lease_expires_at, next_attempt_at)), call_id)
    WHERE state IN ('COMPLETED', 'PROCESSING_AI');

-- Calls still streaming, by last packet: what the idle hang-up sweep reads.
CREATE INDEX calls_idle_idx ON calls (last_packet_at, call_id)
    WHERE state = 'IN_PROGRESS';

CREATE TABLE packets (
    call_id          text COLLATE "C" NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    sequence         bigint NOT NULL CHECK (sequence >= 1),
    data             text NOT NULL,
    -- The sender's timestamp in seconds: finite and non-negative.
    sender_timestamp double precision NOT NULL
                     CHECK (sender_timestamp >= 0 AND sender_timestamp < 'Infinity'::float8),
    received_at      timestamptz NOT NULL,
    PRIMARY KEY (call_id, sequence)
);
