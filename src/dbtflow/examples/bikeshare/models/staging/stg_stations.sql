select
    cast(station_id as integer) as station_id,
    trim(station_name) as station_name,
    city,
    cast(capacity as integer) as capacity,
    cast(opened_on as date) as opened_on
from {{ ref('raw_stations') }}
