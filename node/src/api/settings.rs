//! The `/v1` endpoints of settings and contact verification: reading and changing the
//! user's settings, a contact's safety number (digits, and as a QR code), and the verified
//! mark. Each turns a request into one [`crate::Node`] call; no rule lives here.

use axum::{
    extract::State,
    http::StatusCode,
    response::Response,
    routing::{get, post},
    Json, Router,
};

use super::{
    error::{node_error, ApiError, ErrorBody, ErrorCode, Input},
    extract::{ApiJson, PeerPath},
    state::ApiState,
};
use crate::{
    settings::{Settings, SettingsChange},
    view::{ContactView, SafetyNumberView},
};

/// The routes (guarded by the caller).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/settings", get(settings).put(change))
        .route("/v1/contacts/{user_id}/safety-number", get(safety_number))
        .route(
            "/v1/contacts/{user_id}/safety-number/qr.svg",
            get(safety_qr),
        )
        .route(
            "/v1/contacts/{user_id}/verify",
            post(verify).delete(unverify),
        )
}

/// The local user's settings.
#[utoipa::path(get, path = "/v1/settings", operation_id = "get_settings", tag = "me",
    responses((status = 200, description = "The settings", body = Settings)))]
pub(super) async fn settings(State(s): State<ApiState>) -> Result<Json<Settings>, ApiError> {
    s.node
        .settings()
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// Changes the settings given (the others stay); answered once durable.
#[utoipa::path(put, path = "/v1/settings", operation_id = "update_settings", tag = "me", request_body = SettingsChange,
    responses((status = 204, description = "Changed"),
        (status = 422, description = "`invalid_input`: a value out of range; `invalid_body`", body = ErrorBody)))]
pub(super) async fn change(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<SettingsChange>,
) -> Result<StatusCode, ApiError> {
    s.node
        .set_settings(body)
        .await
        .map(|_| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Body))
}

/// The safety number of the conversation with a contact: 60 digits in 12 groups, the same
/// on both sides, and its QR payload.
#[utoipa::path(get, path = "/v1/contacts/{user_id}/safety-number", operation_id = "get_safety_number", tag = "contacts", params(("user_id" = String, Path, description = "The contact's user id")),
    responses((status = 200, description = "The safety number", body = SafetyNumberView),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: not a contact", body = ErrorBody)))]
pub(super) async fn safety_number(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<SafetyNumberView>, ApiError> {
    s.node
        .safety_number(&user)
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// The safety number's QR payload as an SVG QR code (to scan from the contact's screen).
#[utoipa::path(get, path = "/v1/contacts/{user_id}/safety-number/qr.svg", operation_id = "get_safety_number_qr", tag = "contacts", params(("user_id" = String, Path, description = "The contact's user id")),
    responses((status = 200, description = "An SVG image", content_type = "image/svg+xml", body = String),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: not a contact", body = ErrorBody)))]
pub(super) async fn safety_qr(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Response, ApiError> {
    let number = s
        .node
        .safety_number(&user)
        .map_err(|e| node_error(e, Input::Query))?;
    let svg = super::web::qr_svg(&number.qr_payload).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("cannot draw the QR code: {e}"),
        )
    })?;
    Ok(super::web::svg_response(svg))
}

/// Marks the contact verified (after comparing safety numbers).
#[utoipa::path(post, path = "/v1/contacts/{user_id}/verify", operation_id = "verify_contact", tag = "contacts", params(("user_id" = String, Path, description = "The contact's user id")),
    responses((status = 200, description = "The contact", body = ContactView),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: not a contact", body = ErrorBody)))]
pub(super) async fn verify(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<ContactView>, ApiError> {
    s.node
        .set_verified(user, true)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// Clears the verified mark.
#[utoipa::path(delete, path = "/v1/contacts/{user_id}/verify", operation_id = "unverify_contact", tag = "contacts", params(("user_id" = String, Path, description = "The contact's user id")),
    responses((status = 200, description = "The contact", body = ContactView),
        (status = 400, description = "`invalid_path`: not a user id", body = ErrorBody),
        (status = 404, description = "`unknown_contact`: not a contact", body = ErrorBody)))]
pub(super) async fn unverify(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<ContactView>, ApiError> {
    s.node
        .set_verified(user, false)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}
