select
    s.station_id,
    s.station_name,
    s.city,
    s.capacity,
    s.opened_on
from {{ ref('stg_stations') }} as s
