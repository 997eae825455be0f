select
    cast(bike_id as integer) as bike_id,
    lower(bike_model) as bike_model,
    cast(purchased_on as date) as purchased_on
from {{ ref('raw_bikes') }}
