select
    b.bike_id,
    b.bike_model,
    count(t.trip_id) as trips,
    coalesce(sum(t.duration_minutes), 0) as minutes_ridden
from {{ ref('stg_bikes') }} as b
left join {{ ref('int_trip_durations') }} as t on t.bike_id = b.bike_id
group by 1, 2
