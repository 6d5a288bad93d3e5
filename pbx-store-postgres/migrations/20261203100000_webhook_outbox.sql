-- The completion webhooks' durable outbox (pbx_core::webhooks), built on the event log.
--
-- webhook_cursor: the one row saying up to which event position deliveries are
-- enqueued. The worker moves it in the same transaction as it inserts the deliveries
-- of those events (a compare-and-set on position, so two instances never enqueue one
-- event twice). While it is alive (alive_at within the event retention), the event
-- pruner keeps every event after it.
CREATE TABLE webhook_cursor (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    position bigint NOT NULL CHECK (position >= 0),
    alive_at timestamptz NOT NULL
);

-- One row per event and endpoint. A pending row is due at next_attempt_at (for a
-- claimed one, when its lease ends); attempts fences late writes from a sender whose
-- lease expired. No foreign key to calls: a delivery is history that outlives the call
-- it announced.
CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    message_id text NOT NULL UNIQUE CHECK (length(message_id) BETWEEN 1 AND 100),
    event_id bigint NOT NULL CHECK (event_id > 0),
    call_id text NOT NULL,
    endpoint text NOT NULL,
    kind text NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error text,
    created_at timestamptz NOT NULL,
    next_attempt_at timestamptz,
    finished_at timestamptz,
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'pending') = (finished_at IS NULL))
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id) WHERE status = 'pending';
