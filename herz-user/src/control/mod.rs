//! The control plane: a tokio runtime on its own thread serving `/metrics`, `/healthz` and `/state`.
//! It only reads what the hot loop publishes (atomics, a snapshot
//! refreshed twice a second) and never blocks it.

pub mod metrics;
pub mod state;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Instant,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;

use crate::{net::Shared, status::ShieldState};

/// What the control plane needs.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// The hot loop's shared state.
    pub shared: Arc<Shared>,
    /// The shield's state at start.
    pub shield: ShieldState,
    /// Pin path when the shield is active.
    pub pin_path: Option<PathBuf>,
    /// When the loop started (its clock's zero).
    pub started: Instant,
    /// The shield's event counters, when it is active.
    pub shield_events: Option<Arc<crate::shield::EventStats>>,
}

struct AppState {
    ctx: ControlContext,
    registry: Registry,
    /// The bearer token `/metrics` and `/state` require, if configured.
    token: Option<String>,
}

/// Whether `headers` carry `Authorization: Bearer <token>` (compared in constant time).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// Reads the token file's first line.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let token = crate::cli::secret_file(path).context("control.token_file")?;
    anyhow::ensure!(
        token.len() >= 16,
        "control.token_file: {}: the token must be at least 16 characters",
        path.display()
    );
    Ok(token)
}

/// 401 unless the request carries the configured token (none configured: open).
async fn require_token(
    State(s): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match &s.token {
        Some(token) if !authorized(request.headers(), token) => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (control.token_file)\n",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// Binds the HTTP endpoint (failing the start if it cannot) and serves it on a new thread.
/// `token`: see [`ControlConfig::token_file`](crate::config::ControlConfig::token_file).
pub fn start(listen: SocketAddr, ctx: ControlContext, token: Option<String>) -> anyhow::Result<()> {
    let std_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("control.listen: cannot listen on {listen}"))?;
    std_listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("herz-control".into())
        .spawn(move || {
            crate::privilege::sync_thread();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "control plane runtime failed; metrics are off");
                    return;
                }
            };
            rt.block_on(async move {
                let mut registry = Registry::default();
                registry.register_collector(Box::new(metrics::HerzCollector {
                    shared: ctx.shared.clone(),
                    pin_path: ctx.pin_path.clone(),
                    events: ctx.shield_events.clone(),
                }));
                let state = Arc::new(AppState {
                    ctx: ctx.clone(),
                    registry,
                    token,
                });
                let guarded = Router::new()
                    .route("/metrics", get(metrics_handler))
                    .route("/state", get(state_handler))
                    .route_layer(axum::middleware::from_fn_with_state(
                        state.clone(),
                        require_token,
                    ));
                let app = Router::new()
                    .route("/healthz", get(health_handler))
                    .merge(guarded)
                    .with_state(state);
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "control listener");
                        return;
                    }
                };
                tracing::info!(%listen, "control plane serving /metrics /healthz /state");
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "control plane stopped");
                }
            });
        })?;
    Ok(())
}

async fn metrics_handler(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut body, &s.registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn health_handler(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let ctx = &s.ctx;
    let now = ctx.started.elapsed().as_nanos() as u64;
    let alive = ctx.shared.gauges.loop_alive_ns.load(Relaxed);
    let loop_age_ms = now.saturating_sub(alive) as f64 / 1e6;
    // The loop wakes at least every 100 ms; two seconds of silence means it is stuck.
    let loop_ok = loop_age_ms < 2000.0;
    let feeds: Vec<serde_json::Value> = ctx
        .shared
        .feeds
        .iter()
        .map(|f| {
            let last = f.last_packet_ns.load(Relaxed);
            let idle = (last > 0).then(|| now.saturating_sub(last) as f64 / 1e9);
            serde_json::json!({ "name": f.name, "connected": idle.is_some_and(|s| s < 5.0), "idle_secs": idle })
        })
        .collect();
    let shield = match &ctx.shield {
        ShieldState::Active { .. } => serde_json::json!({"state": "active"}),
        ShieldState::Disabled { reason } => {
            serde_json::json!({"state": "disabled", "reason": reason})
        }
        ShieldState::Off => serde_json::json!({"state": "off"}),
    };
    let body = serde_json::json!({
        "status": if loop_ok { "ok" } else { "stalled" },
        "event_loop": { "alive": loop_ok, "last_iteration_ms_ago": loop_age_ms },
        "shield": shield,
        "feeds": feeds,
    });
    (
        if loop_ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

async fn state_handler(State(s): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let mut snap = s
        .ctx
        .shared
        .state
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    // Peer addresses only to a token holder (the middleware let this request through, so with a
    // token configured it carried it).
    if s.token.as_deref().is_none_or(|t| !authorized(&headers, t)) {
        for session in &mut snap.sessions {
            session.peer = state::HIDDEN_PEER.into();
        }
    }
    let counters = s
        .ctx
        .shared
        .counters
        .described()
        .into_iter()
        .map(|(k, _, v)| (k.to_string(), v))
        .collect();
    Json(state::StateBody {
        snapshot: snap,
        counters,
        pin_path: s.ctx.pin_path.clone(),
    })
}
