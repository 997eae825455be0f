{#-
    A microbatch model: dbt builds it a day at a time, reading only that day's rows of stg_trips
    (whose `event_time` is started_at). Under Airflow, dbtflow passes each DAG run's data
    interval as --event-time-start / --event-time-end, so a daily run builds its own day.
    `begin` is where a run without an interval starts on an empty warehouse: today (UTC, when the
    project was parsed), so that such a run builds one batch, not every day since 2024.
    `unique_key`: dbt-postgres's microbatch (a merge) requires one; dbt-duckdb's refuses one.
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='microbatch',
        unique_key=('trip_id' if target.type == 'postgres' else none),
        event_time='started_at',
        batch_size='day',
        begin=modules.datetime.datetime.utcnow().strftime('%Y-%m-%d'),
        lookback=1,
    )
}}

select
    trip_id,
    bike_id,
    start_station_id,
    started_at,
    rider_type
from {{ ref('stg_trips') }}
