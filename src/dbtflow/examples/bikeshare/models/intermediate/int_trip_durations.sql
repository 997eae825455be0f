-- Ephemeral: inlined into every model that uses it.
select
    trip_id,
    bike_id,
    start_station_id,
    end_station_id,
    started_at,
    ended_at,
    rider_type,
    {{ dbt.datediff('started_at', 'ended_at', 'minute') }} as duration_minutes
from {{ ref('stg_trips') }}
