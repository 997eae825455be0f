-- Singular test: a trip cannot end before it starts.
select trip_id, duration_minutes
from {{ ref('fct_trips') }}
where duration_minutes < 0
