//! SQLite side of the Task Execution API's store methods (see `crate::execution` for the rules).

use super::{SqliteStore, item, post, update_tis};
use crate::common::{self, Get, db_err, ts_text, ts_text_opt};
use crate::execution::{self, StartDecision};
use crate::{
    InboxKind, RenderedFields, Result, TaskInstance, TaskReport, TryCheck, TryStart, TryStarted,
};
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;
use updraft_core::TaskState;
use uuid::Uuid;

async fn row_by_id(conn: &mut SqliteConnection, ti_id: Uuid) -> Result<Option<TaskInstance>> {
    let sql = format!(
        "SELECT {} FROM task_instance WHERE id = $1",
        common::TI_COLS
    );
    sqlx::query(&sql)
        .bind(ti_id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(common::task_instance)
        .transpose()
}

async fn reported(
    conn: &mut SqliteConnection,
    ti_id: Uuid,
    try_number: u32,
) -> Result<Option<TaskState>> {
    let s: Option<String> =
        sqlx::query_scalar("SELECT state FROM task_report WHERE ti_id = $1 AND try_number = $2")
            .bind(ti_id.to_string())
            .bind(i64::from(try_number))
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
    s.map(|s| common::task_state(&s)).transpose()
}

fn report_of(r: &SqliteRow) -> Result<TaskReport> {
    Ok(TaskReport {
        ti_id: r.uuid("ti_id")?,
        try_number: r.i32("try_number")?.max(0) as u32,
        run_pk: r.int("run_pk")?,
        state: common::task_state(&r.text("state")?)?,
        at: r.ts("at")?,
        reschedule_date: r.ts_opt("reschedule_date")?,
    })
}

impl SqliteStore {
    pub(super) async fn exec_get_ti(&self, ti_id: Uuid) -> Result<Option<TaskInstance>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        row_by_id(&mut conn, ti_id).await
    }

    pub(super) async fn exec_start(&self, start: &TryStart) -> Result<Option<TryStarted>> {
        let mut tx = self.begin().await?;
        let Some(row) = row_by_id(&mut tx, start.ti_id).await? else {
            return Ok(None);
        };
        let done = reported(&mut tx, start.ti_id, start.try_number).await?;
        let mut new = match execution::start(&row, start, done)? {
            StartDecision::Answer(a) => return Ok(Some(a)),
            StartDecision::Write(new) => new,
        };
        let stale = update_tis(&mut tx, std::slice::from_ref(&new)).await?;
        if !stale.is_empty() {
            return Err(common::stale_runs(stale));
        }
        post(
            &mut tx,
            &item(InboxKind::RunChanged, &row.dag_id, Some(row.run_pk)),
        )
        .await?;
        self.commit(tx, true).await?;
        new.version += 1;
        Ok(Some(TryStarted::Started(new)))
    }

    pub(super) async fn exec_heartbeat(
        &self,
        ti_id: Uuid,
        try_number: u32,
        at: DateTime<Utc>,
    ) -> Result<Option<TryCheck>> {
        let mut tx = self.begin().await?;
        let Some(row) = row_by_id(&mut tx, ti_id).await? else {
            return Ok(None);
        };
        let done = reported(&mut tx, ti_id, try_number).await?;
        if !execution::runs_try(&row, try_number, done) {
            return Ok(Some(TryCheck::NotRunning {
                ti: Box::new(row),
                reported: done,
            }));
        }
        sqlx::query("UPDATE task_instance SET last_heartbeat_at = $1 WHERE id = $2")
            .bind(ts_text(at))
            .bind(ti_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        self.commit(tx, false).await?;
        Ok(Some(TryCheck::Done))
    }

    pub(super) async fn exec_report(&self, report: &TaskReport) -> Result<Option<TryCheck>> {
        execution::check_reported_state(report.state)?;
        let mut tx = self.begin().await?;
        let Some(row) = row_by_id(&mut tx, report.ti_id).await? else {
            return Ok(None);
        };
        let done = reported(&mut tx, report.ti_id, report.try_number).await?;
        if let Some(answer) = execution::report(&row, report, done) {
            return Ok(Some(answer));
        }
        sqlx::query(
            "INSERT INTO task_report (ti_id, try_number, run_pk, state, at, reschedule_date) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(report.ti_id.to_string())
        .bind(i64::from(report.try_number))
        .bind(row.run_pk)
        .bind(report.state.as_str())
        .bind(ts_text(report.at))
        .bind(ts_text_opt(report.reschedule_date))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        post(
            &mut tx,
            &item(InboxKind::RunChanged, &row.dag_id, Some(row.run_pk)),
        )
        .await?;
        self.commit(tx, true).await?;
        Ok(Some(TryCheck::Done))
    }

    pub(super) async fn exec_reports_of_runs(&self, run_pks: &[i64]) -> Result<Vec<TaskReport>> {
        if run_pks.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "SELECT ti_id, try_number, run_pk, state, at, reschedule_date FROM task_report \
             WHERE run_pk IN (SELECT value FROM json_each($1)) ORDER BY at, ti_id",
        )
        .bind(super::json_list(run_pks))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?
        .iter()
        .map(report_of)
        .collect()
    }

    pub(super) async fn exec_set_rendered(&self, f: &RenderedFields) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO rendered_task_instance_fields (ti_id, try_number, rendered_fields) \
             VALUES ($1, $2, $3) ON CONFLICT (ti_id, try_number) \
             DO UPDATE SET rendered_fields = excluded.rendered_fields",
        )
        .bind(f.ti_id.to_string())
        .bind(i64::from(f.try_number))
        .bind(f.fields.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        self.commit(tx, false).await
    }
}

/// Deletes applied reports inside `apply`'s transaction.
pub(super) async fn delete_reports(
    conn: &mut SqliteConnection,
    consumed: &[(Uuid, u32)],
) -> Result<()> {
    for (ti_id, try_number) in consumed {
        sqlx::query("DELETE FROM task_report WHERE ti_id = $1 AND try_number = $2")
            .bind(ti_id.to_string())
            .bind(i64::from(*try_number))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}
