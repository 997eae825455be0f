select
    cast(trip_id as integer) as trip_id,
    cast(bike_id as integer) as bike_id,
    cast(start_station_id as integer) as start_station_id,
    cast(end_station_id as integer) as end_station_id,
    cast(started_at as timestamp) as started_at,
    cast(ended_at as timestamp) as ended_at,
    rider_type
from {{ ref('raw_trips') }}
