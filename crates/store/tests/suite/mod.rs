//! The store conformance suite: every test is written once, against `dyn Store`, and
//! `store_test_suite!` instantiates it per backend (like quickwit's `metastore_test_suite!`).

pub mod execution;
pub mod harness;

pub use execution::*;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use harness::Harness;
use std::time::Duration;
use updraft_core::{DagSpec, Operator, RunState, RunType, TaskSpec, TaskState};
use updraft_store::{
    AuditEvent, Batch, Connection, DagRun, Error, ImportErrorInput, InboxItemInput, InboxKind,
    NewAuditEvent, NewRun, NewTaskInstance, NewUser, PastState, PoolUsage, RenderedFields,
    RunFilter, Store, TaskInstance, XCom,
};

/// Generates one `#[tokio::test]` per named suite function for a backend.
#[macro_export]
macro_rules! store_test_suite {
    ($backend:ident, $harness:expr; $($name:ident),+ $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = $harness.await else { return };
                    $crate::suite::$name(&h).await;
                    h.finish().await;
                }
            )+
        }
    };
    ($backend:ident, $harness:expr) => {
        $crate::store_test_suite!($backend, $harness;
            migrate_check_reset,
            upsert_dag_versions_and_flags,
            dags_deactivate_and_delete,
            import_errors,
            create_run_and_conflicts,
            list_runs_filters_and_order,
            apply_bumps_versions,
            apply_is_all_or_nothing_on_stale_rows,
            apply_history_rendered_and_xcom,
            apply_expands_a_mapped_task,
            heartbeat_survives_scheduler_write,
            past_task_state,
            set_task_state_checks_transitions,
            clear_tasks_resets_and_archives,
            set_run_state_and_delete_run,
            variables,
            pools,
            inbox_post_read_trim,
            inbox_waker_wakes_for_other_connection,
            leases,
            concurrent_writers_wait_for_each_other,
            concurrent_upserts_of_a_new_dag,
            dead_database_is_an_error,
            large_run,
            users,
            connections,
            audit_log,
            upgrade_from_migration_1,
            dag_pages_filter_order_and_count,
            dag_tags_run_counts_versions_and_code,
            event_pages_filter_and_order,
            pool_slot_usage_groups_by_pool_and_state,
            create_only_inserts_leave_existing_rows_alone,
            query_runs_filters_orders_and_pages,
            run_note_and_triggering_user,
            query_runs_by_duration,
            task_instance_queries_filter_order_and_page,
            task_instance_notes,
            xcom_queries_filter_and_page,
            xcom_create_update_delete,
            clear_task_instances_by_id,
            page_totals_at_the_edges,
            recent_runs_and_task_state_counts,
            task_cells_of_many_runs,
            revoked_sessions_expire,
            task_try_start_heartbeat_and_report,
            task_report_survives_a_stale_apply,
            rendered_fields_set_by_a_worker,
        );
    };
}

/// A timestamp with microseconds, which both backends must keep exactly.
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
        + ChronoDuration::seconds(secs)
        + ChronoDuration::microseconds(123_456)
}

pub fn dag(dag_id: &str, tasks: &[&str]) -> DagSpec {
    DagSpec::new(
        dag_id,
        tasks
            .iter()
            .map(|id| TaskSpec::new(*id, Operator::Empty))
            .collect(),
    )
}

pub fn new_run(
    dag_id: &str,
    run_id: &str,
    logical: Option<DateTime<Utc>>,
    tasks: &[&str],
) -> NewRun {
    NewRun {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
        run_type: RunType::Manual,
        logical_date: logical,
        data_interval_start: logical,
        data_interval_end: logical,
        run_after: logical.unwrap_or_else(|| t(0)),
        conf: serde_json::json!({"k": 1}),
        dag_version: 1,
        triggered_by: "test".into(),
        queued_at: t(1),
        note: None,
        triggering_user_name: None,
        tasks: tasks
            .iter()
            .map(|id| NewTaskInstance {
                task_id: (*id).into(),
                map_index: -1,
                max_tries: 1,
                pool: "default_pool".into(),
                pool_slots: 1,
                priority_weight: 1,
                queue: "default".into(),
                operator: "EmptyOperator".into(),
            })
            .collect(),
    }
}

/// A migrated store holding dag `d` with tasks a, b, c and one run `r1`.
pub(crate) async fn with_run(h: &Harness) -> (&dyn Store, DagRun, Vec<TaskInstance>) {
    let s = h.migrated().await.as_ref();
    s.upsert_dag(&dag("d", &["a", "b", "c"]), false)
        .await
        .unwrap();
    let run = s
        .create_run(new_run("d", "r1", Some(t(0)), &["a", "b", "c"]))
        .await
        .unwrap();
    let tis = s.list_task_instances("d", "r1").await.unwrap();
    (s, run, tis)
}

pub(crate) fn by_task<'a>(tis: &'a [TaskInstance], task_id: &str) -> &'a TaskInstance {
    tis.iter()
        .find(|t| t.task_id == task_id)
        .expect("task instance")
}

// ---- schema ---------------------------------------------------------------------------------

pub async fn migrate_check_reset(h: &Harness) {
    let s = &h.store;
    assert!(matches!(s.check().await, Err(Error::NotMigrated(_))));
    assert!(matches!(s.list_pools().await, Err(Error::NotMigrated(_))));
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    let status = s.check().await.unwrap();
    assert_eq!(status.backend, s.backend());
    assert_eq!(status.applied_migrations, status.latest_migration);
    assert!(status.latest_migration >= 2);

    s.set_variable("v", "1", None).await.unwrap();
    s.set_pool("p", 3, None).await.unwrap();
    s.create_user(&new_user("u", "admin")).await.unwrap();
    s.set_connection(&bare_connection("c", "http"))
        .await
        .unwrap();
    s.log_event(&event(t(0), "e")).await.unwrap();
    s.reset().await.unwrap();
    assert_eq!(s.get_variable("v").await.unwrap(), None);
    assert!(s.list_users().await.unwrap().is_empty());
    assert!(s.list_connections().await.unwrap().is_empty());
    assert_eq!(s.count_events().await.unwrap(), 0);
    let pools = s.list_pools().await.unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].name, "default_pool");
    s.check().await.unwrap();

    // two migrations at once (two processes running `db migrate`) both succeed
    let other = h.another().await;
    other.reset().await.unwrap();
    let (a, b) = tokio::join!(s.migrate(), other.migrate());
    a.unwrap();
    b.unwrap();
    s.check().await.unwrap();
}

// ---- DAGs -----------------------------------------------------------------------------------

pub async fn upsert_dag_versions_and_flags(h: &Harness) {
    let s = h.migrated().await;
    let spec = dag("d", &["a"]);
    let up = s.upsert_dag(&spec, true).await.unwrap();
    assert_eq!((up.version, up.changed, up.created), (1, true, true));
    let rec = s.get_dag("d").await.unwrap().unwrap();
    assert!(rec.is_paused, "paused_by_default applies to a new dag");
    assert!(rec.is_active);
    assert_eq!(rec.spec, spec);
    assert_eq!(rec.spec_hash, spec.content_hash());
    assert_eq!(rec.fileloc, "d.yaml");

    let up = s.upsert_dag(&spec, true).await.unwrap();
    assert_eq!((up.version, up.changed, up.created), (1, false, false));

    let mut spec2 = spec.clone();
    spec2.tasks.push(TaskSpec::new("b", Operator::Empty));
    let up = s.upsert_dag(&spec2, true).await.unwrap();
    assert_eq!((up.version, up.changed, up.created), (2, true, false));
    assert_eq!(s.get_dag("d").await.unwrap().unwrap().spec, spec2);
    assert_eq!(s.get_dag_version("d", 1).await.unwrap(), Some(spec.clone()));
    assert_eq!(s.get_dag_version("d", 2).await.unwrap(), Some(spec2));
    assert_eq!(s.get_dag_version("d", 3).await.unwrap(), None);

    // is_paused_upon_creation wins over the default; an update never re-pauses
    let mut e = dag("e", &["a"]);
    e.is_paused_upon_creation = Some(false);
    s.upsert_dag(&e, true).await.unwrap();
    assert!(!s.get_dag("e").await.unwrap().unwrap().is_paused);
    s.upsert_dag(&dag("f", &["a"]), false).await.unwrap();
    assert!(!s.get_dag("f").await.unwrap().unwrap().is_paused);

    s.set_paused("f", true).await.unwrap();
    assert!(s.get_dag("f").await.unwrap().unwrap().is_paused);
    s.upsert_dag(&dag("f", &["a", "z"]), false).await.unwrap();
    assert!(s.get_dag("f").await.unwrap().unwrap().is_paused);
    assert!(matches!(
        s.set_paused("nope", true).await,
        Err(Error::NotFound(_))
    ));
    let ids: Vec<String> = s
        .list_dags(false)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.dag_id)
        .collect();
    assert_eq!(ids, ["d", "e", "f"]);
    assert_eq!(s.get_dag("nope").await.unwrap(), None);
}

pub async fn dags_deactivate_and_delete(h: &Harness) {
    let s = h.migrated().await;
    let mut a = dag("a", &["t"]);
    a.fileloc = "one.yaml".into();
    let mut b = dag("b", &["t"]);
    b.fileloc = "one.yaml".into();
    let mut c = dag("c", &["t"]);
    c.fileloc = "two.yaml".into();
    for d in [&a, &b, &c] {
        s.upsert_dag(d, false).await.unwrap();
    }
    let gone = s
        .deactivate_missing_dags("one.yaml", &["a".into()])
        .await
        .unwrap();
    assert_eq!(gone, ["b"]);
    assert!(!s.get_dag("b").await.unwrap().unwrap().is_active);
    assert_eq!(s.list_dags(false).await.unwrap().len(), 2);
    assert_eq!(s.list_dags(true).await.unwrap().len(), 3);

    let gone = s
        .deactivate_dags_outside(&["one.yaml".into()])
        .await
        .unwrap();
    assert_eq!(gone, ["c"]);
    // parsing it again brings it back
    let up = s.upsert_dag(&c, false).await.unwrap();
    assert!(!up.changed);
    assert!(s.get_dag("c").await.unwrap().unwrap().is_active);

    // delete cascades to runs and task instances
    s.create_run(new_run("a", "r1", Some(t(0)), &["t"]))
        .await
        .unwrap();
    s.delete_dag("a").await.unwrap();
    assert_eq!(s.get_dag("a").await.unwrap(), None);
    assert_eq!(s.get_run("a", "r1").await.unwrap(), None);
    assert!(s.list_task_instances("a", "r1").await.unwrap().is_empty());
    assert!(matches!(s.delete_dag("a").await, Err(Error::NotFound(_))));
}

pub async fn import_errors(h: &Harness) {
    let s = h.migrated().await;
    let e1 = ImportErrorInput {
        line: Some(3),
        message: "bad key `x`".into(),
    };
    s.set_import_error("a.yaml", Some(&e1)).await.unwrap();
    s.set_import_error(
        "b.yaml",
        Some(&ImportErrorInput {
            line: None,
            message: "cycle".into(),
        }),
    )
    .await
    .unwrap();
    let e2 = ImportErrorInput {
        line: Some(4),
        message: "bad key `y`".into(),
    };
    s.set_import_error("a.yaml", Some(&e2)).await.unwrap();
    let errs = s.list_import_errors().await.unwrap();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].filename, "a.yaml");
    assert_eq!(
        (errs[0].line, errs[0].message.as_str()),
        (Some(4), "bad key `y`")
    );
    assert_eq!(errs[1].line, None);

    s.set_import_error("a.yaml", None).await.unwrap();
    assert_eq!(s.list_import_errors().await.unwrap().len(), 1);
    s.set_import_error("c.yaml", Some(&e1)).await.unwrap();
    s.retain_import_errors(&["c.yaml".into()]).await.unwrap();
    let errs = s.list_import_errors().await.unwrap();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].filename, "c.yaml");
}

// ---- runs -----------------------------------------------------------------------------------

