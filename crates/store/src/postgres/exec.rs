//! PostgreSQL side of the Task Execution API's store methods (see `crate::execution` for the
//! rules). Every write locks the task instance row first (`FOR UPDATE`), so a start, heartbeat
//! or report and a scheduler step on the same row are serialised.

use super::{PgStore, Sql, item, post, update_tis};
use crate::common::{self, Get, db_err};
use crate::execution::{self, StartDecision};
use crate::{
    InboxKind, RenderedFields, Result, TaskInstance, TaskReport, TryCheck, TryStart, TryStarted,
};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use updraft_core::TaskState;
use uuid::Uuid;

async fn row_by_id(
    st: Sql,
    conn: &mut PgConnection,
    ti_id: Uuid,
    lock: bool,
) -> Result<Option<TaskInstance>> {
    let sql = format!(
        "SELECT {} FROM task_instance WHERE id = $1{}",
        common::TI_COLS,
        if lock { " FOR UPDATE" } else { "" }
    );
    st.q(&sql)
        .bind(ti_id)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(common::task_instance)
        .transpose()
}

async fn reported(
    st: Sql,
    conn: &mut PgConnection,
    ti_id: Uuid,
    try_number: u32,
) -> Result<Option<TaskState>> {
    let s: Option<String> = st
        .qs("SELECT state FROM task_report WHERE ti_id = $1 AND try_number = $2")
        .bind(ti_id)
        .bind(try_number as i32)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    s.map(|s| common::task_state(&s)).transpose()
}

fn report_of(r: &PgRow) -> Result<TaskReport> {
    Ok(TaskReport {
        ti_id: r.uuid("ti_id")?,
        try_number: r.i32("try_number")?.max(0) as u32,
        run_pk: r.int("run_pk")?,
        state: common::task_state(&r.text("state")?)?,
        at: r.ts("at")?,
        reschedule_date: r.ts_opt("reschedule_date")?,
    })
}

impl PgStore {
    pub(super) async fn exec_get_ti(&self, ti_id: Uuid) -> Result<Option<TaskInstance>> {
        let st = self.st;
        read!(self, tx, { row_by_id(st, &mut tx, ti_id, false).await })
    }

    pub(super) async fn exec_start(&self, start: &TryStart) -> Result<Option<TryStarted>> {
        let st = self.st;
        let mut tx = self.begin().await?;
        let Some(row) = row_by_id(st, &mut tx, start.ti_id, true).await? else {
            return Ok(None);
        };
        let done = reported(st, &mut tx, start.ti_id, start.try_number).await?;
        let mut new = match execution::start(&row, start, done)? {
            StartDecision::Answer(a) => return Ok(Some(a)),
            StartDecision::Write(new) => new,
        };
        let stale = update_tis(st, &mut tx, std::slice::from_ref(&new)).await?;
        if !stale.is_empty() {
            return Err(common::stale_runs(stale));
        }
        post(
            st,
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
        let st = self.st;
        let mut tx = self.begin().await?;
        let Some(row) = row_by_id(st, &mut tx, ti_id, true).await? else {
            return Ok(None);
        };
        let done = reported(st, &mut tx, ti_id, try_number).await?;
        if !execution::runs_try(&row, try_number, done) {
            return Ok(Some(TryCheck::NotRunning {
                ti: Box::new(row),
                reported: done,
            }));
        }
        st.q("UPDATE task_instance SET last_heartbeat_at = $1 WHERE id = $2")
            .bind(at)
            .bind(ti_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        self.commit(tx, false).await?;
        Ok(Some(TryCheck::Done))
    }

    pub(super) async fn exec_report(&self, report: &TaskReport) -> Result<Option<TryCheck>> {
        execution::check_reported_state(report.state)?;
        let st = self.st;
        let mut tx = self.begin().await?;
        let Some(row) = row_by_id(st, &mut tx, report.ti_id, true).await? else {
            return Ok(None);
        };
        let done = reported(st, &mut tx, report.ti_id, report.try_number).await?;
        if let Some(answer) = execution::report(&row, report, done) {
            return Ok(Some(answer));
        }
        st.q(
            "INSERT INTO task_report (ti_id, try_number, run_pk, state, at, reschedule_date) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(report.ti_id)
        .bind(report.try_number as i32)
        .bind(row.run_pk)
        .bind(report.state.as_str())
        .bind(report.at)
        .bind(report.reschedule_date)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        post(
            st,
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
        let st = self.st;
        read!(self, tx, {
            st.q(
                "SELECT ti_id, try_number, run_pk, state, at, reschedule_date FROM task_report \
                 WHERE run_pk = ANY($1) ORDER BY at, ti_id",
            )
            .bind(run_pks)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(report_of)
            .collect()
        })
    }

    pub(super) async fn exec_set_rendered(&self, f: &RenderedFields) -> Result<()> {
        let st = self.st;
        read!(self, tx, {
            st.q(
                "INSERT INTO rendered_task_instance_fields (ti_id, try_number, rendered_fields) \
                 VALUES ($1, $2, $3) ON CONFLICT (ti_id, try_number) \
                 DO UPDATE SET rendered_fields = excluded.rendered_fields",
            )
            .bind(f.ti_id)
            .bind(f.try_number as i32)
            .bind(&f.fields)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }
}

/// Deletes applied reports inside `apply`'s transaction.
pub(super) async fn delete_reports(
    st: Sql,
    conn: &mut PgConnection,
    consumed: &[(Uuid, u32)],
) -> Result<()> {
    if consumed.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = consumed.iter().map(|c| c.0).collect();
    let tries: Vec<i32> = consumed.iter().map(|c| c.1 as i32).collect();
    st.q(
        "DELETE FROM task_report AS r USING UNNEST($1::uuid[], $2::int[]) AS c (ti_id, try_number) \
         WHERE r.ti_id = c.ti_id AND r.try_number = c.try_number",
    )
    .bind(&ids)
    .bind(&tries)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}
