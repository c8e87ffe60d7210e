//! The Task Execution API's store methods: starting a try, heartbeats, end reports kept for the
//! scheduler and consumed by `apply`, rendered fields written by a worker.

use super::{by_task, t, with_run};
use crate::suite::harness::Harness;
use updraft_core::TaskState;
use updraft_store::{
    Batch, Error, InboxKind, RenderedFields, Store, TaskInstance, TaskReport, TryCheck, TryStart,
    TryStarted,
};
use uuid::Uuid;

/// Moves `a` of the run to `queued` for try 1, as a scheduler step does.
async fn queue_a(s: &dyn Store, tis: &[TaskInstance]) -> TaskInstance {
    let mut a = by_task(tis, "a").clone();
    a.state = TaskState::Queued;
    a.try_number = 1;
    a.queued_dttm = Some(t(1));
    s.apply(&Batch {
        task_instances: vec![a.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    a.version += 1;
    a
}

fn start(ti: &TaskInstance, try_number: u32, pid: i32) -> TryStart {
    TryStart {
        ti_id: ti.id,
        try_number,
        hostname: "worker-1".into(),
        pid,
        at: t(10),
    }
}

fn report(ti: &TaskInstance, try_number: u32, state: TaskState) -> TaskReport {
    TaskReport {
        ti_id: ti.id,
        try_number,
        run_pk: 0,
        state,
        at: t(20),
        reschedule_date: None,
    }
}

pub async fn task_try_start_heartbeat_and_report(h: &Harness) {
    let (s, run, tis) = with_run(h).await;
    let a = queue_a(s, &tis).await;
    let unknown = Uuid::now_v7();
    assert_eq!(s.get_task_instance_by_id(unknown).await.unwrap(), None);
    assert_eq!(
        s.get_task_instance_by_id(a.id).await.unwrap(),
        Some(a.clone())
    );
    let for_unknown = TryStart {
        ti_id: unknown,
        ..start(&a, 1, 7)
    };
    assert_eq!(s.start_task_try(&for_unknown).await.unwrap(), None);

    // another try cannot start, and changes nothing
    match s.start_task_try(&start(&a, 2, 7)).await.unwrap() {
        Some(TryStarted::NotRunnable(row)) => assert_eq!(row, a),
        other => panic!("unexpected {other:?}"),
    }
    let inbox_before = s.max_inbox_id().await.unwrap();
    let running = match s.start_task_try(&start(&a, 1, 7)).await.unwrap() {
        Some(TryStarted::Started(row)) => row,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(running.start_date, Some(t(10)));
    assert_eq!(running.last_heartbeat_at, Some(t(10)));
    assert_eq!(running.hostname.as_deref(), Some("worker-1"));
    assert_eq!(running.pid, Some(7));
    assert_eq!(running.version, a.version + 1);
    assert_eq!(
        s.get_task_instance_by_id(a.id).await.unwrap(),
        Some(running.clone())
    );
    let items = s.read_inbox(inbox_before, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].kind, InboxKind::RunChanged);
    assert_eq!(items[0].run_pk, Some(run.id));
    // the same worker asking again is answered, another one is refused
    assert_eq!(
        s.start_task_try(&start(&a, 1, 7)).await.unwrap(),
        Some(TryStarted::AlreadyRunning(running.clone()))
    );
    assert!(matches!(
        s.start_task_try(&start(&a, 1, 8)).await.unwrap(),
        Some(TryStarted::NotRunnable(_))
    ));
    // the scheduler's cached row is stale now: its write is refused
    let stale = s
        .apply(&Batch {
            task_instances: vec![a.clone()],
            ..Default::default()
        })
        .await;
    assert!(matches!(stale, Err(Error::Stale(ref pks)) if pks == &[run.id]));

    // heartbeats
    assert_eq!(s.heartbeat_task_try(unknown, 1, t(30)).await.unwrap(), None);
    assert_eq!(
        s.heartbeat_task_try(a.id, 1, t(30)).await.unwrap(),
        Some(TryCheck::Done)
    );
    let row = s.get_task_instance_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(row.last_heartbeat_at, Some(t(30)));
    assert_eq!(
        row.version, running.version,
        "a heartbeat does not bump the version"
    );
    assert!(matches!(
        s.heartbeat_task_try(a.id, 2, t(31)).await.unwrap(),
        Some(TryCheck::NotRunning { reported: None, .. })
    ));

    // reports: only end states, once per try, only while the try runs
    assert!(matches!(
        s.report_task_try(&report(&a, 1, TaskState::Running)).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        s.report_task_try(&TaskReport {
            ti_id: unknown,
            ..report(&a, 1, TaskState::Success)
        })
        .await
        .unwrap(),
        None
    );
    assert!(matches!(
        s.report_task_try(&report(&a, 2, TaskState::Success))
            .await
            .unwrap(),
        Some(TryCheck::NotRunning { reported: None, .. })
    ));
    assert_eq!(s.task_reports_of_runs(&[run.id]).await.unwrap(), vec![]);
    let inbox_before = s.max_inbox_id().await.unwrap();
    assert_eq!(
        s.report_task_try(&report(&a, 1, TaskState::Success))
            .await
            .unwrap(),
        Some(TryCheck::Done)
    );
    assert_eq!(s.read_inbox(inbox_before, 10).await.unwrap().len(), 1);
    assert_eq!(
        s.report_task_try(&report(&a, 1, TaskState::Success))
            .await
            .unwrap(),
        Some(TryCheck::Duplicate)
    );
    assert!(matches!(
        s.report_task_try(&report(&a, 1, TaskState::Failed))
            .await
            .unwrap(),
        Some(TryCheck::NotRunning {
            reported: Some(TaskState::Success),
            ..
        })
    ));
    // once reported, the try no longer heartbeats, and the row itself is untouched
    assert!(matches!(
        s.heartbeat_task_try(a.id, 1, t(40)).await.unwrap(),
        Some(TryCheck::NotRunning {
            reported: Some(TaskState::Success),
            ..
        })
    ));
    let row = s.get_task_instance_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(row.state, TaskState::Running);

    let pending = s.task_reports_of_runs(&[run.id]).await.unwrap();
    assert_eq!(
        pending,
        vec![TaskReport {
            run_pk: run.id,
            ..report(&a, 1, TaskState::Success)
        }]
    );
    assert_eq!(
        s.task_reports_of_runs(&[run.id + 1000]).await.unwrap(),
        vec![]
    );
    assert_eq!(s.task_reports_of_runs(&[]).await.unwrap(), vec![]);

    // the scheduler applies it: the state change and the report's removal in one transaction
    let mut done = row.clone();
    done.state = TaskState::Success;
    done.end_date = Some(t(20));
    s.apply(&Batch {
        task_instances: vec![done],
        consumed_reports: vec![(a.id, 1)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.task_reports_of_runs(&[run.id]).await.unwrap(), vec![]);
    let row = s.get_task_instance_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(row.state, TaskState::Success);
    assert!(matches!(
        s.report_task_try(&report(&a, 1, TaskState::Failed))
            .await
            .unwrap(),
        Some(TryCheck::NotRunning { reported: None, .. })
    ));
}

pub async fn task_report_survives_a_stale_apply(h: &Harness) {
    let (s, run, tis) = with_run(h).await;
    let a = queue_a(s, &tis).await;
    let Some(TryStarted::Started(running)) = s.start_task_try(&start(&a, 1, 7)).await.unwrap()
    else {
        panic!("not started")
    };
    let mut reschedule = report(&a, 1, TaskState::UpForReschedule);
    reschedule.reschedule_date = Some(t(60));
    assert_eq!(
        s.report_task_try(&reschedule).await.unwrap(),
        Some(TryCheck::Done)
    );
    // a batch refused as stale deletes nothing
    let refused = s
        .apply(&Batch {
            task_instances: vec![a.clone()],
            consumed_reports: vec![(a.id, 1)],
            ..Default::default()
        })
        .await;
    assert!(matches!(refused, Err(Error::Stale(_))));
    let pending = s.task_reports_of_runs(&[run.id]).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].reschedule_date, Some(t(60)));
    assert_eq!(pending[0].state, TaskState::UpForReschedule);
    // a batch of only consumed reports is not empty
    s.apply(&Batch {
        consumed_reports: vec![(running.id, 1)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.task_reports_of_runs(&[run.id]).await.unwrap(), vec![]);
}

pub async fn rendered_fields_set_by_a_worker(h: &Harness) {
    let (s, _run, tis) = with_run(h).await;
    let a = by_task(&tis, "a");
    let fields = |v: &str| RenderedFields {
        ti_id: a.id,
        try_number: 1,
        fields: serde_json::json!({"bash_command": v}),
    };
    s.set_rendered_fields(&fields("echo 1")).await.unwrap();
    assert_eq!(
        s.get_rendered_fields(a.id, 1).await.unwrap(),
        Some(serde_json::json!({"bash_command": "echo 1"}))
    );
    s.set_rendered_fields(&fields("echo 2")).await.unwrap();
    assert_eq!(
        s.get_rendered_fields(a.id, 1).await.unwrap(),
        Some(serde_json::json!({"bash_command": "echo 2"}))
    );
    assert_eq!(s.get_rendered_fields(a.id, 2).await.unwrap(), None);
}
