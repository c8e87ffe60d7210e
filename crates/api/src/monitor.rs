//! `GET /api/v2/version` and `GET /api/v2/monitor/health`: public, as in Airflow 3, so load
//! balancers and probes need no token.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use updraft_scheduler::runtime::{LEASE_NAME, LEASE_TTL};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_version))
        .routes(routes!(get_health))
}

#[derive(Serialize, ToSchema)]
pub struct VersionInfo {
    version: &'static str,
    git_version: Option<String>,
}

/// Version of the server.
#[utoipa::path(get, path = "/version", tag = "Version", security(()),
    responses((status = 200, body = VersionInfo)))]
pub async fn get_version(State(state): State<AppState>) -> Json<VersionInfo> {
    Json(VersionInfo {
        version: state.version,
        git_version: None,
    })
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    metadatabase: Status,
    scheduler: SchedulerHealth,
    triggerer: TriggererHealth,
    dag_processor: DagProcessorHealth,
}

#[derive(Serialize, ToSchema)]
struct Status {
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
struct SchedulerHealth {
    status: &'static str,
    latest_scheduler_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
}

/// Updraft has no separate triggerer; Airflow reports `null` for components it does not run.
#[derive(Serialize, ToSchema)]
struct TriggererHealth {
    status: Option<&'static str>,
    latest_triggerer_heartbeat: Option<String>,
}

/// The DAG processor runs inside the scheduler, so it has no status of its own.
#[derive(Serialize, ToSchema)]
struct DagProcessorHealth {
    status: Option<&'static str>,
    latest_dag_processor_heartbeat: Option<String>,
}

/// When the scheduler last renewed a lease that expires at `expires` (its heartbeat).
pub(crate) fn last_renewal(
    expires: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    expires - chrono::Duration::from_std(LEASE_TTL).unwrap_or_default()
}

/// Always 200: an unreachable database is reported as unhealthy, not as a server error.
#[utoipa::path(get, path = "/monitor/health", tag = "Monitor", security(()),
    responses((status = 200, body = Health)))]
pub async fn get_health(State(state): State<AppState>) -> Json<Health> {
    // A running scheduler renews the `scheduler` lease every few seconds and releases it on
    // shutdown; an expiry in the past means it stopped renewing (crashed or hung).
    let (db, scheduler, heartbeat) = match state.store.lease_expires_at(LEASE_NAME).await {
        Ok(Some(expires)) if expires > chrono::Utc::now() => {
            ("healthy", "healthy", Some(last_renewal(expires)))
        }
        Ok(expires) => ("healthy", "unhealthy", expires.map(last_renewal)),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            ("unhealthy", "unhealthy", None)
        }
    };
    Json(Health {
        metadatabase: Status { status: db },
        scheduler: SchedulerHealth {
            status: scheduler,
            latest_scheduler_heartbeat: heartbeat,
        },
        triggerer: TriggererHealth {
            status: None,
            latest_triggerer_heartbeat: None,
        },
        dag_processor: DagProcessorHealth {
            status: None,
            latest_dag_processor_heartbeat: None,
        },
    })
}
