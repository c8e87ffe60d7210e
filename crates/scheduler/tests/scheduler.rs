//! The scheduler end to end, in-process: real YAML DAGs, a real store (SQLite and PostgreSQL,
//! same scenarios), the real local executor running bash. Each scenario is written once and
//! instantiated per backend.

#[path = "scheduler/scenarios.rs"]
mod scenarios;

macro_rules! scheduler_suite {
    ($backend:ident) => {
        #[allow(non_snake_case)]
        mod $backend {
            use super::scenarios;
            use updraft_store::testing::Backend;

            scheduler_suite!(@tests Backend::$backend;
                chain_with_templating_and_xcom,
                retries_until_success_and_history,
                execution_timeout_kills_the_process_group,
                trigger_rules_and_skip_exit_code,
                pool_with_one_slot_serializes_tasks,
                depends_on_past_across_runs,
                dagrun_timeout_fails_the_run,
                conf_overrides_params_and_bad_params_fail_the_task,
                task_marked_failed_from_outside_is_killed,
                interval_schedule_creates_runs,
                cleared_task_runs_again,
                run_keeps_its_dag_version,
            );
        }
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                scenarios::$name($backend).await;
            }
        )*
    };
}

scheduler_suite!(Sqlite);
scheduler_suite!(Postgres);

/// Through PgBouncer in transaction mode: a representative scenario, and a database outage.
mod pgbouncer {
    use super::scenarios;
    use updraft_store::testing::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chain_with_templating_and_xcom() {
        scenarios::chain_with_templating_and_xcom(Backend::PgBouncer).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn database_outage_loses_nothing() {
        scenarios::database_outage_loses_nothing(Backend::PgBouncer).await;
    }
}

#[path = "scheduler/task_reports.rs"]
mod task_reports;

/// Reports of the Task Execution API, on every backend.
mod reports {
    use super::task_reports;
    use updraft_store::testing::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_sent_while_no_scheduler_runs_is_applied_once_on_start_sqlite() {
        task_reports::a_report_sent_while_no_scheduler_runs_is_applied_once_on_start(
            Backend::Sqlite,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_sent_while_no_scheduler_runs_is_applied_once_on_start_postgres() {
        task_reports::a_report_sent_while_no_scheduler_runs_is_applied_once_on_start(
            Backend::Postgres,
        )
        .await;
    }
}

#[path = "scheduler/mapping.rs"]
mod mapping;

/// Dynamic task mapping through the loop and the store, on every backend.
mod mapped {
    use super::mapping;
    use updraft_store::testing::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mapped_tasks_expand_from_upstream_xcoms_sqlite() {
        mapping::mapped_tasks_expand_from_upstream_xcoms(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mapped_tasks_expand_from_upstream_xcoms_postgres() {
        mapping::mapped_tasks_expand_from_upstream_xcoms(Backend::Postgres).await;
    }
}
