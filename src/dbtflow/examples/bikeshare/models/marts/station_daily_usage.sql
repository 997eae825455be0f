select
    f.start_station_id as station_id,
    d.station_name,
    cast(f.started_at as date) as trip_date,
    count(*) as trips_started,
    round(cast(avg(f.duration_minutes) as numeric), 1) as avg_duration_minutes
from {{ ref('fct_trips') }} as f
join {{ ref('dim_stations') }} as d on d.station_id = f.start_station_id
group by 1, 2, 3
