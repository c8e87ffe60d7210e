//! The store conformance suite, instantiated for every backend.

mod suite;

use suite::harness::Harness;

store_test_suite!(sqlite, Harness::sqlite());
store_test_suite!(postgres, Harness::postgres());
store_test_suite!(postgres_only, Harness::postgres(); inbox_waker_listens);

// `sqlite::memory:` is one connection: everything but what needs a second process.
store_test_suite!(sqlite_memory, Harness::sqlite_memory();
    upsert_dag_versions_and_flags,
    create_run_and_conflicts,
    list_runs_filters_and_order,
    apply_bumps_versions,
    apply_is_all_or_nothing_on_stale_rows,
    apply_history_rendered_and_xcom,
    clear_tasks_resets_and_archives,
    set_task_state_checks_transitions,
    pools,
    inbox_post_read_trim,
    leases,
    users,
    connections,
    audit_log,
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
);

// Through PgBouncer in transaction pooling mode (when UPDRAFT_TEST_PGBOUNCER_URL is set):
// migrations, run creation, the batch write path, the inbox, clears, users, connections and
// the audit log.
store_test_suite!(pgbouncer, Harness::pgbouncer();
    migrate_check_reset,
    create_run_and_conflicts,
    list_runs_filters_and_order,
    apply_bumps_versions,
    apply_is_all_or_nothing_on_stale_rows,
    apply_history_rendered_and_xcom,
    apply_expands_a_mapped_task,
    heartbeat_survives_scheduler_write,
    clear_tasks_resets_and_archives,
    set_task_state_checks_transitions,
    inbox_post_read_trim,
    inbox_waker_wakes_for_other_connection,
    leases,
    large_run,
    users,
    connections,
    audit_log,
    upgrade_from_migration_1,
    dag_pages_filter_order_and_count,
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
    task_cells_of_many_runs,
    task_try_start_heartbeat_and_report,
    task_report_survives_a_stale_apply,
    rendered_fields_set_by_a_worker,
);
