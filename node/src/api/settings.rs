//! The `/v1` endpoints of settings and contact verification: reading and changing the
//! user's settings, a contact's safety number (digits, and as a QR code), and the verified
//! mark. Each turns a request into one [`crate::Node`] call; no rule lives here.

use axum::{
    extract::State,
    http::{
        header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS},
        HeaderValue, StatusCode,
    },
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};

use super::{
    error::{node_error, ApiError, Input},
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

/// `GET /v1/settings`.
async fn settings(State(s): State<ApiState>) -> Result<Json<Settings>, ApiError> {
    s.node
        .settings()
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// `PUT /v1/settings`: the fields given change; `204` once durable.
async fn change(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<SettingsChange>,
) -> Result<StatusCode, ApiError> {
    s.node
        .set_settings(body)
        .await
        .map(|_| StatusCode::NO_CONTENT)
        .map_err(|e| node_error(e, Input::Body))
}

/// `GET /v1/contacts/{user}/safety-number`.
async fn safety_number(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<SafetyNumberView>, ApiError> {
    s.node
        .safety_number(&user)
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// `GET /v1/contacts/{user}/safety-number/qr.svg`: its QR payload as an SVG QR code.
async fn safety_qr(
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
            "internal",
            format!("cannot draw the QR code: {e}"),
        )
    })?;
    let mut response = svg.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// `POST /v1/contacts/{user}/verify`: marks the contact verified.
async fn verify(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<ContactView>, ApiError> {
    s.node
        .set_verified(user, true)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}

/// `DELETE /v1/contacts/{user}/verify`: clears the mark.
async fn unverify(
    State(s): State<ApiState>,
    PeerPath(user): PeerPath,
) -> Result<Json<ContactView>, ApiError> {
    s.node
        .set_verified(user, false)
        .await
        .map(Json)
        .map_err(|e| node_error(e, Input::Query))
}
