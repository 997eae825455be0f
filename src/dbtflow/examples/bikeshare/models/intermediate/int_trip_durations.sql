-- Ephemeral: inlined into every model that uses it.
select
    trip_id,
    bike_id,
    start_station_id,
    end_station_id,
    started_at,
    ended_at,
    rider_type,
    date_diff('minute', started_at, ended_at) as duration_minutes
from {{ ref('stg_trips') }}