pub async fn create_run_and_conflicts(h: &Harness) {
    let s = h.migrated().await;
    s.upsert_dag(&dag("d", &["a", "b"]), false).await.unwrap();
    let before = s.max_inbox_id().await.unwrap();
    let run = s
        .create_run(new_run("d", "r1", Some(t(0)), &["a", "b"]))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.logical_date, Some(t(0)));
    assert_eq!(run.queued_at, Some(t(1)));
    assert_eq!(run.conf, serde_json::json!({"k": 1}));
    assert_eq!(run.triggered_by, "test");
    assert_eq!(run.note, None);
    assert_eq!(s.get_run("d", "r1").await.unwrap(), Some(run.clone()));
    assert_eq!(s.get_run_by_id(run.id).await.unwrap(), Some(run.clone()));

    let tis = s.list_task_instances("d", "r1").await.unwrap();
    assert_eq!(tis.len(), 2);
    for ti in &tis {
        assert_eq!(ti.state, TaskState::None);
        assert_eq!((ti.try_number, ti.max_tries), (0, 1));
        assert_eq!(ti.run_pk, run.id);
        assert_eq!((ti.dag_id.as_str(), ti.run_id.as_str()), ("d", "r1"));
        assert_eq!(ti.map_index, -1);
        assert_eq!(ti.pool, "default_pool");
    }
    let got = s
        .get_task_instance("d", "r1", "b", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, by_task(&tis, "b"));

    let items = s.read_inbox(before, 100).await.unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.kind == InboxKind::RunCreated && i.run_pk == Some(run.id)),
        "create_run posts RunCreated: {items:?}"
    );

    let err = s
        .create_run(new_run("d", "r1", Some(t(10)), &["a"]))
        .await
        .unwrap_err();
    let Error::Conflict(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("`r1`") && msg.contains("`d`"), "{msg}");
    let err = s
        .create_run(new_run("d", "r2", Some(t(0)), &["a"]))
        .await
        .unwrap_err();
    let Error::Conflict(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("logical date"), "{msg}");
    // a failed create leaves nothing behind
    assert_eq!(s.get_run("d", "r2").await.unwrap(), None);

    // runs without a logical date never collide on it
    s.create_run(new_run("d", "m1", None, &["a"]))
        .await
        .unwrap();
    s.create_run(new_run("d", "m2", None, &["a"]))
        .await
        .unwrap();
    assert!(matches!(
        s.create_run(new_run("nope", "r", None, &["a"])).await,
        Err(Error::NotFound(_))
    ));

    // note and triggering user are written by the same insert as the run
    let mut noted = new_run("d", "n1", Some(t(500)), &["a"]);
    noted.note = Some("from the form".into());
    noted.triggering_user_name = Some("alice".into());
    let created = s.create_run(noted.clone()).await.unwrap();
    assert_eq!(created.note.as_deref(), Some("from the form"));
    assert_eq!(created.version, run.version);
    assert_eq!(s.get_run("d", "n1").await.unwrap(), Some(created.clone()));
    let users = |q: updraft_store::RunQuery| async move {
        let page = s.query_runs(&q).await.unwrap();
        page.items
            .into_iter()
            .map(|i| (i.run.run_id, i.triggering_user_name))
            .collect::<Vec<_>>()
    };
    let runs = users(updraft_store::RunQuery::default()).await;
    assert!(
        runs.contains(&("n1".into(), Some("alice".into()))),
        "{runs:?}"
    );
    assert!(runs.contains(&("r1".into(), None)), "{runs:?}");
    // a refused duplicate leaves the first run's note and user as they were
    noted.note = Some("other".into());
    noted.triggering_user_name = Some("mallory".into());
    assert!(matches!(s.create_run(noted).await, Err(Error::Conflict(_))));
    assert_eq!(s.get_run("d", "n1").await.unwrap(), Some(created));
    let runs = users(updraft_store::RunQuery::default()).await;
    assert!(
        runs.contains(&("n1".into(), Some("alice".into()))),
        "{runs:?}"
    );
}

pub async fn list_runs_filters_and_order(h: &Harness) {
    let s = h.migrated().await;
    s.upsert_dag(&dag("d", &["a"]), false).await.unwrap();
    s.upsert_dag(&dag("e", &["a"]), false).await.unwrap();
    for i in 0..4 {
        let mut r = new_run("d", &format!("r{i}"), Some(t(i * 100)), &["a"]);
        if i == 3 {
            r.run_type = RunType::Scheduled;
        }
        s.create_run(r).await.unwrap();
    }
    s.create_run(new_run("e", "x", Some(t(50)), &["a"]))
        .await
        .unwrap();
    s.set_run_state("d", "r0", RunState::Success).await.unwrap();
    s.set_run_state("d", "r1", RunState::Running).await.unwrap();

    let ids = |runs: Vec<DagRun>| -> Vec<String> { runs.into_iter().map(|r| r.run_id).collect() };
    let all = RunFilter {
        dag_id: Some("d".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_runs(&all).await.unwrap()),
        ["r0", "r1", "r2", "r3"]
    );
    let newest = RunFilter {
        newest_first: true,
        limit: Some(2),
        offset: Some(1),
        ..all.clone()
    };
    assert_eq!(ids(s.list_runs(&newest).await.unwrap()), ["r2", "r1"]);
    let states = RunFilter {
        states: vec![RunState::Success, RunState::Running],
        ..all.clone()
    };
    assert_eq!(ids(s.list_runs(&states).await.unwrap()), ["r0", "r1"]);
    let types = RunFilter {
        run_types: vec![RunType::Scheduled],
        ..all.clone()
    };
    assert_eq!(ids(s.list_runs(&types).await.unwrap()), ["r3"]);
    let dates = RunFilter {
        logical_date_gte: Some(t(100)),
        logical_date_lte: Some(t(200)),
        ..all.clone()
    };
    assert_eq!(ids(s.list_runs(&dates).await.unwrap()), ["r1", "r2"]);
    assert_eq!(s.list_runs(&RunFilter::default()).await.unwrap().len(), 5);

    let active = ids(s.active_runs().await.unwrap());
    assert_eq!(active, ["r1", "r2", "r3", "x"]);

    let latest = s.latest_run("d", &[]).await.unwrap().unwrap();
    assert_eq!(latest.run_id, "r3");
    let latest = s
        .latest_run("d", &[RunType::Manual])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.run_id, "r2");
    assert_eq!(s.latest_run("d", &[RunType::Backfill]).await.unwrap(), None);

    assert_eq!(
        s.previous_run("d", t(200)).await.unwrap().unwrap().run_id,
        "r1"
    );
    assert_eq!(s.previous_run("d", t(0)).await.unwrap(), None);

    let tis = s
        .task_instances_of_runs(&[
            s.get_run("d", "r0").await.unwrap().unwrap().id,
            s.get_run("e", "x").await.unwrap().unwrap().id,
        ])
        .await
        .unwrap();
    let mut got: Vec<(String, String)> = tis.into_iter().map(|t| (t.dag_id, t.run_id)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("d".to_string(), "r0".to_string()),
            ("e".into(), "x".into())
        ]
    );
    assert!(s.task_instances_of_runs(&[]).await.unwrap().is_empty());
}

// ---- apply ----------------------------------------------------------------------------------

