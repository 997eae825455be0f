{{ config(materialized='incremental', unique_key='trip_id') }}

select
    t.trip_id,
    t.bike_id,
    t.start_station_id,
    t.end_station_id,
    t.started_at,
    t.ended_at,
    t.rider_type,
    t.duration_minutes
from {{ ref('int_trip_durations') }} as t
{% if is_incremental() %}
where t.started_at > (select coalesce(max(started_at), timestamp '1900-01-01') from {{ this }})
{% endif %}
