"""The seed's flow through a client generated from pbx's /openapi.json.

    client_flow.py BASE_URL INGEST_KEY SUPERVISOR_KEY

`pbx_client` is what openapi-python-client generated (tools/api-check/run.sh puts it
on the path); nothing in it is edited by hand. The flow: ingest three packets of a new
call, hang up, read the call until it is ARCHIVED and check its transcript. Between
reads it waits for the server: the call's live event feed (`GET /v1/events?call_id=`,
opened before the hang-up so no change is missed) says when the state moved, and at
most MAX_READS reads are made. Also checks that errors arrive as the declared
`ErrorBody` and that the roles of the keys hold. Exits non-zero on any failure.
"""

from __future__ import annotations

import sys
import uuid

import httpx
from pbx_client import AuthenticatedClient
from pbx_client.api.calls import complete_call, get_call
from pbx_client.api.packets import ingest
from pbx_client.models import (
    CallView,
    ErrorBody,
    OrderView,
    PacketAck,
    PacketIn,
    PacketStatus,
    StateView,
    TransitionView,
)

MAX_READS = 20
# How long one wait on the event feed may last (the feed sends a comment every 15 s).
EVENT_WAIT_SECONDS = 30.0


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"client flow: {what}")


def main(base_url: str, ingest_key: str, supervisor_key: str) -> None:
    pbx = AuthenticatedClient(base_url=base_url, token=ingest_key)
    supervisor = AuthenticatedClient(base_url=base_url, token=supervisor_key)
    call_id = f"client-{uuid.uuid4().hex}"

    # 1. Three packets, the seed's shape; the first creates the call.
    for sequence in (1, 2, 3):
        packet = PacketIn(sequence=sequence, data=f"audio_chunk_{sequence}", timestamp=123.45 + sequence / 50)
        reply = ingest.sync_detailed(call_id, client=pbx, body=packet)
        check(reply.status_code == 200, f"ingest {sequence}: {reply.status_code} {reply.content!r}")
        ack = reply.parsed
        check(isinstance(ack, PacketAck), f"ingest {sequence}: not a PacketAck: {ack!r}")
        check(ack.status == PacketStatus.ACCEPTED and ack.order == OrderView.IN_ORDER, f"ingest {sequence}: {ack!r}")
        check(ack.created_call == (sequence == 1), f"ingest {sequence}: created_call {ack.created_call}")
    resend = ingest.sync_detailed(call_id, client=pbx, body=PacketIn(sequence=3, data="audio_chunk_3", timestamp=1.0))
    check(isinstance(resend.parsed, PacketAck) and resend.parsed.status == PacketStatus.DUPLICATE, "resend")

    # Errors come as the declared ErrorBody; roles hold.
    unknown = get_call.sync_detailed(f"nobody-{uuid.uuid4().hex}", client=supervisor)
    check(unknown.status_code == 404 and isinstance(unknown.parsed, ErrorBody), f"unknown call: {unknown!r}")
    check(unknown.parsed.error == "not_found", f"unknown call: {unknown.parsed!r}")
    bad = get_call.sync_detailed("bad id", client=supervisor)
    check(bad.status_code == 400 and isinstance(bad.parsed, ErrorBody), f"bad id: {bad.status_code}")
    check(bad.parsed.error == "invalid_call_id", f"bad id: {bad.parsed!r}")
    wrong_role = get_call.sync_detailed(call_id, client=pbx)
    check(wrong_role.status_code == 403 and isinstance(wrong_role.parsed, ErrorBody), "ingest key reads a call")
    no_key = AuthenticatedClient(base_url=base_url, token="not-a-key")
    refused = ingest.sync_detailed(call_id, client=no_key, body=PacketIn(sequence=4, data="x", timestamp=0.0))
    check(refused.status_code == 401 and isinstance(refused.parsed, ErrorBody), f"unknown key: {refused!r}")

    # 2. Hang up, with the call's event feed open first.
    events = supervisor.get_httpx_client()
    timeout = httpx.Timeout(10.0, read=EVENT_WAIT_SECONDS)
    with events.stream("GET", "/v1/events", params={"call_id": call_id}, timeout=timeout) as feed:
        check(feed.status_code == 200, f"event feed: {feed.status_code}")
        changes = feed.iter_lines()

        hung_up = complete_call.sync_detailed(call_id, client=pbx)
        check(hung_up.status_code == 200 and isinstance(hung_up.parsed, TransitionView), f"complete: {hung_up!r}")
        check(hung_up.parsed.applied, f"complete: {hung_up.parsed!r}")

        # 3. Read the call until ARCHIVED; between reads, wait for its next event.
        for read in range(1, MAX_READS + 1):
            reply = get_call.sync_detailed(call_id, client=supervisor)
            view = reply.parsed
            check(isinstance(view, CallView), f"read {read}: {reply.status_code} {reply.content!r}")
            check(view.state != StateView.FAILED, f"the call FAILED: {view.last_error!r}")
            if view.state == StateView.ARCHIVED:
                check(isinstance(view.transcript, str), f"transcript: {view.transcript!r}")
                check(view.sentiment is not None, "no sentiment")
                check(view.ordering.received == 3 and view.ordering.missing == 0, f"ordering: {view.ordering!r}")
                print(
                    f"client flow: {call_id} ARCHIVED after {read} read(s); "
                    f"transcript {view.transcript!r}, sentiment {view.sentiment.label}"
                )
                return
            for line in changes:
                if line.startswith("data:"):
                    break
            else:
                raise SystemExit("client flow: the event feed ended")
    raise SystemExit(f"client flow: not ARCHIVED after {MAX_READS} reads")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