pub async fn apply_bumps_versions(h: &Harness) {
    let (s, run, tis) = with_run(h).await;
    let mut a = by_task(&tis, "a").clone();
    a.state = TaskState::Running;
    a.try_number = 1;
    a.start_date = Some(t(5));
    a.queued_dttm = Some(t(4));
    a.scheduled_dttm = Some(t(3));
    a.hostname = Some("host-1".into());
    a.pid = Some(4242);
    a.pid_start_ticks = Some(99);
    a.priority_weight = 7;
    let mut r = run.clone();
    r.state = RunState::Running;
    r.start_date = Some(t(2));
    r.note = Some("note".into());
    s.apply(&Batch {
        task_instances: vec![a.clone()],
        runs: vec![r.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let got = s
        .get_task_instance("d", "r1", "a", -1)
        .await
        .unwrap()
        .unwrap();
    a.version += 1;
    assert_eq!(got, a);
    let got_run = s.get_run("d", "r1").await.unwrap().unwrap();
    r.version += 1;
    assert_eq!(got_run, r);

    // finishing the try with the new versions works again
    a.state = TaskState::Success;
    a.end_date = Some(t(9));
    a.duration = Some(4.0);
    s.apply(&Batch {
        task_instances: vec![a.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let got = s
        .get_task_instance("d", "r1", "a", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.version, a.version + 1);
    assert_eq!(got.end_date, Some(t(9)));
    assert_eq!(got.duration, Some(4.0));
    assert_eq!(
        s.task_instances_in_states(&[TaskState::Success])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.task_instances_in_states(&[TaskState::None, TaskState::Running])
            .await
            .unwrap()
            .len(),
        2
    );
    s.apply(&Batch::default()).await.unwrap();
}

pub async fn apply_is_all_or_nothing_on_stale_rows(h: &Harness) {
    let (s, run, tis) = with_run(h).await;
    // an outside write moves b's version
    s.set_task_state("d", "r1", "b", -1, TaskState::Success)
        .await
        .unwrap();
    let mut a = by_task(&tis, "a").clone();
    a.state = TaskState::Scheduled;
    let mut b = by_task(&tis, "b").clone();
    b.state = TaskState::Scheduled;
    let mut r = run.clone();
    r.state = RunState::Running;
    let mut c = by_task(&tis, "c").clone();
    c.state = TaskState::Scheduled;
    let err = s
        .apply(&Batch {
            task_instances: vec![a, b, c],
            runs: vec![r],
            history: vec![by_task(&tis, "a").clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let Error::Stale(runs) = err else {
        panic!("{err:?}")
    };
    assert_eq!(runs, [run.id]);
    // nothing of the batch was written
    let now = s.list_task_instances("d", "r1").await.unwrap();
    assert_eq!(by_task(&now, "a"), by_task(&tis, "a"));
    assert_eq!(by_task(&now, "c"), by_task(&tis, "c"));
    assert_eq!(by_task(&now, "b").state, TaskState::Success);
    assert_eq!(s.get_run("d", "r1").await.unwrap().unwrap(), run);
    assert!(
        s.task_instance_history("d", "r1", "a", -1)
            .await
            .unwrap()
            .is_empty()
    );

    // a stale run alone also fails the batch
    let mut stale_run = run.clone();
    stale_run.version -= 1;
    let err = s
        .apply(&Batch {
            runs: vec![stale_run],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stale(ids) if ids == [run.id]));
}

/// The scheduler expands a mapped task in a running run: its row becomes map index 0 and the
/// further instances are inserted in the same transaction, all or nothing.
pub async fn apply_expands_a_mapped_task(h: &Harness) {
    let (s, _run, tis) = with_run(h).await;
    let mut b0 = by_task(&tis, "b").clone();
    b0.map_index = 0;
    b0.state = TaskState::Scheduled;
    b0.scheduled_dttm = Some(t(1));
    let new: Vec<TaskInstance> = (1..3)
        .map(|i| TaskInstance {
            id: uuid::Uuid::now_v7(),
            map_index: i,
            version: 1,
            ..b0.clone()
        })
        .collect();
    s.apply(&Batch {
        new_task_instances: new.clone(),
        task_instances: [vec![b0.clone()], new.clone()].concat(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut got: Vec<TaskInstance> = s
        .list_task_instances("d", "r1")
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.task_id == "b")
        .collect();
    got.sort_by_key(|t| t.map_index);
    assert_eq!(
        got.iter().map(|t| t.map_index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(got[0].id, b0.id);
    assert_eq!(got[0].version, b0.version + 1);
    for (g, n) in got[1..].iter().zip(&new) {
        // inserted at version 1, then written once more by the same batch
        assert_eq!(
            g,
            &TaskInstance {
                version: 2,
                ..n.clone()
            }
        );
    }
    assert!(
        s.get_task_instance("d", "r1", "b", -1)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.get_task_instance("d", "r1", "b", 2)
            .await
            .unwrap()
            .unwrap()
            .id,
        new[1].id
    );

    // A clear of the task resets every instance.
    let cleared = s.clear_tasks("d", "r1", &["b".into()]).await.unwrap();
    assert_eq!(cleared.len(), 3);

    // An instance that exists already fails the batch, which writes nothing.
    let a = by_task(&tis, "a").clone();
    let mut a_moved = a.clone();
    a_moved.state = TaskState::Scheduled;
    let dup = TaskInstance {
        id: uuid::Uuid::now_v7(),
        map_index: 1,
        version: 1,
        ..b0.clone()
    };
    let err = s
        .apply(&Batch {
            new_task_instances: vec![dup],
            task_instances: vec![a_moved],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(
        s.get_task_instance("d", "r1", "a", -1)
            .await
            .unwrap()
            .unwrap(),
        a
    );

    // A stale row in the batch rolls the insert back too.
    let mut stale = got[0].clone();
    stale.state = TaskState::Queued;
    let extra = TaskInstance {
        id: uuid::Uuid::now_v7(),
        map_index: 3,
        version: 1,
        ..b0.clone()
    };
    let err = s
        .apply(&Batch {
            new_task_instances: vec![extra],
            task_instances: vec![stale],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stale(_)), "{err:?}");
    assert!(
        s.get_task_instance("d", "r1", "b", 3)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn apply_history_rendered_and_xcom(h: &Harness) {
    let (s, _run, tis) = with_run(h).await;
    let mut a = by_task(&tis, "a").clone();
    a.try_number = 1;
    a.state = TaskState::Failed;
    a.start_date = Some(t(1));
    a.end_date = Some(t(2));
    let xcom = |key: &str, value: serde_json::Value| XCom {
        ti_id: a.id,
        dag_id: "d".into(),
        run_id: "r1".into(),
        task_id: "a".into(),
        map_index: -1,
        key: key.into(),
        value,
        timestamp: t(3),
    };
    let mut next = a.clone();
    next.try_number = 2;
    next.state = TaskState::UpForRetry;
    s.apply(&Batch {
        task_instances: vec![next.clone()],
        history: vec![a.clone()],
        rendered: vec![RenderedFields {
            ti_id: a.id,
            try_number: 1,
            fields: serde_json::json!({"bash_command": "echo 1"}),
        }],
        xcoms: vec![
            xcom("return_value", serde_json::json!("out")),
            xcom("other", serde_json::json!({"n": [1, 2]})),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let hist = s.task_instance_history("d", "r1", "a", -1).await.unwrap();
    assert_eq!(hist, [a.clone()]);
    assert_eq!(
        s.get_rendered_fields(a.id, 1).await.unwrap(),
        Some(serde_json::json!({"bash_command": "echo 1"}))
    );
    assert_eq!(s.get_rendered_fields(a.id, 2).await.unwrap(), None);
    assert_eq!(
        s.get_xcom("d", "r1", "a", -1, "return_value")
            .await
            .unwrap(),
        Some(serde_json::json!("out"))
    );
    let all = s.list_xcoms("d", "r1").await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], xcom("other", serde_json::json!({"n": [1, 2]})));

    // the next try starts clean, then writes the same key again
    s.apply(&Batch {
        clear_xcoms_of: vec![a.id],
        xcoms: vec![xcom("return_value", serde_json::json!(2))],
        rendered: vec![RenderedFields {
            ti_id: a.id,
            try_number: 1,
            fields: serde_json::json!({"bash_command": "echo 2"}),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let all = s.list_xcoms("d", "r1").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].value, serde_json::json!(2));
    assert_eq!(s.get_xcom("d", "r1", "a", -1, "other").await.unwrap(), None);
    assert_eq!(
        s.get_rendered_fields(a.id, 1).await.unwrap(),
        Some(serde_json::json!({"bash_command": "echo 2"}))
    );
}

pub async fn heartbeat_survives_scheduler_write(h: &Harness) {
    let (s, _run, tis) = with_run(h).await;
    let mut a = by_task(&tis, "a").clone();
    a.state = TaskState::Running;
    a.try_number = 1;
    s.apply(&Batch {
        task_instances: vec![a.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    a.version += 1;
    s.heartbeat(&[a.id], t(30)).await.unwrap();
    let got = s
        .get_task_instance("d", "r1", "a", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.last_heartbeat_at, Some(t(30)));
    assert_eq!(got.version, a.version, "heartbeats do not bump versions");

    // the scheduler's cached row has no heartbeat: the stored one survives for the same try
    a.priority_weight = 5;
    s.apply(&Batch {
        task_instances: vec![a.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    a.version += 1;
    let got = s
        .get_task_instance("d", "r1", "a", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.last_heartbeat_at, Some(t(30)));
    assert_eq!(got.priority_weight, 5);

    // a new try takes the batch's value
    a.try_number = 2;
    a.last_heartbeat_at = None;
    s.apply(&Batch {
        task_instances: vec![a.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let got = s
        .get_task_instance("d", "r1", "a", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.last_heartbeat_at, None);
    s.heartbeat(&[], t(40)).await.unwrap();
}

pub async fn past_task_state(h: &Harness) {
    let s = h.migrated().await;
    s.upsert_dag(&dag("d", &["a", "b"]), false).await.unwrap();
    assert_eq!(
        s.past_task_state("d", "a", t(100)).await.unwrap(),
        PastState::NoPreviousRun
    );
    s.create_run(new_run("d", "r0", Some(t(0)), &["a"]))
        .await
        .unwrap();
    s.create_run(new_run("d", "r1", Some(t(50)), &["a"]))
        .await
        .unwrap();
    s.set_task_state("d", "r1", "a", -1, TaskState::Success)
        .await
        .unwrap();
    assert_eq!(
        s.past_task_state("d", "a", t(100)).await.unwrap(),
        PastState::State(TaskState::Success)
    );
    assert_eq!(
        s.past_task_state("d", "a", t(50)).await.unwrap(),
        PastState::State(TaskState::None)
    );
    assert_eq!(
        s.past_task_state("d", "b", t(100)).await.unwrap(),
        PastState::Missing
    );
    assert_eq!(
        s.past_task_state("d", "a", t(0)).await.unwrap(),
        PastState::NoPreviousRun
    );
}

// ---- outside writes -------------------------------------------------------------------------

pub async fn set_task_state_checks_transitions(h: &Harness) {
    let (s, run, tis) = with_run(h).await;
    let before = s.max_inbox_id().await.unwrap();
    let a = s
        .set_task_state("d", "r1", "a", -1, TaskState::Success)
        .await
        .unwrap();
    assert_eq!(a.state, TaskState::Success);
    assert!(a.end_date.is_some());
    assert_eq!(a.version, by_task(&tis, "a").version + 1);
    assert_eq!(
        s.get_task_instance("d", "r1", "a", -1).await.unwrap(),
        Some(a.clone())
    );
    let items = s.read_inbox(before, 10).await.unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.kind == InboxKind::RunChanged && i.run_pk == Some(run.id))
    );

    let err = s
        .set_task_state("d", "r1", "a", -1, TaskState::Running)
        .await
        .unwrap_err();
    let Error::Invalid(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("success -> running"), "{msg}");
    assert_eq!(
        s.get_task_instance("d", "r1", "a", -1).await.unwrap(),
        Some(a)
    );
    assert!(matches!(
        s.set_task_state("d", "r1", "zz", -1, TaskState::Success)
            .await,
        Err(Error::NotFound(_))
    ));
}

pub async fn clear_tasks_resets_and_archives(h: &Harness) {
    let (s, run, tis) = with_run(h).await;
    // a: failed after its only try; b: running; c: never ran
    let mut a = by_task(&tis, "a").clone();
    a.try_number = 1;
    a.state = TaskState::Failed;
    a.start_date = Some(t(1));
    a.end_date = Some(t(2));
    a.hostname = Some("h".into());
    let mut b = by_task(&tis, "b").clone();
    b.try_number = 1;
    b.state = TaskState::Running;
    b.start_date = Some(t(1));
    b.pid = Some(7);
    let mut r = run.clone();
    r.state = RunState::Failed;
    r.start_date = Some(t(1));
    r.end_date = Some(t(3));
    s.apply(&Batch {
        task_instances: vec![a.clone(), b.clone()],
        runs: vec![r],
        ..Default::default()
    })
    .await
    .unwrap();

    let cleared = s
        .clear_tasks("d", "r1", &["a".into(), "b".into()])
        .await
        .unwrap();
    assert_eq!(cleared.len(), 2);
    let ca = by_task(&cleared, "a");
    assert_eq!(ca.state, TaskState::None);
    assert_eq!(ca.try_number, 1);
    assert_eq!(ca.max_tries, 2, "max(1, try 1 + retries 1)");
    assert_eq!(
        (ca.start_date, ca.end_date, ca.hostname.clone()),
        (None, None, None)
    );
    let cb = by_task(&cleared, "b");
    assert_eq!(cb.state, TaskState::Restarting);
    assert_eq!(cb.pid, Some(7));
    let stored = s.list_task_instances("d", "r1").await.unwrap();
    assert_eq!(by_task(&stored, "a"), ca);
    assert_eq!(by_task(&stored, "b"), cb);
    assert_eq!(by_task(&stored, "c"), by_task(&tis, "c"));

    let mut archived = a.clone();
    archived.version += 1;
    assert_eq!(
        s.task_instance_history("d", "r1", "a", -1).await.unwrap(),
        [archived]
    );
    assert!(
        s.task_instance_history("d", "r1", "b", -1)
            .await
            .unwrap()
            .is_empty(),
        "a running try is archived when it ends, not when it is cleared"
    );
    let run_now = s.get_run("d", "r1").await.unwrap().unwrap();
    assert_eq!(run_now.state, RunState::Queued);
    assert_eq!((run_now.start_date, run_now.end_date), (None, None));
    assert_eq!(run_now.version, run.version + 2);

    // clearing again never lowers max_tries; an empty list clears the whole run
    let again = s.clear_tasks("d", "r1", &[]).await.unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(by_task(&again, "a").max_tries, 2);
    assert!(matches!(
        s.clear_tasks("d", "nope", &[]).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn set_run_state_and_delete_run(h: &Harness) {
    let (s, run, _tis) = with_run(h).await;
    let r = s.set_run_state("d", "r1", RunState::Running).await.unwrap();
    assert_eq!(r.state, RunState::Running);
    assert!(r.start_date.is_some());
    assert_eq!(r.version, run.version + 1);
    let r = s.set_run_state("d", "r1", RunState::Failed).await.unwrap();
    assert!(r.end_date.is_some());
    assert_eq!(s.get_run("d", "r1").await.unwrap(), Some(r));
    let err = s
        .set_run_state("d", "r1", RunState::Running)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Invalid(ref m) if m.contains("failed -> running")),
        "{err:?}"
    );

    let before = s.max_inbox_id().await.unwrap();
    s.delete_run("d", "r1").await.unwrap();
    assert_eq!(s.get_run("d", "r1").await.unwrap(), None);
    assert!(s.list_task_instances("d", "r1").await.unwrap().is_empty());
    assert!(
        s.task_instances_of_runs(&[run.id])
            .await
            .unwrap()
            .is_empty()
    );
    let items = s.read_inbox(before, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].run_pk, Some(run.id));
    assert!(matches!(
        s.delete_run("d", "r1").await,
        Err(Error::NotFound(_))
    ));
}

pub async fn variables(h: &Harness) {
    let s = h.migrated().await;
    assert_eq!(s.get_variable("k").await.unwrap(), None);
    s.set_variable("k", "v1", Some("d")).await.unwrap();
    s.set_variable("k", "v2", None).await.unwrap();
    s.set_variable("a", "{\"x\": 1}", None).await.unwrap();
    let v = s.get_variable("k").await.unwrap().unwrap();
    assert_eq!((v.value.as_str(), v.description), ("v2", None));
    let keys: Vec<String> = s
        .list_variables()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.key)
        .collect();
    assert_eq!(keys, ["a", "k"]);
    assert!(s.delete_variable("k").await.unwrap());
    assert!(!s.delete_variable("k").await.unwrap());
}

pub async fn pools(h: &Harness) {
    let s = h.migrated().await;
    let default = s.get_pool("default_pool").await.unwrap().unwrap();
    assert_eq!(default.slots, 128);
    let before = s.max_inbox_id().await.unwrap();
    s.set_pool("p", 4, Some("four")).await.unwrap();
    s.set_pool("p", 5, None).await.unwrap();
    s.set_pool("unlimited", -1, None).await.unwrap();
    let p = s.get_pool("p").await.unwrap().unwrap();
    assert_eq!((p.slots, p.description), (5, None));
    let names: Vec<String> = s
        .list_pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["default_pool", "p", "unlimited"]);
    let items = s.read_inbox(before, 10).await.unwrap();
    assert!(items.iter().all(|i| i.kind == InboxKind::PoolsChanged));
    assert_eq!(items.len(), 3);

    assert!(matches!(
        s.set_pool("bad", -2, None).await,
        Err(Error::Invalid(_))
    ));
    let err = s.delete_pool("default_pool").await.unwrap_err();
    assert!(matches!(err, Error::Invalid(ref m) if m.contains("default_pool")));
    assert!(s.get_pool("default_pool").await.unwrap().is_some());
    assert!(s.delete_pool("p").await.unwrap());
    assert!(!s.delete_pool("p").await.unwrap());
    // default_pool's size can change
    s.set_pool("default_pool", 16, None).await.unwrap();
    assert_eq!(s.get_pool("default_pool").await.unwrap().unwrap().slots, 16);
}

// ---- inbox and leases -----------------------------------------------------------------------

pub async fn inbox_post_read_trim(h: &Harness) {
    let s = h.migrated().await;
    assert_eq!(s.max_inbox_id().await.unwrap(), 0);
    for (kind, run_pk) in [
        (InboxKind::RunCreated, Some(1)),
        (InboxKind::RunChanged, Some(2)),
        (InboxKind::DagChanged, None),
    ] {
        s.post_inbox(&InboxItemInput {
            kind,
            dag_id: Some("d".into()),
            run_pk,
        })
        .await
        .unwrap();
    }
    let items = s.read_inbox(0, 10).await.unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(items[0].kind, InboxKind::RunCreated);
    assert_eq!(items[1].run_pk, Some(2));
    assert_eq!(items[2].dag_id.as_deref(), Some("d"));
    assert_eq!(s.max_inbox_id().await.unwrap(), items[2].id);
    assert_eq!(
        s.read_inbox(items[0].id, 1).await.unwrap(),
        [items[1].clone()]
    );
    s.trim_inbox(items[1].id).await.unwrap();
    assert_eq!(s.read_inbox(0, 10).await.unwrap(), [items[2].clone()]);
    // ids are never reused after a trim
    s.trim_inbox(items[2].id).await.unwrap();
    s.post_inbox(&InboxItemInput {
        kind: InboxKind::PoolsChanged,
        dag_id: None,
        run_pk: None,
    })
    .await
    .unwrap();
    assert!(s.max_inbox_id().await.unwrap() > items[2].id);
}

pub async fn inbox_waker_wakes_for_other_connection(h: &Harness) {
    let s = h.migrated().await;
    let mut waker = s.inbox_waker(Duration::from_millis(100)).await.unwrap();
    let item = InboxItemInput {
        kind: InboxKind::RunChanged,
        dag_id: Some("d".into()),
        run_pk: Some(1),
    };
    // a post from this store wakes without polling
    s.post_inbox(&item).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waker.recv())
        .await
        .expect("local post wakes the waker")
        .unwrap();
    while waker.try_recv().is_ok() {}
    // a post from another process (pool) wakes it through NOTIFY or polling
    let other = h.another().await;
    other.post_inbox(&item).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waker.recv())
        .await
        .expect("another connection's post wakes the waker")
        .unwrap();
}

/// PostgreSQL reached directly: NOTIFY wakes the waker long before its first poll.
pub async fn inbox_waker_listens(h: &Harness) {
    let s = h.migrated().await;
    let mut waker = s.inbox_waker(Duration::from_secs(3600)).await.unwrap();
    let other = h.another().await;
    // the listener subscribes in the background; post until it hears one
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            other
                .post_inbox(&InboxItemInput {
                    kind: InboxKind::DagChanged,
                    dag_id: None,
                    run_pk: None,
                })
                .await
                .unwrap();
            if tokio::time::timeout(Duration::from_millis(500), waker.recv())
                .await
                .is_ok()
            {
                return;
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "no NOTIFY reached the waker");
}

pub async fn leases(h: &Harness) {
    let s = h.migrated().await;
    let ttl = Duration::from_secs(10);
    assert!(s.acquire_lease("scheduler", "a", ttl, t(0)).await.unwrap());
    assert!(!s.acquire_lease("scheduler", "b", ttl, t(5)).await.unwrap());
    // the holder renews
    assert!(s.acquire_lease("scheduler", "a", ttl, t(8)).await.unwrap());
    assert!(!s.acquire_lease("scheduler", "b", ttl, t(15)).await.unwrap());
    // expired: another holder takes it
    assert!(s.acquire_lease("scheduler", "b", ttl, t(18)).await.unwrap());
    assert!(!s.acquire_lease("scheduler", "a", ttl, t(19)).await.unwrap());
    // other names are independent
    assert!(s.acquire_lease("other", "a", ttl, t(19)).await.unwrap());
    // releasing someone else's lease does nothing; releasing your own frees it
    s.release_lease("scheduler", "a").await.unwrap();
    assert!(!s.acquire_lease("scheduler", "a", ttl, t(20)).await.unwrap());
    s.release_lease("scheduler", "b").await.unwrap();
    assert!(s.acquire_lease("scheduler", "a", ttl, t(20)).await.unwrap());
    // the holder is visible, expired or not, so a dead holder can be recognised
    assert_eq!(
        s.lease_holder("scheduler").await.unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(s.lease_holder("nobody").await.unwrap(), None);
    assert_eq!(
        s.lease_expires_at("scheduler").await.unwrap(),
        Some(t(20) + chrono::Duration::seconds(10))
    );
    assert_eq!(s.lease_expires_at("nobody").await.unwrap(), None);
}

/// A scheduler starting and a CLI command parse the same new DAG at once: both succeed, and
/// the DAG exists once, at version 1.
pub async fn concurrent_upserts_of_a_new_dag(h: &Harness) {
    let s = h.migrated().await.clone();
    for round in 0..5 {
        let spec = dag(&format!("racy{round}"), &["a", "b"]);
        let others: Vec<updraft_store::DynStore> = vec![h.another().await, h.another().await];
        let mut tasks = Vec::new();
        for store in others {
            let spec = spec.clone();
            tasks.push(tokio::spawn(
                async move { store.upsert_dag(&spec, false).await },
            ));
        }
        for t in tasks {
            t.await.unwrap().expect("concurrent upsert succeeds");
        }
        let record = s.get_dag(&spec.dag_id).await.unwrap().unwrap();
        assert_eq!(record.version, 1);
    }
}

/// Two processes writing at once (CLI next to the scheduler): every write succeeds, none fails
/// with a busy or locked database.
pub async fn concurrent_writers_wait_for_each_other(h: &Harness) {
    let s = h.migrated().await.clone();
    let other = h.another().await;
    let write = |store: updraft_store::DynStore, who: &'static str| async move {
        for i in 0..40 {
            store
                .set_variable(&format!("{who}{i}"), "v", None)
                .await
                .unwrap();
            store
                .post_inbox(&InboxItemInput {
                    kind: InboxKind::PoolsChanged,
                    dag_id: None,
                    run_pk: None,
                })
                .await
                .unwrap();
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(write(s.clone(), "a")),
        tokio::spawn(write(other, "b"))
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(s.list_variables().await.unwrap().len(), 80);
    assert_eq!(s.read_inbox(0, 1000).await.unwrap().len(), 80);
}

pub async fn dead_database_is_an_error(h: &Harness) {
    match updraft_store::connect(h.dead_url()).await {
        Err(Error::Database(_)) => {}
        Err(e) => panic!("expected a database error, got {e:?}"),
        Ok(s) => {
            let err = s.list_pools().await.unwrap_err();
            assert!(matches!(err, Error::Database(_)), "{err:?}");
        }
    }
}

pub async fn large_run(h: &Harness) {
    let s = h.migrated().await;
    let ids: Vec<String> = (0..3000).map(|i| format!("task_{i:05}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    s.upsert_dag(&dag("big", &refs), false).await.unwrap();
    let run = s
        .create_run(new_run("big", "r1", Some(t(0)), &refs))
        .await
        .unwrap();
    let mut tis = s.task_instances_of_runs(&[run.id]).await.unwrap();
    assert_eq!(tis.len(), 3000);
    for ti in &mut tis {
        ti.state = TaskState::Scheduled;
        ti.scheduled_dttm = Some(t(1));
    }
    s.apply(&Batch {
        task_instances: tis.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let stored = s.list_task_instances("big", "r1").await.unwrap();
    assert!(stored.iter().all(|x| {
        x.state == TaskState::Scheduled && x.version == 2 && x.scheduled_dttm == Some(t(1))
    }));
    // replaying the same batch is stale as a whole
    assert!(matches!(
        s.apply(&Batch {
            task_instances: tis,
            ..Default::default()
        })
        .await,
        Err(Error::Stale(ids)) if ids == [run.id]
    ));
}

// ---- users, connections, audit log ----------------------------------------------------------

pub fn new_user(username: &str, role: &str) -> NewUser {
    NewUser {
        username: username.into(),
        password_hash: format!("$argon2id$v=19$hash-of-{username}"),
        role: role.into(),
        email: None,
        first_name: None,
        last_name: None,
    }
}

pub fn bare_connection(conn_id: &str, conn_type: &str) -> Connection {
    Connection {
        conn_id: conn_id.into(),
        conn_type: conn_type.into(),
        description: None,
        host: None,
        schema: None,
        login: None,
        password: None,
        port: None,
        extra: None,
        is_encrypted: false,
        is_extra_encrypted: false,
    }
}

pub fn event(at: DateTime<Utc>, name: &str) -> NewAuditEvent {
    NewAuditEvent {
        at,
        event: name.into(),
        owner: None,
        dag_id: None,
        run_id: None,
        task_id: None,
        map_index: None,
        try_number: None,
        extra: None,
    }
}

fn as_new(e: &AuditEvent) -> NewAuditEvent {
    NewAuditEvent {
        at: e.at,
        event: e.event.clone(),
        owner: e.owner.clone(),
        dag_id: e.dag_id.clone(),
        run_id: e.run_id.clone(),
        task_id: e.task_id.clone(),
        map_index: e.map_index,
        try_number: e.try_number,
        extra: e.extra.clone(),
    }
}

async fn usernames(s: &dyn Store) -> Vec<String> {
    s.list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect()
}

pub async fn users(h: &Harness) {
    let s = h.migrated().await.as_ref();
    assert!(s.list_users().await.unwrap().is_empty());
    assert_eq!(s.get_user("bob").await.unwrap(), None);

    let bob = NewUser {
        email: Some("bob@example.com".into()),
        first_name: Some("Bob".into()),
        last_name: Some("Builder".into()),
        ..new_user("bob", "op")
    };
    let before = Utc::now() - ChronoDuration::seconds(1);
    let created = s.create_user(&bob).await.unwrap();
    let after = Utc::now() + ChronoDuration::seconds(1);
    assert_eq!(created.username, "bob");
    assert_eq!(created.password_hash, bob.password_hash);
    assert_eq!(created.role, "op");
    assert_eq!(created.email.as_deref(), Some("bob@example.com"));
    assert_eq!(created.first_name.as_deref(), Some("Bob"));
    assert_eq!(created.last_name.as_deref(), Some("Builder"));
    assert!(created.active);
    assert_eq!(created.last_login, None);
    assert!(before <= created.created_at && created.created_at <= after);
    assert_eq!(created.created_at.timestamp_subsec_nanos() % 1000, 0);
    assert_eq!(s.get_user("bob").await.unwrap(), Some(created.clone()));
    assert!(
        !format!("{created:?}").contains(&bob.password_hash),
        "debug output hides the hash"
    );

    // a taken username is a conflict that leaves the stored user alone
    let again = NewUser {
        password_hash: "other".into(),
        ..new_user("bob", "viewer")
    };
    match s.create_user(&again).await {
        Err(Error::Conflict(m)) => assert_eq!(m, "user `bob` already exists"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(s.get_user("bob").await.unwrap(), Some(created.clone()));
    assert!(matches!(
        s.create_user(&new_user("", "viewer")).await,
        Err(Error::Invalid(_))
    ));

    let carol = s.create_user(&new_user("carol", "viewer")).await.unwrap();
    let alice = s.create_user(&new_user("alice", "user")).await.unwrap();
    assert_eq!(
        (alice.email, alice.first_name, alice.last_name),
        (None, None, None)
    );
    assert_ne!(carol.id, created.id);
    assert_eq!(usernames(s).await, ["alice", "bob", "carol"]);

    s.set_user_password("bob", "new-hash").await.unwrap();
    s.set_user_role("bob", "admin").await.unwrap();
    let b = s.get_user("bob").await.unwrap().unwrap();
    assert_eq!(
        (b.password_hash.as_str(), b.role.as_str()),
        ("new-hash", "admin")
    );
    assert_eq!(
        (b.id, b.created_at, b.email),
        (created.id, created.created_at, created.email)
    );
    // the others are untouched
    assert_eq!(s.get_user("carol").await.unwrap(), Some(carol.clone()));

    // deactivating keeps everything else; reactivating restores the user as it was
    s.set_user_active("carol", false).await.unwrap();
    let inactive = s.get_user("carol").await.unwrap().unwrap();
    assert!(!inactive.active);
    assert_eq!(
        (inactive.id, &inactive.role, &inactive.password_hash),
        (carol.id, &carol.role, &carol.password_hash)
    );
    assert!(
        s.list_users()
            .await
            .unwrap()
            .iter()
            .any(|u| u.username == "carol" && !u.active)
    );
    assert!(s.get_user("bob").await.unwrap().unwrap().active);
    s.set_user_active("carol", true).await.unwrap();
    assert_eq!(s.get_user("carol").await.unwrap(), Some(carol.clone()));

    // login times are kept to the microsecond; a later login replaces an earlier one
    s.record_login("bob", t(5) + ChronoDuration::nanoseconds(789))
        .await
        .unwrap();
    assert_eq!(
        s.get_user("bob").await.unwrap().unwrap().last_login,
        Some(t(5))
    );
    s.record_login("bob", t(9)).await.unwrap();
    assert_eq!(
        s.get_user("bob").await.unwrap().unwrap().last_login,
        Some(t(9))
    );
    assert_eq!(s.get_user("carol").await.unwrap().unwrap().last_login, None);

    for result in [
        s.set_user_password("nobody", "h").await,
        s.set_user_role("nobody", "admin").await,
        s.set_user_active("nobody", false).await,
        s.record_login("nobody", t(1)).await,
    ] {
        match result {
            Err(Error::NotFound(m)) => assert_eq!(m, "user `nobody`"),
            other => panic!("expected not found, got {other:?}"),
        }
    }
    assert_eq!(s.get_user("nobody").await.unwrap(), None);

    assert!(s.delete_user("bob").await.unwrap());
    assert!(!s.delete_user("bob").await.unwrap());
    assert_eq!(s.get_user("bob").await.unwrap(), None);
    assert_eq!(usernames(s).await, ["alice", "carol"]);
    // the name is free again, for a new user with a new id
    let bob2 = s.create_user(&new_user("bob", "viewer")).await.unwrap();
    assert_ne!(bob2.id, created.id);
    assert_eq!(bob2.last_login, None);
    assert_eq!(usernames(s).await, ["alice", "bob", "carol"]);
}

pub async fn connections(h: &Harness) {
    let s = h.migrated().await;
    assert_eq!(s.get_connection("pg_main").await.unwrap(), None);
    assert!(s.list_connections().await.unwrap().is_empty());

    let full = Connection {
        conn_id: "pg_main".into(),
        conn_type: "postgres".into(),
        description: Some("the main database".into()),
        host: Some("db.example.com".into()),
        schema: Some("warehouse".into()),
        login: Some("etl".into()),
        password: Some("gAAAAB-ciphertext".into()),
        port: Some(5432),
        extra: Some(r#"{"sslmode": "require"}"#.into()),
        is_encrypted: true,
        is_extra_encrypted: true,
    };
    let bare = bare_connection("a_http", "http");
    s.set_connection(&full).await.unwrap();
    s.set_connection(&bare).await.unwrap();
    assert_eq!(
        s.get_connection("pg_main").await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        s.get_connection("a_http").await.unwrap(),
        Some(bare.clone())
    );
    assert_eq!(
        s.list_connections().await.unwrap(),
        [bare.clone(), full.clone()],
        "ordered by conn_id"
    );
    let shown = format!("{full:?}");
    assert!(!shown.contains("ciphertext") && !shown.contains("sslmode"));

    // a replace writes every field, clearing what the new value leaves out
    let cleared = bare_connection("pg_main", "generic");
    s.set_connection(&cleared).await.unwrap();
    assert_eq!(
        s.get_connection("pg_main").await.unwrap(),
        Some(cleared.clone())
    );
    let filled = Connection {
        conn_id: "a_http".into(),
        conn_type: "http".into(),
        port: Some(-1),
        password: Some("plain".into()),
        is_encrypted: false,
        ..full.clone()
    };
    s.set_connection(&filled).await.unwrap();
    assert_eq!(
        s.get_connection("a_http").await.unwrap(),
        Some(filled.clone())
    );
    assert_eq!(s.list_connections().await.unwrap(), [filled, cleared]);

    assert!(matches!(
        s.set_connection(&bare_connection("", "http")).await,
        Err(Error::Invalid(_))
    ));
    assert!(s.delete_connection("pg_main").await.unwrap());
    assert!(!s.delete_connection("pg_main").await.unwrap());
    assert_eq!(s.get_connection("pg_main").await.unwrap(), None);
    let left: Vec<String> = s
        .list_connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.conn_id)
        .collect();
    assert_eq!(left, ["a_http"]);
}

pub async fn audit_log(h: &Harness) {
    let s = h.migrated().await;
    assert_eq!(s.count_events().await.unwrap(), 0);
    assert!(s.list_events(10, 0).await.unwrap().is_empty());

    let full = NewAuditEvent {
        at: t(20),
        event: "clear_task_instances".into(),
        owner: Some("bob".into()),
        dag_id: Some("d".into()),
        run_id: Some("r1".into()),
        task_id: Some("a".into()),
        map_index: Some(3),
        try_number: Some(2),
        extra: Some(r#"{"dry_run": false}"#.into()),
    };
    // written out of time order, with a tie at t(20) and a time finer than microseconds
    let written = [
        event(t(10), "first"),
        event(t(30) + ChronoDuration::nanoseconds(999), "last"),
        full.clone(),
        event(t(20), "tie_written_later"),
        event(t(0), "oldest"),
    ];
    for e in &written {
        s.log_event(e).await.unwrap();
    }
    assert_eq!(s.count_events().await.unwrap(), 5);

    let all = s.list_events(100, 0).await.unwrap();
    let names: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    // newest first; of two events at the same time, the one written later comes first
    assert_eq!(
        names,
        [
            "last",
            "tie_written_later",
            "clear_task_instances",
            "first",
            "oldest"
        ]
    );
    assert_eq!(all[0].at, t(30), "kept to the microsecond");
    assert_eq!(as_new(&all[2]), full);
    assert_eq!(as_new(&all[4]), event(t(0), "oldest"));
    let mut ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5);

    // pages put together give the whole list
    let mut paged = Vec::new();
    for offset in [0, 2, 4] {
        let page = s.list_events(2, offset).await.unwrap();
        assert_eq!(page.len(), if offset == 4 { 1 } else { 2 });
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(s.list_events(10, 5).await.unwrap().is_empty());
    assert!(s.list_events(0, 0).await.unwrap().is_empty());
    assert!(matches!(s.list_events(-1, 0).await, Err(Error::Invalid(_))));
    assert!(matches!(
        s.list_events(10, -1).await,
        Err(Error::Invalid(_))
    ));
}

/// A database last migrated by a binary that knew only migration 1 upgrades in place.
pub async fn upgrade_from_migration_1(h: &Harness) {
    let s = h.migrated().await;
    let latest = s.check().await.unwrap().latest_migration;
    s.set_variable("kept", "1", None).await.unwrap();
    s.upsert_dag(&dag("d", &["a"]), false).await.unwrap();
    let mut limited = dag("limited", &["a", "b"]);
    limited.tasks[1].max_active_tis_per_dag = Some(1);
    s.upsert_dag(&limited, false).await.unwrap();
    h.raw_sql(
        "DROP TABLE dag_code; DROP TABLE task_instance_note; \
         DROP TABLE log; DROP TABLE connection; DROP TABLE ab_user; \
         ALTER TABLE dag_run DROP COLUMN triggering_user_name; \
         ALTER TABLE dag_version DROP COLUMN summary; \
         ALTER TABLE dag_version DROP COLUMN has_task_concurrency_limits; \
         DELETE FROM updraft_schema_migration WHERE version >= 2",
    )
    .await;
    match s.check().await {
        Err(Error::NotMigrated(m)) => assert!(m.contains(&format!("1 of {latest}")), "{m}"),
        other => panic!("expected not migrated, got {other:?}"),
    }
    assert!(matches!(s.list_users().await, Err(Error::NotMigrated(_))));

    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    let status = s.check().await.unwrap();
    assert_eq!(
        (status.applied_migrations, status.latest_migration),
        (latest, latest)
    );
    // what migration 1 held is still there, and the new tables work
    assert_eq!(s.get_variable("kept").await.unwrap().unwrap().value, "1");
    assert!(s.get_dag("d").await.unwrap().is_some());
    // the listing columns of existing versions were filled from their specs
    let page = s
        .list_dags_page(&updraft_store::DagFilter::default())
        .await
        .unwrap();
    assert_eq!(page_ids(&page), ["d", "limited"]);
    assert!(page.dags.iter().all(|d| d.dag.spec.tasks.is_empty()));
    assert_eq!(page.dags[1].dag.spec.dag_id, "limited");
    assert!(!page.dags[0].has_task_concurrency_limits);
    assert!(page.dags[1].has_task_concurrency_limits);
    s.create_user(&new_user("admin", "admin")).await.unwrap();
    s.set_connection(&bare_connection("c", "http"))
        .await
        .unwrap();
    s.log_event(&event(t(0), "upgraded")).await.unwrap();
    assert_eq!(usernames(s.as_ref()).await, ["admin"]);
    assert_eq!(s.list_connections().await.unwrap().len(), 1);
    assert_eq!(s.count_events().await.unwrap(), 1);
}

// ---- pool usage (REST API) ------------------------------------------------------------------

pub async fn create_only_inserts_leave_existing_rows_alone(h: &Harness) {
    let s = h.migrated().await.as_ref();
    assert!(s.create_variable("k", "v1", Some("d")).await.unwrap());
    assert!(!s.create_variable("k", "v2", None).await.unwrap());
    let v = s.get_variable("k").await.unwrap().unwrap();
    assert_eq!(
        (v.value.as_str(), v.description.as_deref()),
        ("v1", Some("d"))
    );

    let mut c = bare_connection("c", "http");
    c.password = Some("first".into());
    assert!(s.create_connection(&c).await.unwrap());
    c.password = Some("second".into());
    assert!(!s.create_connection(&c).await.unwrap());
    let got = s.get_connection("c").await.unwrap().unwrap();
    assert_eq!(got.password.as_deref(), Some("first"));
    assert!(matches!(
        s.create_connection(&bare_connection("", "http")).await,
        Err(Error::Invalid(_))
    ));

    let before = s.max_inbox_id().await.unwrap();
    assert!(s.create_pool("p", 3, Some("three")).await.unwrap());
    assert!(!s.create_pool("p", 9, None).await.unwrap());
    assert!(!s.create_pool("default_pool", 1, None).await.unwrap());
    let p = s.get_pool("p").await.unwrap().unwrap();
    assert_eq!((p.slots, p.description.as_deref()), (3, Some("three")));
    assert_eq!(
        s.get_pool("default_pool").await.unwrap().unwrap().slots,
        128
    );
    // Only the pool that was created is news for the scheduler.
    let items = s.read_inbox(before, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].kind, InboxKind::PoolsChanged);
    assert!(matches!(
        s.create_pool("bad", -2, None).await,
        Err(Error::Invalid(_))
    ));
}

pub async fn pool_slot_usage_groups_by_pool_and_state(h: &Harness) {
    let s = h.migrated().await.as_ref();
    assert_eq!(s.pool_slot_usage().await.unwrap(), vec![]);
    s.upsert_dag(&dag("d", &["a", "b", "c", "e", "f"]), false)
        .await
        .unwrap();
    let mut run = new_run("d", "r1", Some(t(0)), &["a", "b", "c", "e", "f"]);
    for (ti, (pool, slots)) in run.tasks.iter_mut().zip([
        ("default_pool", 2),
        ("default_pool", 3),
        ("p", 4),
        ("p", 1),
        ("p", 7),
    ]) {
        ti.pool = pool.into();
        ti.pool_slots = slots;
    }
    s.create_run(run).await.unwrap();
    let tis = s.list_task_instances("d", "r1").await.unwrap();
    let states = [
        ("a", TaskState::Running),
        ("b", TaskState::Queued),
        ("c", TaskState::Scheduled),
        ("e", TaskState::Deferred),
        // `f` stays in state none: it holds nothing.
    ];
    let changed = states
        .iter()
        .map(|(task, state)| {
            let mut ti = by_task(&tis, task).clone();
            ti.state = *state;
            ti
        })
        .collect();
    s.apply(&Batch {
        task_instances: changed,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.pool_slot_usage().await.unwrap(),
        vec![
            PoolUsage {
                pool: "default_pool".into(),
                running: 2,
                queued: 3,
                scheduled: 0,
                deferred: 0,
            },
            PoolUsage {
                pool: "p".into(),
                running: 0,
                queued: 0,
                scheduled: 4,
                deferred: 1,
            },
        ]
    );
}

// ---- DAG run listings and annotations (API) -------------------------------------------------

pub async fn query_runs_filters_orders_and_pages(h: &Harness) {
    use updraft_store::{Bounds, RunQuery, RunSortKey};
    let s = h.migrated().await.as_ref();
    s.upsert_dag(&dag("d", &["a"]), false).await.unwrap();
    s.upsert_dag(&dag("etl", &["a"]), false).await.unwrap();
    let mut by_alice = new_run("d", "r1", Some(t(0)), &["a"]);
    by_alice.triggering_user_name = Some("Alice".into());
    s.create_run(by_alice).await.unwrap();
    s.create_run(new_run("d", "r2", Some(t(100)), &["a"]))
        .await
        .unwrap();
    let mut no_date = new_run("d", "r3", None, &["a"]);
    no_date.run_after = t(50);
    s.create_run(no_date).await.unwrap();
    let mut scheduled = new_run("etl", "x1", Some(t(200)), &["a"]);
    scheduled.run_type = RunType::Scheduled;
    s.create_run(scheduled).await.unwrap();
    s.set_run_state("d", "r2", RunState::Running).await.unwrap();
    s.set_run_state("d", "r2", RunState::Success).await.unwrap();

    let ids = |q: RunQuery| async move {
        let page = s.query_runs(&q).await.unwrap();
        let ids: Vec<String> = page.items.iter().map(|r| r.run.run_id.clone()).collect();
        (ids, page.total)
    };
    let all = RunQuery::default();
    assert_eq!(
        ids(all.clone()).await,
        (vec!["r1".into(), "r2".into(), "r3".into(), "x1".into()], 4)
    );
    let page = s.query_runs(&all).await.unwrap();
    assert_eq!(page.items[0].triggering_user_name.as_deref(), Some("Alice"));
    assert_eq!(page.items[1].triggering_user_name, None);
    assert_eq!(page.items[1].run.state, RunState::Success);
    assert_eq!(page.items[0].run.conf, serde_json::json!({"k": 1}));

    let q = RunQuery {
        dag_ids: vec!["d".into()],
        ..all.clone()
    };
    assert_eq!(ids(q).await.1, 3);
    let q = RunQuery {
        run_ids: vec!["r3".into(), "x1".into()],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r3", "x1"]);
    let q = RunQuery {
        states: vec![RunState::Success],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r2"]);
    let q = RunQuery {
        states: vec![RunState::Queued, RunState::Failed],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r1", "r3", "x1"]);
    let q = RunQuery {
        run_types: vec![RunType::Scheduled],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["x1"]);
    // A missing logical date is outside every range.
    let q = RunQuery {
        logical_date: Bounds {
            gte: Some(t(100)),
            ..Bounds::default()
        },
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r2", "x1"]);
    let q = RunQuery {
        logical_date: Bounds {
            gt: Some(t(100)),
            ..Bounds::default()
        },
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["x1"]);
    let q = RunQuery {
        run_after: Bounds {
            lt: Some(t(100)),
            ..Bounds::default()
        },
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r1", "r3"]);
    let q = RunQuery {
        run_after: Bounds {
            lte: Some(t(100)),
            gte: Some(t(50)),
            ..Bounds::default()
        },
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r2", "r3"]);
    let q = RunQuery {
        start_date: Bounds {
            gte: Some(t(0)),
            ..Bounds::default()
        },
        end_date: Bounds {
            lte: Some(Utc::now() + ChronoDuration::hours(1)),
            ..Bounds::default()
        },
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r2"]);

    // Patterns are case-insensitive LIKEs; any of several may match.
    let q = RunQuery {
        run_id_like: vec!["%R_%".into()],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r1", "r2", "r3"]);
    let q = RunQuery {
        run_id_like: vec!["%1".into(), "%3%".into()],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r1", "r3", "x1"]);
    let q = RunQuery {
        dag_id_like: vec!["%T%".into()],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["x1"]);
    let q = RunQuery {
        run_id_like: vec!["%\\_%".into()],
        ..all.clone()
    };
    assert_eq!(ids(q).await.1, 0, "an escaped `_` matches only itself");
    let q = RunQuery {
        triggering_user_like: vec!["%ali%".into()],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r1"]);

    // NULLs sort first ascending, last descending, on both backends.
    let q = RunQuery {
        order_by: vec![(RunSortKey::LogicalDate, false)],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r3", "r1", "r2", "x1"]);
    let q = RunQuery {
        order_by: vec![(RunSortKey::LogicalDate, true)],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["x1", "r2", "r1", "r3"]);
    let q = RunQuery {
        order_by: vec![(RunSortKey::State, true), (RunSortKey::RunAfter, true)],
        ..all.clone()
    };
    assert_eq!(ids(q).await.0, ["r2", "x1", "r3", "r1"]);

    // Paging counts every match.
    let q = RunQuery {
        limit: Some(2),
        offset: Some(1),
        ..all.clone()
    };
    assert_eq!(ids(q).await, (vec!["r2".into(), "r3".into()], 4));
    let q = RunQuery {
        limit: Some(2),
        offset: Some(10),
        ..all.clone()
    };
    assert_eq!(ids(q).await, (vec![], 4));
}

pub async fn run_note_and_triggering_user(h: &Harness) {
    let (s, run, _) = with_run(h).await;
    let before = s.max_inbox_id().await.unwrap();
    let noted = s
        .set_run_note("d", "r1", Some("looked at it"))
        .await
        .unwrap();
    assert_eq!(noted.note.as_deref(), Some("looked at it"));
    assert_eq!(noted.version, run.version + 1);
    let stored = s.get_run("d", "r1").await.unwrap().unwrap();
    assert_eq!(stored, noted);
    let items = s.read_inbox(before, 10).await.unwrap();
    assert!(
        items
            .iter()
            .any(|i| i.kind == InboxKind::RunChanged && i.run_pk == Some(run.id)),
        "{items:?}"
    );
    // A scheduler write from before the note is refused instead of erasing it.
    let stale = Batch {
        runs: vec![run.clone()],
        ..Batch::default()
    };
    assert!(matches!(s.apply(&stale).await, Err(Error::Stale(_))));
    let cleared = s.set_run_note("d", "r1", None).await.unwrap();
    assert_eq!(cleared.note, None);
    assert_eq!(s.get_run("d", "r1").await.unwrap().unwrap().note, None);
    assert!(matches!(
        s.set_run_note("d", "nope", Some("x")).await,
        Err(Error::NotFound(_))
    ));
    // with_run's run names nobody.
    let page = s
        .query_runs(&updraft_store::RunQuery::default())
        .await
        .unwrap();
    assert_eq!(page.items[0].triggering_user_name, None);
}

// ---- API listings: DAG pages, tags, run counts, versions, sources, event log -----------------

fn tagged(dag_id: &str, tags: &[&str], owner: &str) -> DagSpec {
    let mut spec = dag(dag_id, &["a"]);
    spec.tags = tags.iter().map(|t| t.to_string()).collect();
    spec.owner = owner.into();
    spec
}

fn page_ids(page: &updraft_store::DagPage) -> Vec<&str> {
    page.dags.iter().map(|d| d.dag.dag_id.as_str()).collect()
}

pub async fn dag_pages_filter_order_and_count(h: &Harness) {
    use updraft_store::{DagFilter, DagSortKey};
    let s = h.migrated().await.as_ref();
    s.upsert_dag(&tagged("alpha", &["etl", "daily"], "ann"), false)
        .await
        .unwrap();
    s.upsert_dag(&tagged("beta_report", &["report"], " bob , ann "), true)
        .await
        .unwrap();
    s.upsert_dag(&tagged("gamma", &["etl"], "carl"), false)
        .await
        .unwrap();
    let mut delta = tagged("Delta_50%", &[], "annette");
    delta.tasks[0].max_active_tis_per_dag = Some(2);
    s.upsert_dag(&delta, false).await.unwrap();
    s.deactivate_missing_dags("gamma.yaml", &[]).await.unwrap();
    s.set_import_error(
        "alpha.yaml",
        Some(&ImportErrorInput {
            line: Some(1),
            message: "broken".into(),
        }),
    )
    .await
    .unwrap();
    let page = |f: DagFilter| async move { s.list_dags_page(&f).await.unwrap() };

    let all = page(DagFilter::default()).await;
    assert_eq!(page_ids(&all), ["Delta_50%", "alpha", "beta_report"]);
    assert_eq!(all.total, 3);
    assert!(all.dags[0].has_task_concurrency_limits);
    assert_eq!(all.dags[0].dag.spec.owner, "annette");
    let alpha = &all.dags[1];
    assert!(alpha.has_import_errors);
    assert!(!all.dags[2].has_import_errors);
    assert_eq!(alpha.dag.spec.tags, ["etl", "daily"]);
    assert!(alpha.last_scheduled_run.is_none());
    // a listing carries DAG-level fields only
    assert!(alpha.dag.spec.tasks.is_empty());
    assert!(!alpha.has_task_concurrency_limits);

    let stale = page(DagFilter {
        include_stale: true,
        ..DagFilter::default()
    })
    .await;
    assert_eq!(stale.total, 4);
    // paging keeps the total of the whole selection
    let second = page(DagFilter {
        include_stale: true,
        limit: 2,
        offset: 1,
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&second), ["alpha", "beta_report"]);
    assert_eq!(second.total, 4);
    let desc = page(DagFilter {
        order_by: vec![(DagSortKey::DagId, true)],
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&desc), ["beta_report", "alpha", "Delta_50%"]);

    // patterns: case-insensitive, any alternative, `\` escapes a wildcard
    let like = |p: &[&str]| DagFilter {
        include_stale: true,
        dag_id_like: p.iter().map(|p| p.to_string()).collect(),
        ..DagFilter::default()
    };
    assert_eq!(page_ids(&page(like(&["%ALPHA%"])).await), ["alpha"]);
    assert_eq!(
        page_ids(&page(like(&["%alp%", "%gam%"])).await),
        ["alpha", "gamma"]
    );
    assert_eq!(page_ids(&page(like(&["%50\\%%"])).await), ["Delta_50%"]);
    // both pattern lists must match
    let both = page(DagFilter {
        display_name_like: vec!["%a\\_%".into()],
        ..like(&["%ta%", "%alpha%"])
    })
    .await;
    assert_eq!(page_ids(&both), ["Delta_50%", "beta_report"]);
    assert!(page(like(&["%a\\%l%"])).await.dags.is_empty());

    let tags = |t: &[&str], all: bool| DagFilter {
        include_stale: true,
        tags: t.iter().map(|t| t.to_string()).collect(),
        tags_match_all: all,
        ..DagFilter::default()
    };
    assert_eq!(
        page_ids(&page(tags(&["etl", "report"], false)).await),
        ["alpha", "beta_report", "gamma"]
    );
    assert_eq!(
        page_ids(&page(tags(&["etl", "daily"], true)).await),
        ["alpha"]
    );
    // A full page of a filtered selection: the total counts the filter's DAGs, with the
    // filter's parameters bound once for both the page and its count.
    let first = page(DagFilter {
        limit: 1,
        offset: 1,
        ..tags(&["etl", "report"], false)
    })
    .await;
    assert_eq!((page_ids(&first), first.total), (vec!["beta_report"], 3));
    assert_eq!(
        page_ids(&page(tags(&["etl", "etl"], true)).await),
        ["alpha", "gamma"]
    );

    // owners are whole names out of the comma-separated list
    let owners = page(DagFilter {
        owners: vec!["ann".into()],
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&owners), ["alpha", "beta_report"]);
    let bob = page(DagFilter {
        owners: vec!["bob".into(), "nobody".into()],
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&bob), ["beta_report"]);

    let paused = page(DagFilter {
        paused: Some(true),
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&paused), ["beta_report"]);
    let clean = page(DagFilter {
        has_import_errors: Some(false),
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&clean), ["Delta_50%", "beta_report"]);
    let named = page(DagFilter {
        dag_ids: vec!["gamma".into(), "alpha".into()],
        include_stale: true,
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&named), ["alpha", "gamma"]);

    // the latest run decides the last-run state; the latest scheduled run is returned
    s.create_run(new_run("alpha", "r1", Some(t(0)), &["a"]))
        .await
        .unwrap();
    s.set_run_state("alpha", "r1", RunState::Failed)
        .await
        .unwrap();
    let mut sched = new_run("alpha", "scheduled__1", Some(t(100)), &["a"]);
    sched.run_type = RunType::Scheduled;
    sched.data_interval_end = Some(t(200));
    sched.run_after = t(200);
    s.create_run(sched).await.unwrap();
    s.create_run(new_run("beta_report", "r1", Some(t(0)), &["a"]))
        .await
        .unwrap();
    s.set_run_state("beta_report", "r1", RunState::Failed)
        .await
        .unwrap();
    let failed = page(DagFilter {
        last_run_state: Some(RunState::Failed),
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&failed), ["beta_report"]);
    let by_state = page(DagFilter {
        order_by: vec![(DagSortKey::LastRunState, true)],
        ..DagFilter::default()
    })
    .await;
    assert_eq!(page_ids(&by_state), ["alpha", "beta_report", "Delta_50%"]);
    let listed = page(DagFilter {
        dag_ids: vec!["alpha".into()],
        ..DagFilter::default()
    })
    .await;
    let last = listed.dags[0].last_scheduled_run.unwrap();
    assert_eq!(last.logical_date, Some(t(100)));
    assert_eq!(last.data_interval_end, Some(t(200)));
    assert_eq!(last.run_after, t(200));

    assert!(matches!(
        s.list_dags_page(&DagFilter {
            limit: -1,
            ..DagFilter::default()
        })
        .await,
        Err(Error::Invalid(_))
    ));
}

pub async fn dag_tags_run_counts_versions_and_code(h: &Harness) {
    use updraft_store::DagCode;
    let s = h.migrated().await.as_ref();
    s.upsert_dag(&tagged("alpha", &["etl", "daily"], "ann"), false)
        .await
        .unwrap();
    s.upsert_dag(&tagged("beta", &["etl", "Reports"], "ann"), false)
        .await
        .unwrap();

    let (tags, total) = s.list_dag_tags(&[], false, 10, 0).await.unwrap();
    assert_eq!(tags, ["Reports", "daily", "etl"]);
    assert_eq!(total, 3);
    let (tags, total) = s.list_dag_tags(&[], true, 1, 1).await.unwrap();
    assert_eq!((tags, total), (vec!["daily".to_string()], 3));
    let (tags, total) = s
        .list_dag_tags(&["%REP%".into(), "%ail%".into()], false, 10, 0)
        .await
        .unwrap();
    assert_eq!((tags, total), (vec!["Reports".into(), "daily".into()], 2));

    // versions
    let mut v2 = tagged("alpha", &["etl"], "ann");
    v2.description = Some("second".into());
    s.upsert_dag(&v2, false).await.unwrap();
    let versions = s.list_dag_versions("alpha").await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(versions.iter().all(|v| v.dag_id == "alpha"));
    assert!(s.list_dag_versions("nope").await.unwrap().is_empty());

    // sources per version, replaced on a second write
    let code = |version: i64, source: &str| DagCode {
        dag_id: "alpha".into(),
        version,
        fileloc: "alpha.yaml".into(),
        source: source.into(),
    };
    s.set_dag_code(&code(1, "one")).await.unwrap();
    s.set_dag_code(&code(2, "two")).await.unwrap();
    s.set_dag_code(&code(2, "two again")).await.unwrap();
    assert_eq!(
        s.get_dag_code("alpha", 1).await.unwrap().unwrap().source,
        "one"
    );
    assert_eq!(
        s.get_dag_code("alpha", 2).await.unwrap(),
        Some(code(2, "two again"))
    );
    assert_eq!(s.get_dag_code("alpha", 3).await.unwrap(), None);
    assert!(matches!(
        s.set_dag_code(&code(9, "x")).await,
        Err(Error::NotFound(_))
    ));

    // runs per DAG and state
    for (dag_id, run_id, secs) in [("alpha", "r1", 0), ("alpha", "r2", 10), ("beta", "r1", 0)] {
        s.create_run(new_run(dag_id, run_id, Some(t(secs)), &["a"]))
            .await
            .unwrap();
    }
    s.set_run_state("alpha", "r2", RunState::Success)
        .await
        .unwrap();
    let counts = |c: Vec<updraft_store::RunCount>| {
        c.into_iter()
            .map(|c| (c.dag_id, c.state, c.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(s.count_runs_by_state(&[]).await.unwrap()),
        [
            ("alpha".to_string(), RunState::Queued, 1),
            ("alpha".to_string(), RunState::Success, 1),
            ("beta".to_string(), RunState::Queued, 1),
        ]
    );
    assert_eq!(
        counts(s.count_runs_by_state(&["beta".into()]).await.unwrap()),
        [("beta".to_string(), RunState::Queued, 1)]
    );
    // deleting the DAG takes its versions and sources along
    s.delete_dag("alpha").await.unwrap();
    assert!(s.list_dag_versions("alpha").await.unwrap().is_empty());
    assert_eq!(s.get_dag_code("alpha", 2).await.unwrap(), None);
}

pub async fn event_pages_filter_and_order(h: &Harness) {
    use updraft_store::{EventFilter, EventSortKey};
    let s = h.migrated().await.as_ref();
    let mut e1 = event(t(0), "patch_dag");
    e1.owner = Some("ann".into());
    e1.dag_id = Some("alpha".into());
    let mut e2 = event(t(10), "trigger_dag_run");
    e2.owner = Some("bob".into());
    e2.dag_id = Some("alpha".into());
    e2.run_id = Some("manual__1".into());
    let mut e3 = event(t(20), "clear_task_instances");
    e3.owner = Some("ann".into());
    e3.dag_id = Some("beta".into());
    e3.task_id = Some("extract".into());
    e3.map_index = Some(2);
    e3.try_number = Some(1);
    for e in [&e1, &e2, &e3] {
        s.log_event(e).await.unwrap();
    }
    let names = |f: EventFilter| async move {
        let page = s.query_events(&f).await.unwrap();
        (
            page.events.into_iter().map(|e| e.event).collect::<Vec<_>>(),
            page.total,
        )
    };
    let all = names(EventFilter::default()).await;
    assert_eq!(
        all,
        (
            vec![
                "patch_dag".to_string(),
                "trigger_dag_run".into(),
                "clear_task_instances".into()
            ],
            3
        )
    );
    let newest = names(EventFilter {
        order_by: vec![(EventSortKey::When, true)],
        limit: 1,
        ..EventFilter::default()
    })
    .await;
    assert_eq!(newest, (vec!["clear_task_instances".to_string()], 3));
    let by_owner = names(EventFilter {
        order_by: vec![(EventSortKey::Owner, false), (EventSortKey::When, true)],
        ..EventFilter::default()
    })
    .await;
    assert_eq!(
        by_owner.0,
        ["clear_task_instances", "patch_dag", "trigger_dag_run"]
    );
    let f = |f: EventFilter| f;
    let cases: Vec<(EventFilter, Vec<&str>)> = vec![
        (
            f(EventFilter {
                dag_id: Some("alpha".into()),
                ..EventFilter::default()
            }),
            vec!["patch_dag", "trigger_dag_run"],
        ),
        (
            f(EventFilter {
                owner: Some("ann".into()),
                task_id: Some("extract".into()),
                map_index: Some(2),
                try_number: Some(1),
                ..EventFilter::default()
            }),
            vec!["clear_task_instances"],
        ),
        (
            f(EventFilter {
                run_id: Some("manual__1".into()),
                ..EventFilter::default()
            }),
            vec!["trigger_dag_run"],
        ),
        (
            f(EventFilter {
                event: Some("patch_dag".into()),
                ..EventFilter::default()
            }),
            vec!["patch_dag"],
        ),
        (
            f(EventFilter {
                included_events: vec!["patch_dag".into(), "trigger_dag_run".into()],
                excluded_events: vec!["trigger_dag_run".into()],
                ..EventFilter::default()
            }),
            vec!["patch_dag"],
        ),
        (
            f(EventFilter {
                after: Some(t(0)),
                before: Some(t(20)),
                ..EventFilter::default()
            }),
            vec!["trigger_dag_run"],
        ),
        (
            f(EventFilter {
                event_like: vec!["%DAG%".into()],
                owner_like: vec!["%o%".into()],
                ..EventFilter::default()
            }),
            vec!["trigger_dag_run"],
        ),
        (
            f(EventFilter {
                dag_id_like: vec!["%et%".into()],
                task_id_like: vec!["%tract".into()],
                ..EventFilter::default()
            }),
            vec!["clear_task_instances"],
        ),
        (
            f(EventFilter {
                run_id_like: vec!["manual%".into()],
                ..EventFilter::default()
            }),
            vec!["trigger_dag_run"],
        ),
    ];
    for (filter, expected) in cases {
        let (got, total) = names(filter.clone()).await;
        assert_eq!(got, expected, "{filter:?}");
        assert_eq!(total, expected.len() as i64);
    }

    let first = s
        .query_events(&EventFilter::default())
        .await
        .unwrap()
        .events[0]
        .clone();
    assert_eq!(s.get_event(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(s.get_event(first.id + 1000).await.unwrap(), None);
    assert!(matches!(
        s.query_events(&EventFilter {
            offset: -1,
            ..EventFilter::default()
        })
        .await,
        Err(Error::Invalid(_))
    ));
}

// ---- task instance listings, notes and XCom queries (API) ------------------------------------

fn ti_keys(page: &updraft_store::TaskInstancePage) -> Vec<(String, String)> {
    page.items
        .iter()
        .map(|r| (r.ti.run_id.clone(), r.ti.task_id.clone()))
        .collect()
}

pub async fn task_instance_queries_filter_order_and_page(h: &Harness) {
    use updraft_store::{Bounds, TaskInstanceFilter, TiSortKey};
    let (s, r1, tis) = with_run(h).await;
    s.upsert_dag(&dag("e", &["a", "x"]), false).await.unwrap();
    let r2 = s
        .create_run(new_run("d", "r2", Some(t(100)), &["a", "b", "c"]))
        .await
        .unwrap();
    s.create_run(new_run("e", "r1", Some(t(50)), &["a", "x"]))
        .await
        .unwrap();
    // r1: a succeeded (ran 10s), b failed (ran 2.5s), c has no state; r2 all none.
    let mut a = by_task(&tis, "a").clone();
    a.state = TaskState::Success;
    a.try_number = 1;
    a.start_date = Some(t(10));
    a.end_date = Some(t(20));
    a.duration = Some(10.0);
    let mut b = by_task(&tis, "b").clone();
    b.state = TaskState::Failed;
    b.try_number = 2;
    b.start_date = Some(t(30));
    b.duration = Some(2.5);
    b.pool = "other_pool".into();
    s.apply(&Batch {
        task_instances: vec![a.clone(), b.clone()],
        ..Default::default()
    })
    .await
    .unwrap();

    let one_run = |extra: TaskInstanceFilter| TaskInstanceFilter {
        dag_ids: vec!["d".into()],
        run_ids: vec!["r1".into()],
        ..extra
    };
    // One run, default natural order, total counted.
    let page = s
        .query_task_instances(&one_run(TaskInstanceFilter::default()))
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(
        page.items
            .iter()
            .map(|r| r.ti.task_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(page.items[0].logical_date, r1.logical_date);
    assert_eq!(page.items[0].run_after, r1.run_after);
    assert_eq!(page.items[0].dag_version, 1);
    assert_eq!(page.items[0].ti.state, TaskState::Success);
    assert_eq!(page.items[0].ti.version, a.version + 1);
    let stored = s.list_dag_versions("d").await.unwrap();
    let v1 = stored.iter().find(|v| v.version == 1).unwrap();
    assert!(
        page.items
            .iter()
            .all(|r| r.dag_version_created_at == v1.created_at)
    );

    // States, including no state.
    let page = s
        .query_task_instances(&one_run(TaskInstanceFilter {
            states: vec![TaskState::None, TaskState::Failed],
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        ti_keys(&page),
        [("r1".into(), "b".into()), ("r1".into(), "c".into())]
    );

    // Ranges on the instance and on the run; pool; try number.
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            duration: Bounds {
                gt: Some(2.5),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ti_keys(&page), [("r1".into(), "a".into())]);
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            start_date: Bounds {
                gte: Some(t(10)),
                lt: Some(t(30)),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ti_keys(&page), [("r1".into(), "a".into())]);
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            dag_ids: vec!["d".into()],
            logical_date: Bounds {
                gte: Some(t(100)),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    assert!(page.items.iter().all(|r| r.ti.run_pk == r2.id));
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            pools: vec!["other_pool".into()],
            try_numbers: vec![2],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ti_keys(&page), [("r1".into(), "b".into())]);

    // Across DAGs and runs: patterns (case-insensitive, alternatives), run ids, ordering, pages.
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            run_ids: vec!["r1".into()],
            task_id_like: vec!["%A%".into(), "%x%".into()],
            order_by: vec![(TiSortKey::DagId, true)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.items
            .iter()
            .map(|r| (r.ti.dag_id.as_str(), r.ti.task_id.as_str()))
            .collect::<Vec<_>>(),
        [("e", "a"), ("e", "x"), ("d", "a")]
    );
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            dag_id_like: vec!["%d%".into()],
            order_by: vec![(TiSortKey::Duration, true), (TiSortKey::RunAfter, true)],
            limit: Some(2),
            offset: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 6);
    // durations: a 10, b 2.5, then the rest (NULL) newest run first
    assert_eq!(
        ti_keys(&page),
        [("r1".into(), "b".into()), ("r2".into(), "a".into())]
    );
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            run_id_like: vec!["r\\_".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 0, "an escaped `_` matches only itself");
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            map_indexes: vec![0],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 0);

    // The DAG version of the run.
    for (versions, total) in [(vec![1], 6), (vec![2, 3], 0)] {
        let page = s
            .query_task_instances(&TaskInstanceFilter {
                dag_ids: vec!["d".into()],
                dag_versions: versions,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.total, total);
    }

    // Expanded instances of a mapped task.
    let mut mapped = new_run("e", "m1", Some(t(200)), &["m", "m", "x"]);
    mapped.tasks[0].map_index = 0;
    mapped.tasks[1].map_index = 1;
    s.create_run(mapped).await.unwrap();
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            mapped_only: true,
            order_by: vec![(TiSortKey::MapIndex, true)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.items
            .iter()
            .map(|r| (r.ti.task_id.as_str(), r.ti.map_index))
            .collect::<Vec<_>>(),
        [("m", 1), ("m", 0)]
    );
}

pub async fn task_instance_notes(h: &Harness) {
    use updraft_store::TaskInstanceFilter;
    let (s, _run, tis) = with_run(h).await;
    let a = by_task(&tis, "a");
    assert_eq!(s.get_task_instance_note(a.id).await.unwrap(), None);
    s.set_task_instance_note(a.id, Some("first"), Some("ann"))
        .await
        .unwrap();
    s.set_task_instance_note(a.id, Some("second"), Some("bob"))
        .await
        .unwrap();
    assert_eq!(
        s.get_task_instance_note(a.id).await.unwrap().as_deref(),
        Some("second")
    );
    let page = s
        .query_task_instances(&TaskInstanceFilter {
            task_ids: vec!["a".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items[0].note.as_deref(), Some("second"));
    // A scheduler write of the instance leaves the note alone.
    let mut moved = a.clone();
    moved.state = TaskState::Scheduled;
    s.apply(&Batch {
        task_instances: vec![moved],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_task_instance_note(a.id).await.unwrap().as_deref(),
        Some("second")
    );
    s.set_task_instance_note(a.id, None, None).await.unwrap();
    assert_eq!(s.get_task_instance_note(a.id).await.unwrap(), None);
    assert!(matches!(
        s.set_task_instance_note(uuid::Uuid::nil(), Some("x"), None)
            .await,
        Err(Error::NotFound(_))
    ));
}

pub async fn xcom_queries_filter_and_page(h: &Harness) {
    use updraft_store::{Bounds, XComFilter};
    let (s, r1, tis) = with_run(h).await;
    s.create_run(new_run("d", "r2", Some(t(100)), &["a", "b", "c"]))
        .await
        .unwrap();
    let r2_tis = s.list_task_instances("d", "r2").await.unwrap();
    let xcom = |ti: &TaskInstance, key: &str, value: serde_json::Value| XCom {
        ti_id: ti.id,
        dag_id: ti.dag_id.clone(),
        run_id: ti.run_id.clone(),
        task_id: ti.task_id.clone(),
        map_index: ti.map_index,
        key: key.into(),
        value,
        timestamp: t(5),
    };
    s.apply(&Batch {
        xcoms: vec![
            xcom(by_task(&tis, "a"), "return_value", serde_json::json!(1)),
            xcom(by_task(&tis, "a"), "Other_Key", serde_json::json!({"n": 1})),
            xcom(by_task(&tis, "b"), "return_value", serde_json::json!("b")),
            xcom(by_task(&r2_tis, "a"), "return_value", serde_json::json!(2)),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let all = s.query_xcoms(&XComFilter::default()).await.unwrap();
    assert_eq!(all.total, 4);
    assert_eq!(
        all.items
            .iter()
            .map(|r| (
                r.xcom.run_id.as_str(),
                r.xcom.task_id.as_str(),
                r.xcom.key.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("r1", "a", "Other_Key"),
            ("r1", "a", "return_value"),
            ("r1", "b", "return_value"),
            ("r2", "a", "return_value")
        ]
    );
    assert_eq!(all.items[0].logical_date, r1.logical_date);
    assert_eq!(all.items[0].xcom.value, serde_json::json!({"n": 1}));
    let one = s
        .query_xcoms(&XComFilter {
            dag_id: Some("d".into()),
            run_id: Some("r1".into()),
            task_id: Some("a".into()),
            key: Some("return_value".into()),
            map_index: Some(-1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one.total, 1);
    assert_eq!(one.items[0].xcom.value, serde_json::json!(1));
    let like = s
        .query_xcoms(&XComFilter {
            key_like: vec!["%other%".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(like.total, 1);
    let later = s
        .query_xcoms(&XComFilter {
            logical_date: Bounds {
                gt: Some(t(0)),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(later.total, 1);
    assert_eq!(later.items[0].xcom.run_id, "r2");
    let paged = s
        .query_xcoms(&XComFilter {
            limit: Some(2),
            offset: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(paged.total, 4);
    assert_eq!(paged.items.len(), 2);
    assert_eq!(paged.items[0].xcom.task_id, "b");
}

pub async fn query_runs_by_duration(h: &Harness) {
    use updraft_store::{Bounds, RunQuery, RunSortKey};
    let s = h.migrated().await.as_ref();
    s.upsert_dag(&dag("d", &["a"]), false).await.unwrap();
    let mut runs = Vec::new();
    for (id, at, secs) in [("r1", 0, Some(10)), ("r2", 1, Some(100)), ("r3", 2, None)] {
        let mut run = s
            .create_run(new_run("d", id, Some(t(at)), &["a"]))
            .await
            .unwrap();
        run.state = RunState::Running;
        run.start_date = Some(t(1000));
        run.end_date = secs.map(|d| t(1000 + d));
        runs.push(run);
    }
    s.apply(&Batch {
        runs,
        ..Batch::default()
    })
    .await
    .unwrap();
    let ids = |q: RunQuery| async move {
        let page = s.query_runs(&q).await.unwrap();
        page.items
            .iter()
            .map(|r| r.run.run_id.clone())
            .collect::<Vec<_>>()
    };
    let q = RunQuery {
        duration: Bounds {
            gte: Some(50.0),
            ..Bounds::default()
        },
        ..RunQuery::default()
    };
    assert_eq!(ids(q).await, ["r2"]);
    let q = RunQuery {
        duration: Bounds {
            gt: Some(9.5),
            lte: Some(100.0),
            ..Bounds::default()
        },
        ..RunQuery::default()
    };
    assert_eq!(ids(q).await, ["r1", "r2"]);
    let q = RunQuery {
        duration: Bounds {
            lt: Some(10.5),
            ..Bounds::default()
        },
        ..RunQuery::default()
    };
    assert_eq!(ids(q).await, ["r1"], "a run without an end has no duration");
    let q = RunQuery {
        order_by: vec![(RunSortKey::Duration, true)],
        ..RunQuery::default()
    };
    assert_eq!(ids(q).await, ["r2", "r1", "r3"]);
    let q = RunQuery {
        order_by: vec![(RunSortKey::Duration, false)],
        ..RunQuery::default()
    };
    assert_eq!(ids(q).await, ["r3", "r1", "r2"]);
}

pub async fn xcom_create_update_delete(h: &Harness) {
    let (s, _run, tis) = with_run(h).await;
    let a = by_task(&tis, "a");
    let x = XCom {
        ti_id: a.id,
        dag_id: "d".into(),
        run_id: "r1".into(),
        task_id: "a".into(),
        map_index: -1,
        key: "k".into(),
        value: serde_json::json!({"v": [1, "two"]}),
        timestamp: t(7),
    };
    s.create_xcom(&x).await.unwrap();
    assert!(matches!(s.create_xcom(&x).await, Err(Error::Conflict(_))));
    assert_eq!(
        s.get_xcom("d", "r1", "a", -1, "k").await.unwrap(),
        Some(x.value.clone())
    );
    assert!(
        s.update_xcom(a.id, "k", &serde_json::json!("new"), t(8))
            .await
            .unwrap()
    );
    let all = s.list_xcoms("d", "r1").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].value, serde_json::json!("new"));
    assert_eq!(all[0].timestamp, t(8));
    assert!(
        !s.update_xcom(a.id, "other", &serde_json::json!(1), t(8))
            .await
            .unwrap()
    );
    assert!(s.delete_xcom(a.id, "k").await.unwrap());
    assert!(!s.delete_xcom(a.id, "k").await.unwrap());
    assert_eq!(s.get_xcom("d", "r1", "a", -1, "k").await.unwrap(), None);
}

pub async fn clear_task_instances_by_id(h: &Harness) {
    let (s, _run, tis) = with_run(h).await;
    let mut a = by_task(&tis, "a").clone();
    a.state = TaskState::Failed;
    a.try_number = 1;
    let mut b = by_task(&tis, "b").clone();
    b.state = TaskState::Success;
    b.try_number = 1;
    s.apply(&Batch {
        task_instances: vec![a.clone(), b.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let other = s
        .create_run(new_run("d", "r2", Some(t(100)), &["a", "b", "c"]))
        .await
        .unwrap();
    let other_a = s
        .get_task_instance("d", "r2", "a", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.state, RunState::Queued);

    assert!(
        s.clear_task_instances("d", "r1", &[])
            .await
            .unwrap()
            .is_empty()
    );
    let cleared = s
        .clear_task_instances("d", "r1", &[a.id, other_a.id])
        .await
        .unwrap();
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].id, a.id);
    assert_eq!(cleared[0].state, TaskState::None);
    let now_a = s
        .get_task_instance("d", "r1", "a", -1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now_a, cleared[0]);
    assert_eq!(
        s.get_task_instance("d", "r1", "b", -1)
            .await
            .unwrap()
            .unwrap()
            .state,
        TaskState::Success
    );
    let hist = s.task_instance_history("d", "r1", "a", -1).await.unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].state, TaskState::Failed);
    assert_eq!(
        s.get_run("d", "r1").await.unwrap().unwrap().state,
        RunState::Queued
    );
    assert!(matches!(
        s.clear_task_instances("d", "nope", &[a.id]).await,
        Err(Error::NotFound(_))
    ));
}

/// Pages are fetched with one row more than asked, and the total is counted only when that
/// row does not settle it: every edge must still report the true total.
pub async fn page_totals_at_the_edges(h: &Harness) {
    use updraft_store::{DagFilter, RunQuery, TaskInstanceFilter};
    let s = h.migrated().await.as_ref();
    let tasks = ["t1", "t2", "t3", "t4", "t5"];
    for id in ["d1", "d2", "d3", "d4", "d5"] {
        s.upsert_dag(&dag(id, &tasks), false).await.unwrap();
    }
    for (i, run_id) in ["r1", "r2", "r3", "r4", "r5"].iter().enumerate() {
        s.create_run(new_run("d1", run_id, Some(t(i as i64 * 10)), &tasks))
            .await
            .unwrap();
    }
    // (limit, offset) -> rows on the page; the total is always 5.
    let cases: [(Option<i64>, i64, usize); 11] = [
        (Some(10), 0, 5), // short first page
        (Some(5), 0, 5),  // page exactly as long as the limit
        (Some(4), 0, 4),  // one row left over
        (Some(2), 2, 2),  // offset inside
        (Some(2), 4, 1),  // short last page
        (Some(3), 3, 2),  // short page ending exactly at the end
        (Some(3), 5, 0),  // offset at the end
        (Some(3), 9, 0),  // offset past the end
        (Some(0), 0, 0),  // empty limit
        (Some(0), 2, 0),  // empty limit, offset inside
        (Some(1), 4, 1),  // last row alone
    ];
    for (limit, offset, rows) in cases {
        let dags = s
            .list_dags_page(&DagFilter {
                limit: limit.unwrap(),
                offset,
                ..DagFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (dags.dags.len(), dags.total),
            (rows, 5),
            "dags {limit:?}/{offset}"
        );
        let runs = s
            .query_runs(&RunQuery {
                limit,
                offset: Some(offset),
                ..RunQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (runs.items.len(), runs.total),
            (rows, 5),
            "runs {limit:?}/{offset}"
        );
        let tis = s
            .query_task_instances(&TaskInstanceFilter {
                dag_ids: vec!["d1".into()],
                run_ids: vec!["r3".into()],
                limit,
                offset: Some(offset),
                ..TaskInstanceFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            (tis.items.len(), tis.total),
            (rows, 5),
            "task instances {limit:?}/{offset}"
        );
    }
    // No limit: every row from the offset, the total still true past the end.
    for (offset, rows) in [(0, 5), (3, 2), (5, 0), (7, 0)] {
        let runs = s
            .query_runs(&RunQuery {
                offset: Some(offset),
                ..RunQuery::default()
            })
            .await
            .unwrap();
        assert_eq!((runs.items.len(), runs.total), (rows, 5), "runs -/{offset}");
        let tis = s
            .query_task_instances(&TaskInstanceFilter {
                run_ids: vec!["r3".into()],
                offset: Some(offset),
                ..TaskInstanceFilter::default()
            })
            .await
            .unwrap();
        assert_eq!((tis.items.len(), tis.total), (rows, 5), "tis -/{offset}");
    }
    // The page keeps its order when the extra row is cut off.
    let runs = s
        .query_runs(&RunQuery {
            limit: Some(2),
            offset: Some(1),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = runs.items.iter().map(|r| r.run.run_id.as_str()).collect();
    assert_eq!(ids, ["r2", "r3"]);
    // Nothing matches: zero, whatever the offset.
    for offset in [0, 3] {
        let none = s
            .list_dags_page(&DagFilter {
                dag_ids: vec!["nope".into()],
                limit: 10,
                offset,
                ..DagFilter::default()
            })
            .await
            .unwrap();
        assert_eq!((none.dags.len(), none.total), (0, 0));
        let none = s
            .query_runs(&RunQuery {
                dag_ids: vec!["nope".into()],
                limit: Some(10),
                offset: Some(offset),
                ..RunQuery::default()
            })
            .await
            .unwrap();
        assert_eq!((none.items.len(), none.total), (0, 0));
    }
}

pub async fn recent_runs_and_task_state_counts(h: &Harness) {
    let s = h.migrated().await.as_ref();
    for id in ["alpha", "beta", "gamma"] {
        s.upsert_dag(&dag(id, &["a", "b"]), false).await.unwrap();
    }
    for (dag_id, run_id, secs) in [
        ("alpha", "r1", 0),
        ("alpha", "r2", 10),
        ("alpha", "r3", 20),
        ("beta", "r1", 5),
    ] {
        s.create_run(new_run(dag_id, run_id, Some(t(secs)), &["a", "b"]))
            .await
            .unwrap();
    }
    let recent = s
        .recent_runs(&["alpha".into(), "beta".into(), "gamma".into()], 2)
        .await
        .unwrap();
    let ids: Vec<(String, String)> = recent
        .iter()
        .map(|r| (r.dag_id.clone(), r.run_id.clone()))
        .collect();
    assert_eq!(
        ids,
        [
            ("alpha".to_string(), "r3".to_string()),
            ("alpha".to_string(), "r2".to_string()),
            ("beta".to_string(), "r1".to_string()),
        ]
    );
    assert!(s.recent_runs(&[], 2).await.unwrap().is_empty());
    assert!(
        s.recent_runs(&["alpha".into()], 0)
            .await
            .unwrap()
            .is_empty()
    );

    s.set_task_state("alpha", "r3", "a", -1, TaskState::Success)
        .await
        .unwrap();
    let r3 = recent[0].id;
    let beta = recent[2].id;
    let counts: Vec<(i64, TaskState, i64)> = s
        .task_state_counts(&[r3, beta])
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.run_pk, c.state, c.count))
        .collect();
    let mut expected = vec![
        (r3, TaskState::None, 1),
        (r3, TaskState::Success, 1),
        (beta, TaskState::None, 2),
    ];
    expected.sort_by_key(|(pk, state, _)| (*pk, state.as_str()));
    let mut got = counts.clone();
    got.sort_by_key(|(pk, state, _)| (*pk, state.as_str()));
    assert_eq!(got, expected);
    assert!(s.task_state_counts(&[]).await.unwrap().is_empty());
}

pub async fn task_cells_of_many_runs(h: &Harness) {
    let s = h.migrated().await.as_ref();
    s.upsert_dag(&dag("alpha", &["a", "b"]), false)
        .await
        .unwrap();
    let r1 = s
        .create_run(new_run("alpha", "r1", Some(t(0)), &["b", "a"]))
        .await
        .unwrap();
    let r2 = s
        .create_run(new_run("alpha", "r2", Some(t(10)), &["a", "b"]))
        .await
        .unwrap();
    s.create_run(new_run("alpha", "other", Some(t(20)), &["a"]))
        .await
        .unwrap();
    let mut ti = s
        .get_task_instance("alpha", "r2", "b", -1)
        .await
        .unwrap()
        .unwrap();
    ti.state = TaskState::Success;
    ti.try_number = 2;
    ti.start_date = Some(t(11));
    ti.end_date = Some(t(14));
    ti.duration = Some(3.25);
    s.apply(&Batch {
        task_instances: vec![ti],
        ..Batch::default()
    })
    .await
    .unwrap();
    let cells: Vec<(i64, String, i32, TaskState, u32, Option<f64>)> = s
        .task_cells(&[r2.id, r1.id])
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.run_pk,
                c.task_id,
                c.map_index,
                c.state,
                c.try_number,
                c.duration,
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            (r1.id, "a".into(), -1, TaskState::None, 0, None),
            (r1.id, "b".into(), -1, TaskState::None, 0, None),
            (r2.id, "a".into(), -1, TaskState::None, 0, None),
            (r2.id, "b".into(), -1, TaskState::Success, 2, Some(3.25)),
        ]
    );
    assert!(s.task_cells(&[]).await.unwrap().is_empty());
}

pub async fn revoked_sessions_expire(h: &Harness) {
    let s = h.migrated().await.as_ref();
    let later = Utc::now() + chrono::Duration::hours(1);
    assert!(!s.is_session_revoked("sid-1").await.unwrap());
    s.revoke_session("sid-1", later).await.unwrap();
    // Revoking twice is harmless.
    s.revoke_session("sid-1", later).await.unwrap();
    assert!(s.is_session_revoked("sid-1").await.unwrap());
    assert!(!s.is_session_revoked("sid-2").await.unwrap());
    // A revocation past its token's expiry no longer matters, and is cleaned up.
    let past = Utc::now() - chrono::Duration::seconds(5);
    s.revoke_session("sid-old", past).await.unwrap();
    assert!(!s.is_session_revoked("sid-old").await.unwrap());
    s.revoke_session("sid-3", later).await.unwrap();
    assert!(s.is_session_revoked("sid-3").await.unwrap());
    assert!(s.is_session_revoked("sid-1").await.unwrap());
}
