-- The call id's format was a CHECK constraint, and PostgreSQL evaluates every CHECK of
-- a row on every UPDATE, whether or not the update touches its columns. Every append
-- batch updates its calls' counters, so the id's regular expression ran once per call
-- per batch: 15 % of PostgreSQL's CPU time in a single-packet ingest profile (perf,
-- `textregexeq` under `ExecConstraints`). A call id never changes, so the same rule
-- now runs only where an id is written: on INSERT and on an UPDATE of the id itself.
-- It answers with the same SQLSTATE as the CHECK did (23514, check_violation). Unlike
-- a CHECK, a trigger can be switched off by the table's owner or a superuser
-- (session_replication_role = replica, DISABLE TRIGGER, pg_restore --disable-triggers);
-- the primary key still refuses NULL and duplicate ids.
ALTER TABLE calls DROP CONSTRAINT IF EXISTS calls_call_id_check;

CREATE OR REPLACE FUNCTION pbx_check_call_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.call_id IS NULL OR NEW.call_id !~ '^[A-Za-z0-9._:-]{1,128}$' THEN
        RAISE EXCEPTION 'call id % does not match ^[A-Za-z0-9._:-]{1,128}$', quote_nullable(NEW.call_id)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'calls_call_id_check', TABLE = 'calls';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS calls_call_id_check ON calls;
CREATE TRIGGER calls_call_id_check
    BEFORE INSERT OR UPDATE OF call_id ON calls
    FOR EACH ROW EXECUTE FUNCTION pbx_check_call_id();
