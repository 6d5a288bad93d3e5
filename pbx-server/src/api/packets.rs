//! Ingestion: the seed's `POST /ingest/{call_id}`, its `/v1` twin, and the batch.

use pbx_core::gateway::GatewayError;
use std::time::Instant;

use pbx_core::media::MediaFormatError;
use pbx_core::store::PacketOutcome;
use pbx_core::{CallId, NewPacket};
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;

use super::body::JsonBody;
use super::constraints::CallIdParam;
use super::types::{BatchAck, BatchItem, PacketAck, PacketIn};
use super::{ApiTags, Ctx};
use crate::auth::{Auth, Role};
use crate::error::status::{AUTH, BAD_REQUEST, BODY, CONFLICT, STORE};
use crate::error::{ApiError, ErrorBody, Errors};
use crate::metrics;

/// What an ingest can answer besides 200: a malformed packet or id, the key, a refused
/// packet or format, the body, the store.
const INGEST: u16 = BAD_REQUEST | AUTH | CONFLICT | BODY | STORE;

/// Packet ingestion (role `ingest`).
#[derive(Debug, Clone)]
pub struct PacketsApi {
    pub(crate) ctx: Ctx,
}

impl PacketsApi {
    async fn ingest_one(&self, auth: &Auth, call_id: String, body: PacketIn) -> Result<Json<PacketAck>, ApiError> {
        let started = Instant::now();
        self.ctx.keys.authorize(auth, Role::Ingest)?;
        let result = self.store_one(call_id, body).await;
        match &result {
            Ok(outcome) => metrics::record_ingest("http", [outcome], started),
            Err(_) => metrics::record_refused("http", 1),
        }
        Ok(Json(result?.map_err(ApiError::from)?.into()))
    }

    /// Validates and stores one packet: its outcome, or why it never reached the store.
    async fn store_one(&self, call_id: String, body: PacketIn) -> Result<PacketOutcome, ApiError> {
        let call_id = CallId::new(call_id)?;
        let packet = body.packet()?;
        if let Some(format) = body.media_format().map_err(invalid_format)? {
            self.ctx.gateway.open(&call_id, format).await?;
        }
        match self.ctx.gateway.ingest(call_id, packet).await {
            Ok(appended) => Ok(Ok(appended)),
            Err(GatewayError::Rejected(rejection)) => Ok(Err(rejection)),
            Err(error) => Err(error.into()),
        }
    }
}

#[OpenApi(tag = "ApiTags::Packets")]
impl PacketsApi {
    /// Stream one packet (the seed's endpoint).
    ///
    /// The call's first packet creates it. Answers once the packet is durably stored:
    /// `{"status": "accepted"}` with its ordering verdict, or `{"status": "duplicate"}`
    /// for an identical resend. A sequence resent with different data, or a packet to a
    /// call that no longer takes packets, is a 409.
    #[oai(path = "/ingest/:call_id", method = "post", operation_id = "ingest")]
    async fn ingest(
        &self,
        auth: Auth,
        /// The call: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
        call_id: Path<CallIdParam>,
        body: JsonBody<PacketIn>,
    ) -> Result<Json<PacketAck>, Errors<INGEST>> {
        Ok(self.ingest_one(&auth, call_id.0.0, body.0).await?)
    }

    /// Stream one packet (same contract as `POST /ingest/{call_id}`).
    #[oai(path = "/v1/calls/:call_id/packets", method = "post", operation_id = "add_packet")]
    async fn add_packet(
        &self,
        auth: Auth,
        /// The call: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
        call_id: Path<CallIdParam>,
        body: JsonBody<PacketIn>,
    ) -> Result<Json<PacketAck>, Errors<INGEST>> {
        Ok(self.ingest_one(&auth, call_id.0.0, body.0).await?)
    }

    /// Stream many packets of one call in one request.
    ///
    /// The batch is stored in one append and answered per packet, in request order: a
    /// refused packet (`conflict`, `call_closed`) does not affect the others. A
    /// malformed packet refuses the whole batch (400, nothing stored), so does a batch
    /// larger than the limit (413, `--max-batch`, 1000 by default) and one whose
    /// packets declare two media formats (409 `format_conflict`: the first declaration
    /// wins, as across requests).
    #[oai(path = "/v1/calls/:call_id/packets/batch", method = "post", operation_id = "add_packets")]
    async fn add_packets(
        &self,
        auth: Auth,
        /// The call: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
        call_id: Path<CallIdParam>,
        body: JsonBody<Vec<PacketIn>>,
    ) -> Result<Json<BatchAck>, Errors<INGEST>> {
        let started = Instant::now();
        self.ctx.keys.authorize(&auth, Role::Ingest)?;
        let count = body.0.len() as u64;
        let result = self.store_batch(call_id.0.0, body.0).await;
        match &result {
            Ok(ack) => metrics::record_ingest("batch", &ack.1, started),
            Err(_) => metrics::record_refused("batch", count),
        }
        let (sequences, outcomes) = result?;
        Ok(Json(sequences.into_iter().zip(&outcomes).map(|(seq, o)| BatchItem::new(seq, o)).collect()))
    }
}

impl PacketsApi {
    /// Validates and stores a batch: each packet's sequence and outcome.
    async fn store_batch(
        &self,
        call_id: String,
        body: Vec<PacketIn>,
    ) -> Result<(Vec<u64>, Vec<PacketOutcome>), ApiError> {
        let call_id = CallId::new(call_id)?;
        let limit = self.ctx.gateway.config().max_request_batch;
        if body.len() > limit {
            return Err(GatewayError::BatchTooLarge { len: body.len(), limit }.into());
        }
        let mut format = None;
        let packets = body
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if let Some(declared) = p.media_format().map_err(invalid_format)? {
                    match format {
                        Some(earlier) if earlier != declared => {
                            return Err(ApiError::Conflict(ErrorBody::new(
                                "format_conflict",
                                format!("packet {i} declares {declared}, an earlier one {earlier}"),
                            )));
                        }
                        _ => format = Some(declared),
                    }
                }
                p.packet()
                    .map(|packet| NewPacket::new(call_id.clone(), packet))
                    .map_err(|e| ApiError::bad_request("invalid_packet", format!("packet {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(format) = format {
            self.ctx.gateway.open(&call_id, format).await?;
        }
        let sequences: Vec<u64> = packets.iter().map(|p| p.packet.sequence()).collect();
        let outcomes = self.ctx.gateway.ingest_batch(packets).await?;
        Ok((sequences, outcomes))
    }
}

fn invalid_format(e: MediaFormatError) -> ApiError {
    ApiError::bad_request("invalid_media_format", e.to_string())
}
